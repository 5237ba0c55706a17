namespace NativeMmu.Fuzz;

/// <summary>xoshiro256** seeded through SplitMix64: small, fast and the same on every runtime.</summary>
internal struct FuzzRandom : IEncodingChoices
{
    private ulong _s0, _s1, _s2, _s3;

    public FuzzRandom(ulong seed)
    {
        _s0 = SplitMix(ref seed);
        _s1 = SplitMix(ref seed);
        _s2 = SplitMix(ref seed);
        _s3 = SplitMix(ref seed);
    }

    /// <summary>SplitMix64 step, also used to derive per-thread seeds.</summary>
    public static ulong SplitMix(ref ulong state)
    {
        ulong z = state += 0x9E3779B97F4A7C15;
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB;
        return z ^ (z >> 31);
    }

    public ulong NextUInt64()
    {
        ulong result = ulong.RotateLeft(_s1 * 5, 7) * 9;
        ulong t = _s1 << 17;
        _s2 ^= _s0;
        _s3 ^= _s1;
        _s1 ^= _s2;
        _s0 ^= _s3;
        _s2 ^= t;
        _s3 = ulong.RotateLeft(_s3, 45);
        return result;
    }

    /// <summary>Uniform in [0, n).</summary>
    public int Next(int n) => (int)(((NextUInt64() >> 32) * (ulong)n) >> 32);

    /// <summary>True with probability 1/n.</summary>
    public bool OneIn(int n) => Next(n) == 0;

    /// <summary>A single random bit.</summary>
    public ulong Bit() => 1UL << Next(64);

    public readonly bool Exhausted => false;
}
