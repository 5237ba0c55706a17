namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// Swap entries, rebuilt bit by bit: the x86-64 PTE layout of arch/x86/include/asm/pgtable_64.h
/// (type in bits 59..63, the offset stored complemented in bits 9..58, bits 0..8 left to flags) and
/// the arch-independent swp_entry_t of include/linux/swapops.h (type from bit 58, offset below).
/// </summary>
public static class OracleSwap
{
    /// <summary>SWP_TYPE_BITS.</summary>
    public const int ArchTypeBits = 5;
    /// <summary>First PTE bit of the offset: one above PROTNONE (bit 8).</summary>
    public const int ArchOffsetFirstBit = 9;
    /// <summary>Offset bits that fit between bit 9 and the type: 59 - 9.</summary>
    public const int ArchOffsetBits = 50;
    /// <summary>First PTE bit of the type.</summary>
    public const int ArchTypeFirstBit = 59;
    /// <summary>SWP_TYPE_SHIFT of swp_entry_t: BITS_PER_XA_VALUE (63) - MAX_SWAPFILES_SHIFT (5).</summary>
    public const int EntryTypeShift = 58;

    // The 32 type values, highest first (swap.h, 6.15+, CONFIG_DEVICE_PRIVATE, CONFIG_MIGRATION and
    // CONFIG_MEMORY_FAILURE all on): one PTE-marker type, three device types, three migration types,
    // one hwpoison type, and 24 real swap files below them.
    public const uint PteMarker = 31;
    public const uint DeviceExclusive = 30;
    public const uint DeviceRead = 29;
    public const uint DeviceWrite = 28;
    public const uint MigrationWrite = 27;
    public const uint MigrationReadExclusive = 26;
    public const uint MigrationRead = 25;
    public const uint Hwpoison = 24;
    /// <summary>MAX_SWAPFILES: 32 - 1 - 3 - 3 - 1.</summary>
    public const uint MaxSwapfiles = 24;

    /// <summary>__swp_entry(type, offset): the offset's low 50 bits complemented into bits 9..58, the type's low 5 bits into 59..63.</summary>
    public static ulong ArchEncode(ulong type, ulong offset)
    {
        ulong pte = 0;
        for (int i = 0; i < ArchOffsetBits; i++)
            if (((offset >> i) & 1) == 0)
                pte |= 1UL << (ArchOffsetFirstBit + i);
        for (int i = 0; i < ArchTypeBits; i++)
            if (((type >> i) & 1) != 0)
                pte |= 1UL << (ArchTypeFirstBit + i);
        return pte;
    }

    /// <summary>__swp_type.</summary>
    public static ulong ArchType(ulong pte)
    {
        ulong type = 0;
        for (int i = 0; i < ArchTypeBits; i++)
            if (((pte >> (ArchTypeFirstBit + i)) & 1) != 0)
                type |= 1UL << i;
        return type;
    }

    /// <summary>__swp_offset: bits 9..58, complemented back.</summary>
    public static ulong ArchOffset(ulong pte)
    {
        ulong offset = 0;
        for (int i = 0; i < ArchOffsetBits; i++)
            if (((pte >> (ArchOffsetFirstBit + i)) & 1) == 0)
                offset |= 1UL << i;
        return offset;
    }

    /// <summary>swp_entry(type, offset): offset bits 0..57, type from bit 58 (bits of type above 5 fall off the word).</summary>
    public static ulong Entry(ulong type, ulong offset)
    {
        ulong val = 0;
        for (int i = 0; i < EntryTypeShift; i++)
            if (((offset >> i) & 1) != 0)
                val |= 1UL << i;
        for (int i = 0; EntryTypeShift + i < 64; i++)
            if (((type >> i) & 1) != 0)
                val |= 1UL << (EntryTypeShift + i);
        return val;
    }

    /// <summary>swp_type.</summary>
    public static ulong EntryType(ulong val) => val >> EntryTypeShift;
    /// <summary>swp_offset.</summary>
    public static ulong EntryOffset(ulong val) => val & ((1UL << EntryTypeShift) - 1);

    /// <summary>pte_to_swp_entry: drop the three flag bits, decode the arch layout, re-encode as swp_entry_t.</summary>
    public static ulong PteToEntry(ulong pte)
    {
        ulong clean = ClearFlags(pte);
        return Entry(ArchType(clean), ArchOffset(clean));
    }

    /// <summary>swp_entry_to_pte: no flag bits set.</summary>
    public static ulong EntryToPte(ulong val) => ArchEncode(EntryType(val), EntryOffset(val));

    // ---- the flag bits of a swap PTE (they reuse R/W, U/S and PWT, meaningful only while P is clear) ----

    public static bool SoftDirty(ulong pte) => DecodedEntry.Decode(pte).Writable;
    public static bool UffdWp(ulong pte) => DecodedEntry.Decode(pte).UserMode;
    public static bool Exclusive(ulong pte) => DecodedEntry.Decode(pte).WriteThrough;

    public static ulong MkSoftDirty(ulong pte) { var e = DecodedEntry.Decode(pte); e.Writable = true; return e.Encode(); }
    public static ulong ClearSoftDirty(ulong pte) { var e = DecodedEntry.Decode(pte); e.Writable = false; return e.Encode(); }
    public static ulong MkUffdWp(ulong pte) { var e = DecodedEntry.Decode(pte); e.UserMode = true; return e.Encode(); }
    public static ulong ClearUffdWp(ulong pte) { var e = DecodedEntry.Decode(pte); e.UserMode = false; return e.Encode(); }
    public static ulong MkExclusive(ulong pte) { var e = DecodedEntry.Decode(pte); e.WriteThrough = true; return e.Encode(); }
    public static ulong ClearExclusive(ulong pte) { var e = DecodedEntry.Decode(pte); e.WriteThrough = false; return e.Encode(); }

    /// <summary>pte_swp_clear_flags.</summary>
    public static ulong ClearFlags(ulong pte)
    {
        var e = DecodedEntry.Decode(pte);
        e.Writable = e.UserMode = e.WriteThrough = false;
        return e.Encode();
    }

    /// <summary>is_swap_pte: neither none nor present.</summary>
    public static bool IsSwapPte(ulong pte) => !OraclePte.None(pte) && !OraclePte.Present(pte);

    // ---- classification of swp_entry_t values ----

    public static bool IsMigration(ulong val) { ulong t = EntryType(val); return t == MigrationRead || t == MigrationReadExclusive || t == MigrationWrite; }
    public static bool IsHwpoison(ulong val) => EntryType(val) == Hwpoison;
    public static bool IsDevicePrivate(ulong val) { ulong t = EntryType(val); return t == DeviceRead || t == DeviceWrite; }
    public static bool IsDeviceExclusive(ulong val) => EntryType(val) == DeviceExclusive;
    public static bool IsPteMarker(ulong val) => EntryType(val) == PteMarker;
    /// <summary>non_swap_entry.</summary>
    public static bool IsNonSwap(ulong val) => EntryType(val) >= MaxSwapfiles;
}
