namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// p4d_* predicates. A P4D entry only ever points at a PUD table (no 512 GiB pages), so its PFN mask
/// is the 4 KiB one and it has no PROT_NONE inversion. With 4-level paging the level is folded and
/// these predicates run on the PGD entry itself.
/// </summary>
public static class OracleP4d
{
    public static ulong Flags(ulong p4d) => OraclePte.Flags(DecodedEntry.Decode(p4d));
    public static ulong Pfn(ulong p4d) => DecodedEntry.Decode(p4d).Frame;
    public static bool None(ulong p4d) => OraclePte.None(DecodedEntry.Decode(p4d));
    public static bool Present(ulong p4d) => DecodedEntry.Decode(p4d).Present;

    /// <summary>p4d_bad with CONFIG_MITIGATION_PAGE_TABLE_ISOLATION: flags beyond P, R/W, U/S, A, D and XD are bad.</summary>
    public static bool Bad(ulong p4d) => Bad(DecodedEntry.Decode(p4d));

    public static bool Bad(DecodedEntry f)
    {
        f.Frame = 0; // p4d_flags
        f.Present = f.Writable = f.UserMode = f.Accessed = f.Dirty = f.ExecuteDisable = false;
        return !f.IsBlank;
    }

    public static ulong Populate(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: true);
    public static ulong PopulateKernel(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: false);
}

/// <summary>
/// pgd_* predicates, which depend on pgtable_l5_enabled(): with 4-level paging a PGD entry is never
/// none, always present and never bad (the P4D predicates do the checking).
/// </summary>
public static class OraclePgd
{
    public static ulong Flags(ulong pgd) => OraclePte.Flags(DecodedEntry.Decode(pgd));
    public static ulong Pfn(ulong pgd) => DecodedEntry.Decode(pgd).Frame;

    /// <summary>pgd_none: with LA57 the raw value must be 0 (no A/D leniency at this level).</summary>
    public static bool None(ulong pgd, bool fiveLevel) => fiveLevel && DecodedEntry.Decode(pgd).IsBlank;

    public static bool Present(ulong pgd, bool fiveLevel) => !fiveLevel || DecodedEntry.Decode(pgd).Present;

    /// <summary>pgd_bad with LA57 and PTI: apart from U/S and XD the flags must be exactly P, R/W, A, D.</summary>
    public static bool Bad(ulong pgd, bool fiveLevel) => Bad(DecodedEntry.Decode(pgd), fiveLevel);

    public static bool Bad(DecodedEntry f, bool fiveLevel)
    {
        if (!fiveLevel)
            return false;
        f.Frame = 0; // pgd_flags
        f.UserMode = false;
        f.ExecuteDisable = false;
        return f != new DecodedEntry { Present = true, Writable = true, Accessed = true, Dirty = true };
    }

    public static ulong Populate(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: true);
    public static ulong PopulateKernel(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: false);
}
