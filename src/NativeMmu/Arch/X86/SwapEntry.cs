namespace NativeMmu.Arch.X86;

/// <summary>
/// Swap entries: the x86-64 PTE format of arch/x86/include/asm/pgtable_64.h (type in bits 63..59,
/// the offset stored inverted in bits 58..9 for L1TF) and the arch-independent swp_entry_t of
/// include/linux/swapops.h (type in bits 62..58, offset below).
/// </summary>
/// <remarks>
/// <code>
/// | TYPE (59-63) | ~OFFSET (9-58) |0|0|X|X| X| E|F|SD|0| &lt;- swp entry
/// </code>
/// G (bit 8) must stay clear or pte_present would see PROTNONE; PSE (bit 7) must stay clear for pmd_present.
/// </remarks>
public readonly record struct SwpEntry(ulong Val)
{
    public const int SwpTypeBits = 5;                                     // SWP_TYPE_BITS
    public const int SwpOffsetFirstBit = PageTableBits.BitProtNone + 1;   // 9
    public const int SwpOffsetShift = SwpOffsetFirstBit + SwpTypeBits;   // 14
    public const int MaxSwapfilesShift = 5;                               // MAX_SWAPFILES_SHIFT
    /// <summary>SWP_TYPE_SHIFT = BITS_PER_XA_VALUE - MAX_SWAPFILES_SHIFT = 63 - 5.</summary>
    public const int SwpTypeShift = 58;
    public const ulong SwpOffsetMask = (1UL << SwpTypeShift) - 1;
    /// <summary>The largest offset the x86 PTE format holds: 50 bits.</summary>
    public const ulong MaxArchOffset = (1UL << (64 - SwpOffsetShift)) - 1;

    // Special types carved out of the 32 type values (6.15+, everything configured).
    public const int SwpHwpoisonNum = 1;
    public const int SwpMigrationNum = 3;
    public const int SwpDeviceNum = 3;
    public const int SwpPteMarkerNum = 1;
    public const int MaxSwapfiles = (1 << MaxSwapfilesShift) - SwpDeviceNum - SwpMigrationNum - SwpHwpoisonNum - SwpPteMarkerNum; // 24
    public const int SwpHwpoison = MaxSwapfiles;
    public const int SwpMigrationRead = MaxSwapfiles + SwpHwpoisonNum;
    public const int SwpMigrationReadExclusive = SwpMigrationRead + 1;
    public const int SwpMigrationWrite = SwpMigrationRead + 2;
    public const int SwpDeviceWrite = MaxSwapfiles + SwpHwpoisonNum + SwpMigrationNum;
    public const int SwpDeviceRead = SwpDeviceWrite + 1;
    public const int SwpDeviceExclusive = SwpDeviceWrite + 2;
    public const int SwpPteMarker = MaxSwapfiles + SwpHwpoisonNum + SwpMigrationNum + SwpDeviceNum; // 31

    // PTE marker bits in the offset of a SWP_PTE_MARKER entry.
    public const ulong PteMarkerUffdWp = 1UL << 0;
    public const ulong PteMarkerPoisoned = 1UL << 1;
    public const ulong PteMarkerGuard = 1UL << 2;

    /// <summary>swp_entry(type, offset).</summary>
    public static SwpEntry Make(int type, ulong offset) => new(((ulong)type << SwpTypeShift) | (offset & SwpOffsetMask));

    /// <summary>swp_type.</summary>
    public int Type => (int)(Val >> SwpTypeShift);
    /// <summary>swp_offset.</summary>
    public ulong Offset => Val & SwpOffsetMask;

    public bool IsMigration => Type is SwpMigrationRead or SwpMigrationReadExclusive or SwpMigrationWrite;
    public bool IsPteMarker => Type == SwpPteMarker;
    public bool IsHwpoison => Type == SwpHwpoison;
    public bool IsDevicePrivate => Type is SwpDeviceRead or SwpDeviceWrite;
    public bool IsDeviceExclusive => Type == SwpDeviceExclusive;
    /// <summary>non_swap_entry: one of the special types above the real swap files.</summary>
    public bool IsNonSwap => Type >= MaxSwapfiles;

    /// <summary>__swp_entry: the arch PTE encoding of (type, offset), offset inverted.</summary>
    public static Pte ArchEncode(int type, ulong offset)
        => new((~offset << SwpOffsetShift >> SwpTypeBits) | ((ulong)type << (64 - SwpTypeBits)));
    /// <summary>__swp_type.</summary>
    public static int ArchType(Pte pte) => (int)(pte.Value >> (64 - SwpTypeBits));
    /// <summary>__swp_offset: un-inverts; bits 0..8 (flags) fall away.</summary>
    public static ulong ArchOffset(Pte pte) => ~pte.Value << SwpTypeBits >> SwpOffsetShift;

    /// <summary>swp_entry_to_pte: without the soft-dirty/uffd-wp/exclusive flags.</summary>
    public Pte ToPte() => ArchEncode(Type, Offset);

    /// <summary>pte_to_swp_entry: clears the flag bits, then decodes.</summary>
    public static SwpEntry FromPte(Pte pte)
    {
        Pte clean = pte.SwpClearFlags();
        return Make(ArchType(clean), ArchOffset(clean));
    }

    public override string ToString() => $"swp type {Type} offset {Offset:x}";
}
