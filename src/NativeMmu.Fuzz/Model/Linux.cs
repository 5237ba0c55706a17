namespace NativeMmu.Fuzz.Model;

/// <summary>
/// The numbers of the Linux x86-64 user ABI the reference model speaks: errno values, mmap/mprotect
/// prot and flag bits, madvise advice values and the address-space limits of a 4-level task. The model
/// uses these plain integers rather than the emulator's types, so that it shares nothing with the code
/// it checks.
/// </summary>
public static class Linux
{
    public const ulong PageSize = 4096;
    public const ulong PageMask = ~(PageSize - 1);
    public const int PageShift = 12;
    /// <summary>PMD_SIZE: the THP alignment of anonymous mappings whose length is a multiple of it.</summary>
    public const ulong PmdSize = 2UL << 20;
    public const int PmdShift = 21;
    /// <summary>TASK_SIZE of a 4-level x86-64 task: (1 &lt;&lt; 47) - PAGE_SIZE.</summary>
    public const ulong TaskSize = (1UL << 47) - PageSize;
    /// <summary>The first non-canonical address: no access may reach it.</summary>
    public const ulong CanonicalEnd = 1UL << 47;
    /// <summary>vm.mmap_min_addr, the x86 default.</summary>
    public const ulong MmapMinAddr = 65536;

    public static ulong PageAlign(ulong x) => unchecked(x + PageSize - 1) & PageMask;
    public static bool PageAligned(ulong x) => (x & (PageSize - 1)) == 0;

    // errno (include/uapi/asm-generic/errno-base.h)
    public const int EPERM = 1;
    public const int ENOMEM = 12;
    public const int EACCES = 13;
    public const int EEXIST = 17;
    public const int EINVAL = 22;

    // prot (include/uapi/asm-generic/mman-common.h)
    public const int ProtNone = 0;
    public const int ProtRead = 0x1;
    public const int ProtWrite = 0x2;
    public const int ProtExec = 0x4;
    public const int ProtSem = 0x8;
    public const int ProtGrowsDown = 0x01000000;
    public const int ProtGrowsUp = 0x02000000;
    public const int ProtAccess = ProtRead | ProtWrite | ProtExec;

    // mmap flags (x86-64)
    public const int MapShared = 0x01;
    public const int MapPrivate = 0x02;
    public const int MapType = 0x0f;
    public const int MapFixed = 0x10;
    public const int MapAnonymous = 0x20;
    public const int MapGrowsDown = 0x0100;
    public const int MapDenyWrite = 0x0800;
    public const int MapExecutable = 0x1000;
    public const int MapLocked = 0x2000;
    public const int MapNoReserve = 0x4000;
    public const int MapPopulate = 0x8000;
    public const int MapNonBlock = 0x10000;
    public const int MapStack = 0x20000;
    public const int MapSync = 0x80000;
    public const int MapFixedNoReplace = 0x100000;
    /// <summary>MAP_HUGETLB, with the log2 of the huge page size at MAP_HUGE_SHIFT (26); 0 is the default 2 MiB.</summary>
    public const int MapHugeTlb = 0x40000;
    public const int MapHugeShift = 26;
    public const int MapHugeMask = 0x3f;

    /// <summary>prctl(PR_SET_COW_PTE), the COW PTE series' option (v3 on; include/uapi/linux/prctl.h of the series).</summary>
    public const int PrSetCowPte = 65;

    // madvise advice (include/uapi/asm-generic/mman-common.h)
    public const int MadvNormal = 0;
    public const int MadvRandom = 1;
    public const int MadvSequential = 2;
    public const int MadvWillNeed = 3;
    public const int MadvDontNeed = 4;
    public const int MadvFree = 8;
    public const int MadvRemove = 9;
    public const int MadvDontFork = 10;
    public const int MadvDoFork = 11;
    public const int MadvMergeable = 12;
    public const int MadvUnmergeable = 13;
    public const int MadvHugePage = 14;
    public const int MadvNoHugePage = 15;
    public const int MadvDontDump = 16;
    public const int MadvDoDump = 17;
    public const int MadvWipeOnFork = 18;
    public const int MadvKeepOnFork = 19;
    public const int MadvCold = 20;
    public const int MadvPageOut = 21;
    public const int MadvPopulateRead = 22;
    public const int MadvPopulateWrite = 23;
    public const int MadvDontNeedLocked = 24;
    public const int MadvCollapse = 25;

    /// <summary>
    /// madvise_behavior_valid for the modelled configuration: CONFIG_TRANSPARENT_HUGEPAGE=y,
    /// CONFIG_KSM=n, CONFIG_MEMORY_FAILURE=n, and no guard-region advice (MADV_GUARD_*).
    /// </summary>
    public static bool AdviceValid(int advice) => advice switch
    {
        MadvNormal or MadvRandom or MadvSequential or MadvWillNeed or MadvDontNeed or MadvFree or MadvRemove
            or MadvDontFork or MadvDoFork or MadvHugePage or MadvNoHugePage or MadvDontDump or MadvDoDump
            or MadvWipeOnFork or MadvKeepOnFork or MadvCold or MadvPageOut or MadvPopulateRead
            or MadvPopulateWrite or MadvDontNeedLocked or MadvCollapse => true,
        _ => false,
    };

    private static readonly (int Value, string Name)[] AdviceNames =
    [
        (MadvNormal, "normal"), (MadvRandom, "random"), (MadvSequential, "sequential"), (MadvWillNeed, "willneed"),
        (MadvDontNeed, "dontneed"), (MadvFree, "free"), (MadvRemove, "remove"), (MadvDontFork, "dontfork"),
        (MadvDoFork, "dofork"), (MadvMergeable, "mergeable"), (MadvUnmergeable, "unmergeable"),
        (MadvHugePage, "hugepage"), (MadvNoHugePage, "nohugepage"), (MadvDontDump, "dontdump"),
        (MadvDoDump, "dodump"), (MadvWipeOnFork, "wipeonfork"), (MadvKeepOnFork, "keeponfork"),
        (MadvCold, "cold"), (MadvPageOut, "pageout"), (MadvPopulateRead, "populate_read"),
        (MadvPopulateWrite, "populate_write"), (MadvDontNeedLocked, "dontneed_locked"), (MadvCollapse, "collapse"),
    ];

    /// <summary>The advice's name without the MADV_ prefix, lower case; the decimal value when it has none.</summary>
    public static string AdviceName(int advice)
    {
        foreach (var (v, n) in AdviceNames) if (v == advice) return n;
        return advice.ToString(System.Globalization.CultureInfo.InvariantCulture);
    }

    public static bool TryParseAdvice(string s, out int advice)
    {
        foreach (var (v, n) in AdviceNames)
        {
            if (string.Equals(n, s, StringComparison.OrdinalIgnoreCase)) { advice = v; return true; }
        }
        return int.TryParse(s, System.Globalization.NumberStyles.AllowLeadingSign, System.Globalization.CultureInfo.InvariantCulture, out advice);
    }
}
