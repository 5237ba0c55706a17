namespace NativeMmu.Fuzz;

/// <summary>
/// What a byte-driven fuzz target throws when the two sides differ: a coverage-guided fuzzer (AFL++
/// through SharpFuzz) sees an uncaught exception as a crash. The message holds the replayable case.
/// </summary>
public sealed class FuzzDifferenceException(string message) : Exception(message);

/// <summary>Reads a whole input into a reusable buffer (the targets keep one each).</summary>
internal struct InputBuffer()
{
    /// <summary>Inputs are cut here: no decoder reads this far (a program stops at 200 operations).</summary>
    public const int MaxInput = 64 * 1024;

    public byte[] Data = new byte[4096];
    public int Length;

    public void Load(ReadOnlySpan<byte> input)
    {
        input = input[..Math.Min(input.Length, MaxInput)];
        if (Data.Length < input.Length) Data = new byte[Math.Max(input.Length, 2 * Data.Length)];
        input.CopyTo(Data);
        Length = input.Length;
    }

    public void Load(Stream input)
    {
        Length = 0;
        while (true)
        {
            if (Length == Data.Length)
            {
                if (Data.Length >= MaxInput)
                {
                    Span<byte> sink = stackalloc byte[512];
                    while (input.Read(sink) > 0) { }
                    return;
                }
                Array.Resize(ref Data, Math.Min(2 * Data.Length, MaxInput));
            }
            int n = input.Read(Data, Length, Data.Length - Length);
            if (n <= 0) return;
            Length += n;
        }
    }
}

/// <summary>
/// The encodings as a byte-driven target: the bytes choose a level, a 64-bit start value and up to 16
/// helper applications exactly as the random encoding fuzzer's generator does (the bytes are its
/// choices, see <see cref="ByteChoices"/>), and the case runs through NativeMmu.Arch.X86 and the
/// oracle, comparing every observable after every step. Deterministic; allocates nothing unless the
/// sides differ.
/// </summary>
public sealed class EncodingBytesTarget
{
    private readonly EncodingFuzzer _fuzzer;
    private readonly FuzzStep[] _steps = new FuzzStep[EncodingFuzzer.MaxSequenceLength];
    private InputBuffer _input = new();

    public EncodingBytesTarget() : this(new EncodingFuzzer()) { }

    /// <summary>A target over another fuzzer (tests plant a broken subject).</summary>
    internal EncodingBytesTarget(EncodingFuzzer fuzzer) => _fuzzer = fuzzer;

    /// <summary>Runs one input; throws <see cref="FuzzDifferenceException"/> on a difference.</summary>
    public void Run(Stream input)
    {
        _input.Load(input);
        RunLoaded();
    }

    /// <inheritdoc cref="Run(Stream)"/>
    public void Run(ReadOnlySpan<byte> input)
    {
        _input.Load(input);
        RunLoaded();
    }

    private void RunLoaded()
    {
        var c = new ByteChoices(_input.Data, _input.Length);
        int n = EncodingFuzzer.GenerateCase(ref c, EncodingFuzzer.AllLevels, out FuzzLevel level, out ulong start, _steps);
        if (!_fuzzer.Differs(level, start, _steps.AsSpan(0, n))) return;
        EncodingFailure f = _fuzzer.Check(level, start, _steps.AsSpan(0, n), shrink: false, origin: "a fuzzer's input")!;
        throw new FuzzDifferenceException(f.Detail + "\n" + f.Case);
    }

    /// <summary>The case an input stands for.</summary>
    public static EncodingCase Decode(ReadOnlySpan<byte> input)
    {
        byte[] data = input.ToArray();
        var c = new ByteChoices(data, data.Length);
        var steps = new FuzzStep[EncodingFuzzer.MaxSequenceLength];
        int n = EncodingFuzzer.GenerateCase(ref c, EncodingFuzzer.AllLevels, out FuzzLevel level, out ulong start, steps);
        return new EncodingCase(level, start, steps[..n]);
    }

    /// <summary>The difference an input shows, shrunk when asked (its <see cref="EncodingFailure.Case"/> replays); null if none.</summary>
    public EncodingFailure? Check(ReadOnlySpan<byte> input, bool shrink, string origin)
    {
        EncodingCase c = Decode(input);
        return _fuzzer.Check(c.Level, c.Start, c.Steps, shrink, origin);
    }

    /// <summary>
    /// Seed inputs: the random encoding fuzzer's first cases for a seed (its generator run with
    /// <see cref="FuzzRandom"/> seeded from <paramref name="seed"/> + i), recorded as the bytes
    /// <see cref="Decode"/> turns back into the same cases.
    /// </summary>
    public static IReadOnlyList<byte[]> Seeds(ulong seed, int count)
    {
        var seeds = new List<byte[]>(count);
        var steps = new FuzzStep[EncodingFuzzer.MaxSequenceLength];
        for (int i = 0; i < count; i++)
        {
            var bytes = new List<byte>(64);
            var rec = new EncodingChoiceRecorder(seed + (ulong)i, bytes);
            EncodingFuzzer.GenerateCase(ref rec, EncodingFuzzer.AllLevels, out _, out _, steps);
            seeds.Add([.. bytes]);
        }
        return seeds;
    }
}

/// <summary>
/// System-call programs as a byte-driven target: the bytes are the choices of the generator
/// <c>fuzz system</c> uses (<see cref="ByteChoices"/>), so every byte string is a valid program of at
/// most 200 operations over at most 16 processes, ending where the bytes do; the program runs on a
/// fresh emulated kernel and on the reference model side by side (<see cref="ProgramRunner"/>).
/// </summary>
public sealed class SystemBytesTarget
{
    private readonly SystemFuzzer _fuzzer;
    private InputBuffer _input = new();

    public SystemBytesTarget() : this(new SystemFuzzer()) { }

    /// <summary>A target over another fuzzer (tests plant a wrong model).</summary>
    internal SystemBytesTarget(SystemFuzzer fuzzer) => _fuzzer = fuzzer;

    /// <summary>How long shrinking one difference may take (<see cref="Check"/> with shrink).</summary>
    public TimeSpan ShrinkTime
    {
        get => _fuzzer.ShrinkTime;
        set => _fuzzer.ShrinkTime = value;
    }

    /// <summary>Runs one input; throws <see cref="FuzzDifferenceException"/> on a difference.</summary>
    public void Run(Stream input)
    {
        _input.Load(input);
        RunLoaded();
    }

    /// <inheritdoc cref="Run(Stream)"/>
    public void Run(ReadOnlySpan<byte> input)
    {
        _input.Load(input);
        RunLoaded();
    }

    private void RunLoaded()
    {
        SysProgram program = ProgramGenerator.Decode(_input.Data, _input.Length, _fuzzer.CanFork);
        if (_fuzzer.RunProgram(program).Failure is { } f)
            throw new FuzzDifferenceException(SystemFuzzer.Describe(f) + "\n" + program);
    }

    /// <summary>The program an input stands for.</summary>
    public SysProgram Decode(ReadOnlySpan<byte> input)
    {
        byte[] data = input.ToArray();
        return ProgramGenerator.Decode(data, data.Length, _fuzzer.CanFork);
    }

    /// <summary>The first difference a program shows, described as <c>fuzz system</c> does; null if none.</summary>
    public string? FirstDifference(SysProgram program)
        => _fuzzer.RunProgram(program).Failure is { } f ? SystemFuzzer.Describe(f) : null;

    /// <summary>
    /// The difference an input shows, with the program shrunk when asked, and a signature that is the
    /// same for two failures <c>fuzz system</c> would count as one; null if none.
    /// </summary>
    public SystemFailure? Check(ReadOnlySpan<byte> input, bool shrink, out string signature)
    {
        SysProgram program = Decode(input);
        signature = "";
        if (_fuzzer.RunProgram(program).Failure is not { } f) return null;
        if (!shrink)
        {
            signature = SystemFuzzer.Signature(f);
            return new SystemFailure(SystemFuzzer.Describe(f), program.ToString());
        }
        SystemFailure small = _fuzzer.ShrinkToFailure(program, f, out RunFailure final);
        signature = SystemFuzzer.Signature(final);
        return small;
    }

    /// <summary>
    /// The program session <paramref name="seed"/> of <c>fuzz system</c> runs as its
    /// <paramref name="index"/>-th, with its choices recorded as bytes that <see cref="Decode"/> turns
    /// back into the same program.
    /// </summary>
    public (SysProgram Program, byte[] Bytes) Record(ulong seed, ulong index)
        => ProgramGenerator.Record(SplitMix64.Mix(seed, index), _fuzzer.CanFork);

    /// <summary>Seed inputs: the first programs of session <paramref name="seed"/> with at most <paramref name="maxOps"/> operations, recorded.</summary>
    public IReadOnlyList<byte[]> Seeds(ulong seed, int count, int maxOps = 60)
    {
        var seeds = new List<byte[]>(count);
        for (ulong i = 0; seeds.Count < count; i++)
        {
            (SysProgram p, byte[] bytes) = Record(seed, i);
            if (p.Ops.Count <= maxOps) seeds.Add(bytes);
        }
        return seeds;
    }
}
