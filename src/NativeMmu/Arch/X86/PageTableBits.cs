namespace NativeMmu.Arch.X86;

/// <summary>
/// Bits of an x86-64 paging-structure entry, as arch/x86/include/asm/pgtable_types.h spells them.
/// </summary>
/// <remarks>
/// <code>
///  63  62..59  58    57    56..52  51 ........................ 12  11  10   9   8   7   6   5   4   3   2   1   0
/// +---+-------+-----+-----+-------+-------------------------------+---+---+---+---+---+---+---+---+---+---+---+---+
/// |NX | PKEY  |SW5  |SW4  |  0    |  page frame number (PFN)      |SW3|SW2|SW1| G |PSE| D | A |PCD|PWT| U |RW | P |
/// +---+-------+-----+-----+-------+-------------------------------+---+---+---+---+---+---+---+---+---+---+---+---+
///              SAVED DEVMAP                                        SOFT UFFD SPE PROT PAT
///              DIRTY (&lt;=6.16)                                     DIRTY WP  CIAL NONE (4K)
/// </code>
/// Bit 12 is PAT_LARGE in a 2 MiB / 1 GiB leaf, which is why huge entries use a narrower PFN mask.
/// When PRESENT is clear the entry is either none, PROT_NONE (G set), or a swap entry whose low bits
/// alias: RW = SWP_SOFT_DIRTY, USER = SWP_UFFD_WP, PWT = SWP_EXCLUSIVE.
/// </remarks>
public static class PageTableBits
{
    // Bit numbers (_PAGE_BIT_*).
    public const int BitPresent = 0;
    public const int BitRw = 1;
    public const int BitUser = 2;
    public const int BitPwt = 3;
    public const int BitPcd = 4;
    public const int BitAccessed = 5;
    public const int BitDirty = 6;
    public const int BitPse = 7;
    public const int BitPat = 7;
    public const int BitGlobal = 8;
    public const int BitSoftw1 = 9;
    public const int BitSoftw2 = 10;
    public const int BitSoftw3 = 11;
    public const int BitPatLarge = 12;
    public const int BitSoftw4 = 57;
    public const int BitSoftw5 = 58;
    public const int BitPkey0 = 59;
    public const int BitNx = 63;

    // Software aliases.
    public const int BitSpecial = BitSoftw1;
    public const int BitCpaTest = BitSoftw1;
    public const int BitUffdWp = BitSoftw2;
    public const int BitSoftDirty = BitSoftw3;
    public const int BitDevmap = BitSoftw4;
    public const int BitSavedDirty = BitSoftw5;
    public const int BitNoPtiShadow = BitSoftw5;
    /// <summary>Only meaningful when PRESENT is clear (_PAGE_BIT_PROTNONE = _PAGE_BIT_GLOBAL).</summary>
    public const int BitProtNone = BitGlobal;

    // Masks (_PAGE_*).
    public const ulong Present = 1UL << BitPresent;
    public const ulong Rw = 1UL << BitRw;
    public const ulong User = 1UL << BitUser;
    public const ulong Pwt = 1UL << BitPwt;
    public const ulong Pcd = 1UL << BitPcd;
    public const ulong Accessed = 1UL << BitAccessed;
    public const ulong Dirty = 1UL << BitDirty;
    public const ulong Pse = 1UL << BitPse;
    public const ulong Pat = 1UL << BitPat;
    public const ulong Global = 1UL << BitGlobal;
    public const ulong Special = 1UL << BitSpecial;
    public const ulong UffdWp = 1UL << BitUffdWp;
    public const ulong SoftDirty = 1UL << BitSoftDirty;
    public const ulong PatLarge = 1UL << BitPatLarge;
    public const ulong Devmap = 1UL << BitDevmap;
    public const ulong SavedDirty = 1UL << BitSavedDirty;
    public const ulong PkeyMask = 0xFUL << BitPkey0;
    public const ulong Nx = 1UL << BitNx;
    public const ulong ProtNone = 1UL << BitProtNone;

    /// <summary>_PAGE_DIRTY_BITS: hardware dirty or the saved copy kept while RW is clear.</summary>
    public const ulong DirtyBits = Dirty | SavedDirty;
    /// <summary>_PAGE_KNL_ERRATUM_MASK: the bits the *_none predicates ignore.</summary>
    public const ulong KnlErratumMask = Dirty | Accessed;

    // Swap-entry flag aliases, meaningful only when PRESENT is clear.
    public const ulong SwpSoftDirty = Rw;
    public const ulong SwpUffdWp = User;
    public const ulong SwpExclusive = Pwt;
    public const ulong SwpFlagsMask = SwpSoftDirty | SwpUffdWp | SwpExclusive;

    // Physical address masks (__PHYSICAL_MASK_SHIFT = 52).
    public const int PhysicalMaskShift = 52;
    public const ulong PhysicalMask = (1UL << PhysicalMaskShift) - 1;
    /// <summary>PTE_PFN_MASK = PHYSICAL_PAGE_MASK: bits 12..51.</summary>
    public const ulong PtePfnMask = PhysicalMask & ~(Geometry.PageSize - 1);
    /// <summary>PTE_FLAGS_MASK: everything outside the PFN field, PKEY and NX included.</summary>
    public const ulong PteFlagsMask = ~PtePfnMask;
    /// <summary>PHYSICAL_PMD_PAGE_MASK: bits 21..51.</summary>
    public const ulong PhysicalPmdPageMask = PhysicalMask & ~(Geometry.PmdSize - 1);
    /// <summary>PHYSICAL_PUD_PAGE_MASK: bits 30..51.</summary>
    public const ulong PhysicalPudPageMask = PhysicalMask & ~(Geometry.PudSize - 1);

    // Composite sets.
    /// <summary>_PAGE_TABLE: user non-leaf entries.</summary>
    public const ulong PageTable = Present | Rw | User | Accessed | Dirty;
    /// <summary>_KERNPG_TABLE: kernel non-leaf entries.</summary>
    public const ulong KernPgTable = Present | Rw | Accessed | Dirty;
    /// <summary>_COMMON_PAGE_CHG_MASK (no memory encryption, DEVMAP dropped as in 6.17+).</summary>
    public const ulong CommonPageChgMask = PtePfnMask | Pcd | Pwt | Special | Accessed | DirtyBits | SoftDirty | UffdWp;
    /// <summary>_PAGE_CHG_MASK: the bits pte_modify keeps.</summary>
    public const ulong PageChgMask = CommonPageChgMask | Pat;
    /// <summary>_HPAGE_CHG_MASK: the bits pmd_modify keeps.</summary>
    public const ulong HPageChgMask = CommonPageChgMask | Pse | PatLarge;
}

/// <summary>Page protections (pgprot_t values) of arch/x86/include/asm/pgtable_types.h.</summary>
public static class PgProt
{
    public const ulong PageNone = PageTableBits.Global | PageTableBits.Accessed; // PROTNONE | A, PRESENT clear
    public const ulong PageShared = PageTableBits.Present | PageTableBits.Rw | PageTableBits.User | PageTableBits.Accessed | PageTableBits.Nx;
    public const ulong PageSharedExec = PageTableBits.Present | PageTableBits.Rw | PageTableBits.User | PageTableBits.Accessed;
    public const ulong PageCopyNoExec = PageTableBits.Present | PageTableBits.User | PageTableBits.Accessed | PageTableBits.Nx;
    public const ulong PageCopy = PageCopyNoExec;
    public const ulong PageCopyExec = PageTableBits.Present | PageTableBits.User | PageTableBits.Accessed;
    public const ulong PageReadonly = PageTableBits.Present | PageTableBits.User | PageTableBits.Accessed | PageTableBits.Nx;
    public const ulong PageReadonlyExec = PageTableBits.Present | PageTableBits.User | PageTableBits.Accessed;
    public const ulong PageKernel = PageTableBits.Present | PageTableBits.Rw | PageTableBits.Dirty | PageTableBits.Accessed | PageTableBits.Global | PageTableBits.Nx;
    public const ulong PageKernelRo = PageTableBits.Present | PageTableBits.Dirty | PageTableBits.Accessed | PageTableBits.Global | PageTableBits.Nx;
    public const ulong PageKernelLarge = PageKernel | PageTableBits.Pse;
}
