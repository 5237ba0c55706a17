namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// Flag sets of arch/x86/include/asm/pgtable_types.h, spelt as decoded entries so the bits are named,
/// not numbered.
/// </summary>
public static class OracleProt
{
    /// <summary>_PAGE_TABLE: P, R/W, U/S, A, D.</summary>
    public static ulong PageTable => new DecodedEntry { Present = true, Writable = true, UserMode = true, Accessed = true, Dirty = true }.Encode();
    /// <summary>_KERNPG_TABLE: P, R/W, A, D.</summary>
    public static ulong KernPgTable => new DecodedEntry { Present = true, Writable = true, Accessed = true, Dirty = true }.Encode();
    /// <summary>PAGE_NONE: A and G (PROTNONE), P clear.</summary>
    public static ulong PageNone => new DecodedEntry { Accessed = true, Global = true }.Encode();
    public static ulong PageShared => new DecodedEntry { Present = true, Writable = true, UserMode = true, Accessed = true, ExecuteDisable = true }.Encode();
    public static ulong PageSharedExec => new DecodedEntry { Present = true, Writable = true, UserMode = true, Accessed = true }.Encode();
    /// <summary>PAGE_COPY = PAGE_COPY_NOEXEC = PAGE_READONLY.</summary>
    public static ulong PageCopy => new DecodedEntry { Present = true, UserMode = true, Accessed = true, ExecuteDisable = true }.Encode();
    public static ulong PageReadonly => PageCopy;
    /// <summary>PAGE_COPY_EXEC = PAGE_READONLY_EXEC.</summary>
    public static ulong PageReadonlyExec => new DecodedEntry { Present = true, UserMode = true, Accessed = true }.Encode();
    public static ulong PageKernel => new DecodedEntry { Present = true, Writable = true, Accessed = true, Dirty = true, Global = true, ExecuteDisable = true }.Encode();
    public static ulong PageKernelRo => new DecodedEntry { Present = true, Accessed = true, Dirty = true, Global = true, ExecuteDisable = true }.Encode();
    /// <summary>PTE_PFN_MASK: bits 12..51.</summary>
    public static ulong PtePfnMask => EntryRules.AddressMask(DecodedEntry.AllFrameBits);
    /// <summary>PHYSICAL_PMD_PAGE_MASK: bits 21..51.</summary>
    public static ulong PhysicalPmdPageMask => EntryRules.AddressMask(DecodedEntry.PmdLeafFrameBits);
    /// <summary>PHYSICAL_PUD_PAGE_MASK: bits 30..51.</summary>
    public static ulong PhysicalPudPageMask => EntryRules.AddressMask(DecodedEntry.PudLeafFrameBits);
}
