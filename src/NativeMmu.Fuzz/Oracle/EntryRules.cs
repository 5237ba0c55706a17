namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// Rules every level shares, stated on decoded fields: the shadow-stack-era saved-dirty moves
/// (arch/x86/include/asm/pgtable.h, 6.6+), the L1TF frame inversion (pgtable-invert.h) and the
/// pfn_pte/pfn_pmd/pfn_pud construction.
/// </summary>
public static class EntryRules
{
    /// <summary>
    /// mksaveddirty_shift: an entry without write permission may not keep D set (R/W=0, D=1 would read
    /// as a shadow-stack page), so D is parked in SAVED_DIRTY. SAVED_DIRTY is only ever added to here.
    /// </summary>
    public static void ParkDirtyIfReadOnly(ref DecodedEntry e)
    {
        if (e.Writable)
            return;
        if (e.Dirty)
            e.SavedDirty = true;
        e.Dirty = false;
    }

    /// <summary>clear_saveddirty_shift: a writable entry takes D back from SAVED_DIRTY.</summary>
    public static void UnparkDirtyIfWritable(ref DecodedEntry e)
    {
        if (!e.Writable)
            return;
        if (e.SavedDirty)
            e.Dirty = true;
        e.SavedDirty = false;
    }

    /// <summary>
    /// The frame number an entry names: un-inverted when the entry keeps its frame inverted, then
    /// restricted to <paramref name="addressFrameBits"/> (pte_pfn / pmd_pfn / pud_pfn).
    /// </summary>
    public static ulong FrameOf(in DecodedEntry e, ulong addressFrameBits)
    {
        ulong frame = e.KeepsInvertedFrame ? ~e.Frame & DecodedEntry.AllFrameBits : e.Frame;
        return frame & addressFrameBits;
    }

    /// <summary>
    /// pfn_pte / pfn_pmd / pfn_pud: the pgprot's own fields, with the frame number (inverted when the
    /// pgprot is non-present and non-zero) OR-ed into the address field within
    /// <paramref name="addressFrameBits"/>. Frame bits above bit 39 fall off the top of the address field.
    /// </summary>
    public static ulong Build(ulong pfn, ulong pgprot, ulong addressFrameBits)
    {
        DecodedEntry prot = DecodedEntry.Decode(pgprot);
        ulong frame = pfn & DecodedEntry.AllFrameBits;
        if (prot.KeepsInvertedFrame)
            frame = ~frame & DecodedEntry.AllFrameBits;
        frame &= addressFrameBits;
        prot.Frame |= frame;
        return prot.Encode();
    }

    /// <summary>
    /// flip_protnone_guard: when an update moves an entry into or out of the inverted state, the
    /// address bits selected by <paramref name="addressFrameBits"/> are inverted.
    /// </summary>
    public static void FlipFrameOnInversionChange(in DecodedEntry before, ref DecodedEntry after, ulong addressFrameBits)
    {
        if (before.KeepsInvertedFrame != after.KeepsInvertedFrame)
            after.Frame ^= addressFrameBits;
    }

    /// <summary>The raw mask that selects <paramref name="addressFrameBits"/> (pXd_pfn_mask).</summary>
    public static ulong AddressMask(ulong addressFrameBits) => new DecodedEntry { Frame = addressFrameBits }.Encode();

    /// <summary>A table pointer: frame number shifted into place, then the given pointer flags (pXd_populate).</summary>
    public static ulong TablePointer(ulong tablePfn, bool user)
    {
        // The kernel shifts page_to_pfn() << PAGE_SHIFT without masking, so oversized frame numbers
        // spill into the bits above the address field; decode that spill rather than dropping it.
        DecodedEntry e = DecodedEntry.Decode(tablePfn << 12);
        e.Present = true;
        e.Writable = true;
        e.UserMode |= user;
        e.Accessed = true;
        e.Dirty = true;
        return e.Encode();
    }
}
