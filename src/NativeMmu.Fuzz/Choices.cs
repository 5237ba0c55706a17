using System.Buffers.Binary;

namespace NativeMmu.Fuzz;

/// <summary>
/// Where the program generator's choices come from: a seeded generator (<see cref="SplitMix64"/>), the
/// bytes of a fuzzer's input (<see cref="ByteChoices"/>) or a generator whose choices are recorded as
/// bytes (<see cref="ProgramChoiceRecorder"/>). Implemented by structs and used as a generic argument,
/// so the calls are direct.
/// </summary>
internal interface IProgramChoices
{
    ulong Next();
    int Below(int n);
    ulong Below(ulong n);
    int Range(int lo, int hi);
    bool Chance(int percent);
    T Pick<T>(IReadOnlyList<T> items);
    /// <summary>True once a byte source has no bytes left (the generator then ends the program).</summary>
    bool Exhausted { get; }
}

/// <summary>The encoding generator's choices, as <see cref="FuzzRandom"/> offers them.</summary>
internal interface IEncodingChoices
{
    ulong NextUInt64();
    int Next(int n);
    bool OneIn(int n);
    ulong Bit();
    bool Exhausted { get; }
}

/// <summary>
/// Choices read from bytes, so that every byte string is a valid input. A choice among n values reads
/// as many little-endian bytes as n needs (none for n = 1, one up to 256, two up to 65536, four up to
/// 2^32, else eight) and takes the value modulo n; a raw 64-bit draw reads eight. Past the end every
/// byte reads as 0. <see cref="Write"/> is the inverse: a value below n, written this way, reads back
/// as itself, which is how the recorders turn a generator's run into an input.
/// </summary>
internal struct ByteChoices(byte[] data, int length) : IProgramChoices, IEncodingChoices
{
    private readonly byte[] _data = data;
    private readonly int _length = length;
    private int _pos;

    public readonly bool Exhausted => _pos >= _length;

    /// <summary>Bytes a choice among n values takes.</summary>
    public static int Width(ulong n) => n <= 1 ? 0 : n <= 0x100 ? 1 : n <= 0x1_0000 ? 2 : n <= 0x1_0000_0000 ? 4 : 8;

    private ulong Read(int width)
    {
        ulong v = 0;
        for (int i = 0; i < width; i++)
        {
            ulong b = _pos < _length ? _data[_pos] : 0UL;
            _pos++;
            v |= b << (8 * i);
        }
        return v;
    }

    public ulong Next() => Read(8);
    public ulong NextUInt64() => Read(8);
    public ulong Below(ulong n) => n <= 1 ? 0 : Read(Width(n)) % n;
    public int Below(int n) => (int)Below((ulong)n);
    public int Next(int n) => (int)Below((ulong)n);
    public int Range(int lo, int hi) => lo + Below(hi - lo + 1);
    public bool Chance(int percent) => Below(100) < percent;
    public T Pick<T>(IReadOnlyList<T> items) => items[Below(items.Count)];
    public bool OneIn(int n) => Below(n) == 0;
    public ulong Bit() => 1UL << Below(64);

    /// <summary>Appends value (below n) as <see cref="Below(ulong)"/> reads it back.</summary>
    public static void Write(List<byte> to, ulong value, ulong n)
    {
        Span<byte> b = stackalloc byte[8];
        BinaryPrimitives.WriteUInt64LittleEndian(b, value);
        int w = Width(n);
        for (int i = 0; i < w; i++) to.Add(b[i]);
    }

    public static void WriteRaw(List<byte> to, ulong value) => Write(to, value, ulong.MaxValue);
}

/// <summary>A <see cref="SplitMix64"/> whose every choice is also written as bytes <see cref="ByteChoices"/> reads back.</summary>
internal struct ProgramChoiceRecorder(ulong seed, List<byte> output) : IProgramChoices
{
    private SplitMix64 _rng = new(seed);
    private readonly List<byte> _out = output;

    public readonly bool Exhausted => false;

    public ulong Next()
    {
        ulong v = _rng.Next();
        ByteChoices.WriteRaw(_out, v);
        return v;
    }

    public ulong Below(ulong n)
    {
        ulong v = _rng.Below(n);
        ByteChoices.Write(_out, v, n);
        return v;
    }

    // Range, Chance and Pick are Below underneath in SplitMix64 too, so the recorded run draws the same numbers.
    public int Below(int n) => (int)Below((ulong)n);
    public int Range(int lo, int hi) => lo + Below(hi - lo + 1);
    public bool Chance(int percent) => Below(100) < percent;
    public T Pick<T>(IReadOnlyList<T> items) => items[Below(items.Count)];
}

/// <summary>A <see cref="FuzzRandom"/> whose every choice is also written as bytes <see cref="ByteChoices"/> reads back.</summary>
internal struct EncodingChoiceRecorder(ulong seed, List<byte> output) : IEncodingChoices
{
    private FuzzRandom _rng = new(seed);
    private readonly List<byte> _out = output;

    public readonly bool Exhausted => false;

    public ulong NextUInt64()
    {
        ulong v = _rng.NextUInt64();
        ByteChoices.WriteRaw(_out, v);
        return v;
    }

    public int Next(int n)
    {
        int v = _rng.Next(n);
        ByteChoices.Write(_out, (ulong)v, (ulong)n);
        return v;
    }

    // FuzzRandom's OneIn and Bit are Next underneath.
    public bool OneIn(int n) => Next(n) == 0;
    public ulong Bit() => 1UL << Next(64);
}
