namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// A 64-bit x86 paging-structure entry taken apart into named fields. The hardware fields follow the
/// Intel SDM, Vol. 3A, section 4.5 ("4-Level Paging and 5-Level Paging", the tables giving the format
/// of PML5E/PML4E/PDPTE/PDE/PTE); the ignored bits carry the meaning Linux gives them in
/// arch/x86/include/asm/pgtable_types.h. <see cref="Decode"/> and <see cref="Encode"/> are the only
/// two places that know where a field sits in the word; every oracle helper works on fields.
/// </summary>
/// <remarks>
/// This type is deliberately independent of NativeMmu.Arch.X86: it exists to cross-check that code,
/// so a wrong bit number on either side shows up as a disagreement.
/// </remarks>
public record struct DecodedEntry
{
    /// <summary>Number of bits of the physical-address field (bits 12..51 with MAXPHYADDR 52).</summary>
    public const int FrameBits = 40;

    /// <summary>All 40 bits of <see cref="Frame"/>.</summary>
    public const ulong AllFrameBits = 0xFF_FFFF_FFFF;

    /// <summary>Frame bits of a 2 MiB leaf: the low 9 frame bits (address bits 12..20) are not address there.</summary>
    public const ulong PmdLeafFrameBits = 0xFF_FFFF_FE00;

    /// <summary>Frame bits of a 1 GiB leaf: the low 18 frame bits (address bits 12..29) are not address there.</summary>
    public const ulong PudLeafFrameBits = 0xFF_FFFC_0000;

    /// <summary>Bit 0, P.</summary>
    public bool Present;
    /// <summary>Bit 1, R/W. In a swap entry: the swap soft-dirty flag.</summary>
    public bool Writable;
    /// <summary>Bit 2, U/S. In a swap entry: the swap uffd-wp flag.</summary>
    public bool UserMode;
    /// <summary>Bit 3, PWT. In a swap entry: the exclusive flag.</summary>
    public bool WriteThrough;
    /// <summary>Bit 4, PCD.</summary>
    public bool CacheDisable;
    /// <summary>Bit 5, A.</summary>
    public bool Accessed;
    /// <summary>Bit 6, D.</summary>
    public bool Dirty;
    /// <summary>Bit 7: PS in a PDE/PDPTE (a leaf), PAT in a 4 KiB PTE.</summary>
    public bool PageSize;
    /// <summary>Bit 8, G. Linux reads it as PROTNONE when P is clear.</summary>
    public bool Global;
    /// <summary>Bit 9, ignored by the CPU: Linux's SPECIAL.</summary>
    public bool Special;
    /// <summary>Bit 10, ignored by the CPU: Linux's UFFD_WP on 64-bit.</summary>
    public bool UffdWp;
    /// <summary>Bit 11, ignored by the CPU (R for HLAT): Linux's SOFT_DIRTY.</summary>
    public bool SoftDirty;
    /// <summary>Bits 12..51 as a number: the 4 KiB frame number. Bit 0 of it is PAT in a 2 MiB / 1 GiB leaf.</summary>
    public ulong Frame;
    /// <summary>Bits 52..56: reserved with MAXPHYADDR 52 on the CPU side, unused by Linux.</summary>
    public byte HighUnused;
    /// <summary>Bit 57, ignored by the CPU: Linux's SOFTW4 (DEVMAP up to 6.16).</summary>
    public bool Software4;
    /// <summary>Bit 58, ignored by the CPU: Linux's SAVED_DIRTY (leaf) / NOPTISHADOW (root).</summary>
    public bool SavedDirty;
    /// <summary>Bits 59..62: protection key.</summary>
    public byte ProtectionKey;
    /// <summary>Bit 63, XD.</summary>
    public bool ExecuteDisable;

    /// <summary>Takes a raw entry apart.</summary>
    public static DecodedEntry Decode(ulong raw) => new()
    {
        Present = Bit(raw, 0),
        Writable = Bit(raw, 1),
        UserMode = Bit(raw, 2),
        WriteThrough = Bit(raw, 3),
        CacheDisable = Bit(raw, 4),
        Accessed = Bit(raw, 5),
        Dirty = Bit(raw, 6),
        PageSize = Bit(raw, 7),
        Global = Bit(raw, 8),
        Special = Bit(raw, 9),
        UffdWp = Bit(raw, 10),
        SoftDirty = Bit(raw, 11),
        Frame = (raw >> 12) & AllFrameBits,
        HighUnused = (byte)((raw >> 52) & 0x1F),
        Software4 = Bit(raw, 57),
        SavedDirty = Bit(raw, 58),
        ProtectionKey = (byte)((raw >> 59) & 0xF),
        ExecuteDisable = Bit(raw, 63),
    };

    /// <summary>Puts the fields back into a raw entry.</summary>
    public readonly ulong Encode()
    {
        ulong raw = 0;
        raw |= Flag(Present, 0);
        raw |= Flag(Writable, 1);
        raw |= Flag(UserMode, 2);
        raw |= Flag(WriteThrough, 3);
        raw |= Flag(CacheDisable, 4);
        raw |= Flag(Accessed, 5);
        raw |= Flag(Dirty, 6);
        raw |= Flag(PageSize, 7);
        raw |= Flag(Global, 8);
        raw |= Flag(Special, 9);
        raw |= Flag(UffdWp, 10);
        raw |= Flag(SoftDirty, 11);
        raw |= (Frame & AllFrameBits) << 12;
        raw |= (ulong)(HighUnused & 0x1F) << 52;
        raw |= Flag(Software4, 57);
        raw |= Flag(SavedDirty, 58);
        raw |= (ulong)(ProtectionKey & 0xF) << 59;
        raw |= Flag(ExecuteDisable, 63);
        return raw;
    }

    /// <summary>True when every field is clear, i.e. the raw word is 0.</summary>
    public readonly bool IsBlank => this == default;

    /// <summary>
    /// __pte_needs_invert (pgtable-invert.h): a non-blank entry whose P bit is clear keeps its address
    /// field inverted, so a speculative L1TF load points at high, uncached memory.
    /// </summary>
    public readonly bool KeepsInvertedFrame => !Present && !IsBlank;

    private static bool Bit(ulong raw, int n) => ((raw >> n) & 1) != 0;
    private static ulong Flag(bool set, int n) => set ? 1UL << n : 0;
}
