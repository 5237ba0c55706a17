namespace NativeMmu.Fuzz;

/// <summary>What kind of value a fuzzed sequence works on.</summary>
internal enum FuzzLevel : byte
{
    Pte,
    Pmd,
    Pud,
    P4d,
    /// <summary>A PGD entry with 4-level paging (P4D folded).</summary>
    Pgd4,
    /// <summary>A PGD entry with 5-level paging (LA57).</summary>
    Pgd5,
    /// <summary>A non-present PTE seen as a swap entry, and swp_entry_t values.</summary>
    Swap,
    /// <summary>A page-fault error code.</summary>
    PfError,
}

/// <summary>One helper application. Arguments live in <see cref="FuzzStep.A"/> and <see cref="FuzzStep.B"/>.</summary>
internal enum FuzzOp : byte
{
    SetFlags,
    ClearFlags,
    MkWrite,
    MkWriteNovma,
    Wrprotect,
    MkDirty,
    MkClean,
    MkYoung,
    MkOld,
    MkSpecial,
    MkExec,
    MkHuge,
    ClrHuge,
    MkGlobal,
    ClrGlobal,
    MkSavedDirty,
    ClearSavedDirty,
    MkSoftDirty,
    ClearSoftDirty,
    MkUffdWp,
    ClearUffdWp,
    /// <summary>pXd_modify(v, newprot = A).</summary>
    Modify,
    /// <summary>pfn_pXd(pfn = A, prot = B); ignores the current value.</summary>
    PfnEntry,
    /// <summary>pfn_pXd(pXd_pfn(v), pXd_pgprot(v)).</summary>
    Rebuild,
    /// <summary>pte_advance_pfn(v, nr = A).</summary>
    AdvancePfn,
    MkInvalid,
    /// <summary>pXd_populate with a user table at pfn A (_PAGE_TABLE).</summary>
    Populate,
    /// <summary>pXd_populate_kernel with a table at pfn A (_KERNPG_TABLE).</summary>
    PopulateKernel,
    SwpMkSoftDirty,
    SwpClearSoftDirty,
    SwpMkExclusive,
    SwpClearExclusive,
    SwpMkUffdWp,
    SwpClearUffdWp,
    SwpClearFlags,
    /// <summary>__swp_entry(type = A, offset = B) as a PTE.</summary>
    SwpArchEncode,
    /// <summary>swp_entry_to_pte(swp_entry(type = A, offset = B)).</summary>
    SwpEntryToPte,
    /// <summary>swp_entry_to_pte(pte_to_swp_entry(v)).</summary>
    SwpRoundTrip,
    /// <summary>Set error-code bit number A (index into the defined bits).</summary>
    PfSet,
    /// <summary>Clear error-code bit number A.</summary>
    PfClear,
}

/// <summary>One step of a fuzzed sequence.</summary>
internal readonly record struct FuzzStep(FuzzOp Op, ulong A = 0, ulong B = 0);

/// <summary>Names, argument names, the operations each level offers and the observables each level compares.</summary>
internal static class FuzzCatalog
{
    public const int LevelCount = 8;

    /// <summary>Observable 0 of every level is the value itself.</summary>
    public const string ValueObservable = "value";

    public static readonly string[] LevelNames = ["pte", "pmd", "pud", "p4d", "pgd4", "pgd5", "swap", "pferr"];

    public static string Name(FuzzLevel level) => LevelNames[(int)level];

    public static bool TryParseLevel(string name, out FuzzLevel level)
    {
        int i = Array.IndexOf(LevelNames, name.Trim().ToLowerInvariant());
        level = (FuzzLevel)Math.Max(i, 0);
        return i >= 0;
    }

    private static readonly FuzzOp[] PteOps =
    [
        FuzzOp.SetFlags, FuzzOp.ClearFlags, FuzzOp.MkWrite, FuzzOp.MkWriteNovma, FuzzOp.Wrprotect, FuzzOp.MkDirty,
        FuzzOp.MkClean, FuzzOp.MkYoung, FuzzOp.MkOld, FuzzOp.MkSpecial, FuzzOp.MkExec, FuzzOp.MkHuge, FuzzOp.ClrHuge,
        FuzzOp.MkGlobal, FuzzOp.ClrGlobal, FuzzOp.MkSavedDirty, FuzzOp.ClearSavedDirty, FuzzOp.MkSoftDirty,
        FuzzOp.ClearSoftDirty, FuzzOp.MkUffdWp, FuzzOp.ClearUffdWp, FuzzOp.Modify, FuzzOp.PfnEntry, FuzzOp.Rebuild,
        FuzzOp.AdvancePfn,
    ];

    private static readonly FuzzOp[] PmdOps =
    [
        FuzzOp.SetFlags, FuzzOp.ClearFlags, FuzzOp.MkHuge, FuzzOp.MkOld, FuzzOp.MkYoung, FuzzOp.MkClean, FuzzOp.MkDirty,
        FuzzOp.Wrprotect, FuzzOp.MkWriteNovma, FuzzOp.MkWrite, FuzzOp.MkSavedDirty, FuzzOp.ClearSavedDirty,
        FuzzOp.MkSoftDirty, FuzzOp.ClearSoftDirty, FuzzOp.MkInvalid, FuzzOp.Modify, FuzzOp.PfnEntry, FuzzOp.Rebuild,
        FuzzOp.Populate, FuzzOp.PopulateKernel,
    ];

    private static readonly FuzzOp[] PudOps =
    [
        FuzzOp.SetFlags, FuzzOp.ClearFlags, FuzzOp.MkHuge, FuzzOp.MkOld, FuzzOp.MkYoung, FuzzOp.MkClean, FuzzOp.MkDirty,
        FuzzOp.Wrprotect, FuzzOp.MkWrite, FuzzOp.PfnEntry, FuzzOp.Rebuild, FuzzOp.Populate, FuzzOp.PopulateKernel,
    ];

    private static readonly FuzzOp[] UpperOps = [FuzzOp.SetFlags, FuzzOp.ClearFlags, FuzzOp.Populate, FuzzOp.PopulateKernel];

    private static readonly FuzzOp[] SwapOps =
    [
        FuzzOp.SetFlags, FuzzOp.ClearFlags, FuzzOp.SwpMkSoftDirty, FuzzOp.SwpClearSoftDirty, FuzzOp.SwpMkExclusive,
        FuzzOp.SwpClearExclusive, FuzzOp.SwpMkUffdWp, FuzzOp.SwpClearUffdWp, FuzzOp.SwpClearFlags,
        FuzzOp.SwpArchEncode, FuzzOp.SwpEntryToPte, FuzzOp.SwpRoundTrip,
    ];

    private static readonly FuzzOp[] PfOps = [FuzzOp.PfSet, FuzzOp.PfClear];

    private static readonly FuzzOp[][] OpsByLevel = [PteOps, PmdOps, PudOps, UpperOps, UpperOps, UpperOps, SwapOps, PfOps];

    public static ReadOnlySpan<FuzzOp> Ops(FuzzLevel level) => OpsByLevel[(int)level];

    private static readonly string[][] ObservablesByLevel =
    [
        [ValueObservable, "pte_flags", "pte_pfn", "pte_none", "pte_present", "pte_protnone", "pte_write", "pte_dirty",
            "pte_young", "pte_user", "pte_exec", "pte_global", "pte_special", "pte_soft_dirty", "pte_uffd_wp", "pte_huge"],
        [ValueObservable, "pmd_pfn_mask", "pmd_flags", "pmd_pfn", "pmd_none", "pmd_present", "pmd_leaf", "pmd_trans_huge",
            "pmd_protnone", "pmd_bad", "pmd_write", "pmd_dirty", "pmd_young", "pmd_user", "pmd_soft_dirty"],
        [ValueObservable, "pud_pfn_mask", "pud_flags", "pud_pfn", "pud_none", "pud_present", "pud_leaf", "pud_bad",
            "pud_write", "pud_dirty", "pud_young"],
        [ValueObservable, "p4d_flags", "p4d_pfn", "p4d_none", "p4d_present", "p4d_bad"],
        [ValueObservable, "pgd_flags", "pgd_pfn", "pgd_none", "pgd_present", "pgd_bad"],
        [ValueObservable, "pgd_flags", "pgd_pfn", "pgd_none", "pgd_present", "pgd_bad"],
        [ValueObservable, "pte_present", "pte_none", "is_swap_pte", "pte_swp_soft_dirty", "pte_swp_exclusive",
            "pte_swp_uffd_wp", "__swp_type", "__swp_offset", "pte_to_swp_entry", "swp_type", "swp_offset",
            "is_migration_entry", "is_hwpoison_entry", "is_device_private_entry", "is_device_exclusive_entry",
            "is_pte_marker_entry", "non_swap_entry", "swp_type(val)", "swp_offset(val)", "swp_entry_to_pte(val)"],
        [ValueObservable, "X86_PF_PROT", "X86_PF_WRITE", "X86_PF_USER", "X86_PF_RSVD", "X86_PF_INSTR", "X86_PF_PK",
            "X86_PF_SHSTK", "X86_PF_SGX", "X86_PF_RMP"],
    ];

    /// <summary>Observable names of a level; index 0 is the value.</summary>
    public static IReadOnlyList<string> Observables(FuzzLevel level) => ObservablesByLevel[(int)level];

    public static int ObservableCount(FuzzLevel level) => ObservablesByLevel[(int)level].Length;

    public static readonly int MaxObservables = ObservablesByLevel.Max(o => o.Length);

    /// <summary>The short name of an operation at a level, as used by the golden table.</summary>
    public static string OpName(FuzzLevel level, FuzzOp op) => op switch
    {
        FuzzOp.SetFlags => "set_flags",
        FuzzOp.ClearFlags => "clear_flags",
        FuzzOp.MkWrite => "mkwrite",
        FuzzOp.MkWriteNovma => "mkwrite_novma",
        FuzzOp.Wrprotect => "wrprotect",
        FuzzOp.MkDirty => "mkdirty",
        FuzzOp.MkClean => "mkclean",
        FuzzOp.MkYoung => "mkyoung",
        FuzzOp.MkOld => "mkold",
        FuzzOp.MkSpecial => "mkspecial",
        FuzzOp.MkExec => "mkexec",
        FuzzOp.MkHuge => "mkhuge",
        FuzzOp.ClrHuge => "clrhuge",
        FuzzOp.MkGlobal => "mkglobal",
        FuzzOp.ClrGlobal => "clrglobal",
        FuzzOp.MkSavedDirty => "mksaveddirty",
        FuzzOp.ClearSavedDirty => "clear_saveddirty",
        FuzzOp.MkSoftDirty => "mksoft_dirty",
        FuzzOp.ClearSoftDirty => "clear_soft_dirty",
        FuzzOp.MkUffdWp => "mkuffd_wp",
        FuzzOp.ClearUffdWp => "clear_uffd_wp",
        FuzzOp.Modify => "modify",
        FuzzOp.PfnEntry => "pfn_" + Prefix(level),
        FuzzOp.Rebuild => "rebuild",
        FuzzOp.AdvancePfn => "advance_pfn",
        FuzzOp.MkInvalid => "mkinvalid",
        FuzzOp.Populate => "populate",
        FuzzOp.PopulateKernel => "populate_kernel",
        FuzzOp.SwpMkSoftDirty => "swp_mksoft_dirty",
        FuzzOp.SwpClearSoftDirty => "swp_clear_soft_dirty",
        FuzzOp.SwpMkExclusive => "swp_mkexclusive",
        FuzzOp.SwpClearExclusive => "swp_clear_exclusive",
        FuzzOp.SwpMkUffdWp => "swp_mkuffd_wp",
        FuzzOp.SwpClearUffdWp => "swp_clear_uffd_wp",
        FuzzOp.SwpClearFlags => "swp_clear_flags",
        FuzzOp.SwpArchEncode => "__swp_entry",
        FuzzOp.SwpEntryToPte => "swp_entry_to_pte",
        FuzzOp.SwpRoundTrip => "swp_roundtrip",
        FuzzOp.PfSet => "set",
        FuzzOp.PfClear => "clear",
        _ => op.ToString(),
    };

    /// <summary>The argument names of an operation (A first, then B).</summary>
    public static ReadOnlySpan<string> ArgNames(FuzzOp op) => op switch
    {
        FuzzOp.SetFlags or FuzzOp.ClearFlags => ArgMask,
        FuzzOp.Modify => ArgNewprot,
        FuzzOp.PfnEntry => ArgPfnProt,
        FuzzOp.AdvancePfn => ArgNr,
        FuzzOp.Populate or FuzzOp.PopulateKernel => ArgPfn,
        FuzzOp.SwpArchEncode or FuzzOp.SwpEntryToPte => ArgTypeOffset,
        FuzzOp.PfSet or FuzzOp.PfClear => ArgBit,
        _ => [],
    };

    private static readonly string[] ArgMask = ["mask"];
    private static readonly string[] ArgNewprot = ["newprot"];
    private static readonly string[] ArgPfnProt = ["pfn", "prot"];
    private static readonly string[] ArgNr = ["nr"];
    private static readonly string[] ArgPfn = ["pfn"];
    private static readonly string[] ArgTypeOffset = ["type", "offset"];
    private static readonly string[] ArgBit = ["bit"];

    /// <summary>The kernel-style prefix of a level's helpers.</summary>
    public static string Prefix(FuzzLevel level) => level switch
    {
        FuzzLevel.Pte or FuzzLevel.Swap => "pte",
        FuzzLevel.Pmd => "pmd",
        FuzzLevel.Pud => "pud",
        FuzzLevel.P4d => "p4d",
        FuzzLevel.Pgd4 or FuzzLevel.Pgd5 => "pgd",
        _ => "x86_pf",
    };

    /// <summary>A step as a kernel-like call, e.g. <c>pmd_modify(newprot=0x8000000000000025)</c>.</summary>
    public static string Describe(FuzzLevel level, in FuzzStep step)
    {
        string name = CallName(level, step.Op);
        ReadOnlySpan<string> args = ArgNames(step.Op);
        return args.Length switch
        {
            0 => name + "()",
            1 => $"{name}({args[0]}=0x{step.A:x})",
            _ => $"{name}({args[0]}=0x{step.A:x}, {args[1]}=0x{step.B:x})",
        };
    }

    /// <summary>The kernel-like name a step is printed with, e.g. <c>pmd_modify</c> or <c>pfn_pte</c>.</summary>
    public static string CallName(FuzzLevel level, FuzzOp op)
    {
        string name = OpName(level, op);
        if (!name.StartsWith("pfn_", StringComparison.Ordinal) && !name.StartsWith("__", StringComparison.Ordinal)
            && !name.StartsWith("swp_entry_to_pte", StringComparison.Ordinal) && op != FuzzOp.SwpRoundTrip)
            name = Prefix(level) + "_" + name;
        return name;
    }

    /// <summary>Finds an operation of a level by the name <see cref="Describe"/> prints.</summary>
    public static bool TryParseCall(FuzzLevel level, string name, out FuzzOp op)
    {
        foreach (FuzzOp candidate in Ops(level))
        {
            if (CallName(level, candidate) == name)
            {
                op = candidate;
                return true;
            }
        }
        op = default;
        return false;
    }

    /// <summary>Finds an operation by its short name at a level.</summary>
    public static bool TryParseOp(FuzzLevel level, string name, out FuzzOp op)
    {
        foreach (FuzzOp candidate in Ops(level))
        {
            if (OpName(level, candidate) == name)
            {
                op = candidate;
                return true;
            }
        }
        op = default;
        return false;
    }
}
