namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// The pte_* helpers and predicates of arch/x86/include/asm/pgtable.h (6.6+ shadow-stack era, DEVMAP
/// gone as in 6.17), recomputed on decoded fields. The emulated CPU has no shadow stacks, so the
/// pte_shstk term of pte_write is always false.
/// </summary>
public static class OraclePte
{
    /// <summary>X86_FEATURE_SHSTK: not offered by the emulated CPU.</summary>
    public const bool ShadowStackFeature = false;

    private const ulong Frames = DecodedEntry.AllFrameBits;

    // ---- getters and predicates (on a raw entry, or on one already decoded) ----

    /// <summary>pte_flags: everything outside bits 12..51.</summary>
    public static ulong Flags(ulong pte) => Flags(DecodedEntry.Decode(pte));
    public static ulong Flags(DecodedEntry e) { e.Frame = 0; return e.Encode(); }
    /// <summary>pte_pfn.</summary>
    public static ulong Pfn(ulong pte) => Pfn(DecodedEntry.Decode(pte));
    public static ulong Pfn(in DecodedEntry e) => EntryRules.FrameOf(e, Frames);
    public static bool None(ulong pte) => None(DecodedEntry.Decode(pte));
    public static bool None(DecodedEntry e) { e.Accessed = e.Dirty = false; return e.IsBlank; }
    /// <summary>pte_present: P, or PROTNONE (G) on a non-present entry.</summary>
    public static bool Present(ulong pte) => Present(DecodedEntry.Decode(pte));
    public static bool Present(in DecodedEntry e) => e.Present || e.Global;
    public static bool Protnone(ulong pte) => Protnone(DecodedEntry.Decode(pte));
    public static bool Protnone(in DecodedEntry e) => e.Global && !e.Present;
    public static bool Shstk(in DecodedEntry e) => ShadowStackFeature && !e.Writable && e.Dirty;
    public static bool Write(ulong pte) => Write(DecodedEntry.Decode(pte));
    public static bool Write(in DecodedEntry e) => e.Writable || Shstk(e);
    /// <summary>pte_dirty: D or SAVED_DIRTY.</summary>
    public static bool Dirty(ulong pte) => Dirty(DecodedEntry.Decode(pte));
    public static bool Dirty(in DecodedEntry e) => e.Dirty || e.SavedDirty;
    public static bool Young(ulong pte) => DecodedEntry.Decode(pte).Accessed;
    public static bool User(ulong pte) => DecodedEntry.Decode(pte).UserMode;
    public static bool Exec(ulong pte) => !DecodedEntry.Decode(pte).ExecuteDisable;
    public static bool Global(ulong pte) => DecodedEntry.Decode(pte).Global;
    public static bool Special(ulong pte) => DecodedEntry.Decode(pte).Special;
    public static bool SoftDirty(ulong pte) => DecodedEntry.Decode(pte).SoftDirty;
    public static bool UffdWp(ulong pte) => DecodedEntry.Decode(pte).UffdWp;
    public static bool Huge(ulong pte) => DecodedEntry.Decode(pte).PageSize;

    // ---- constructors ----

    /// <summary>pfn_pte.</summary>
    public static ulong PfnPte(ulong pfn, ulong pgprot) => EntryRules.Build(pfn, pgprot, Frames);

    // ---- helpers ----

    public static ulong SetFlags(ulong pte, ulong set) => pte | set;
    public static ulong ClearFlags(ulong pte, ulong clear) => pte & ~clear;

    public static ulong MkSavedDirty(ulong pte) { var e = DecodedEntry.Decode(pte); EntryRules.ParkDirtyIfReadOnly(ref e); return e.Encode(); }
    public static ulong ClearSavedDirty(ulong pte) { var e = DecodedEntry.Decode(pte); EntryRules.UnparkDirtyIfWritable(ref e); return e.Encode(); }

    /// <summary>pte_wrprotect: drop write permission, then park D.</summary>
    public static ulong Wrprotect(ulong pte)
    {
        var e = DecodedEntry.Decode(pte);
        e.Writable = false;
        EntryRules.ParkDirtyIfReadOnly(ref e);
        return e.Encode();
    }

    /// <summary>pte_mkwrite_novma: grant write permission only.</summary>
    public static ulong MkWriteNovma(ulong pte) { var e = DecodedEntry.Decode(pte); e.Writable = true; return e.Encode(); }

    /// <summary>pte_mkwrite(pte, vma) for a VMA without VM_SHADOW_STACK (arch/x86/mm/pgtable.c).</summary>
    public static ulong MkWrite(ulong pte)
    {
        var e = DecodedEntry.Decode(pte);
        e.Writable = true;
        EntryRules.UnparkDirtyIfWritable(ref e);
        return e.Encode();
    }

    /// <summary>pte_mkwrite_shstk: the VM_SHADOW_STACK branch of pte_mkwrite.</summary>
    public static ulong MkWriteShstk(ulong pte)
    {
        var e = DecodedEntry.Decode(pte);
        e.Writable = false;
        e.Dirty = true;
        return e.Encode();
    }

    /// <summary>pte_mkdirty: D and SOFT_DIRTY, then park D if read-only.</summary>
    public static ulong MkDirty(ulong pte)
    {
        var e = DecodedEntry.Decode(pte);
        e.Dirty = true;
        e.SoftDirty = true;
        EntryRules.ParkDirtyIfReadOnly(ref e);
        return e.Encode();
    }

    /// <summary>pte_mkclean: both dirty bits go.</summary>
    public static ulong MkClean(ulong pte)
    {
        var e = DecodedEntry.Decode(pte);
        e.Dirty = false;
        e.SavedDirty = false;
        return e.Encode();
    }

    public static ulong MkYoung(ulong pte) { var e = DecodedEntry.Decode(pte); e.Accessed = true; return e.Encode(); }
    public static ulong MkOld(ulong pte) { var e = DecodedEntry.Decode(pte); e.Accessed = false; return e.Encode(); }
    public static ulong MkSpecial(ulong pte) { var e = DecodedEntry.Decode(pte); e.Special = true; return e.Encode(); }
    public static ulong MkExec(ulong pte) { var e = DecodedEntry.Decode(pte); e.ExecuteDisable = false; return e.Encode(); }
    public static ulong MkHuge(ulong pte) { var e = DecodedEntry.Decode(pte); e.PageSize = true; return e.Encode(); }
    public static ulong ClrHuge(ulong pte) { var e = DecodedEntry.Decode(pte); e.PageSize = false; return e.Encode(); }
    public static ulong MkGlobal(ulong pte) { var e = DecodedEntry.Decode(pte); e.Global = true; return e.Encode(); }
    public static ulong ClrGlobal(ulong pte) { var e = DecodedEntry.Decode(pte); e.Global = false; return e.Encode(); }
    public static ulong MkSoftDirty(ulong pte) { var e = DecodedEntry.Decode(pte); e.SoftDirty = true; return e.Encode(); }
    public static ulong ClearSoftDirty(ulong pte) { var e = DecodedEntry.Decode(pte); e.SoftDirty = false; return e.Encode(); }

    /// <summary>pte_mkuffd_wp: mark, then write-protect (pte_wrprotect).</summary>
    public static ulong MkUffdWp(ulong pte) { var e = DecodedEntry.Decode(pte); e.UffdWp = true; return Wrprotect(e.Encode()); }
    public static ulong ClearUffdWp(ulong pte) { var e = DecodedEntry.Decode(pte); e.UffdWp = false; return e.Encode(); }

    /// <summary>
    /// pte_modify: the fields of _PAGE_CHG_MASK (address, PCD, PWT, SPECIAL, A, D, SAVED_DIRTY,
    /// SOFT_DIRTY, UFFD_WP, PAT) stay; P, R/W, U/S, G, bits 52..57, the protection key and XD come
    /// from <paramref name="newprot"/>. Then the inversion guard, then the saved-dirty move chosen by
    /// the old R/W.
    /// </summary>
    public static ulong Modify(ulong pte, ulong newprot)
    {
        DecodedEntry old = DecodedEntry.Decode(pte);
        DecodedEntry result = TakeProtection(old, DecodedEntry.Decode(newprot));
        result.PageSize = old.PageSize; // _PAGE_PAT
        EntryRules.FlipFrameOnInversionChange(old, ref result, Frames);
        if (old.Writable)
            EntryRules.ParkDirtyIfReadOnly(ref result);
        else
            EntryRules.UnparkDirtyIfWritable(ref result);
        return result.Encode();
    }

    /// <summary>pte_advance_pfn: step the frame by <paramref name="nr"/>; an inverted frame steps down.</summary>
    public static ulong AdvancePfn(ulong pte, ulong nr)
    {
        // The kernel adds nr << PAGE_SHIFT to the whole word. Bits 0..11 never change; bits 12..63
        // behave as one 52-bit counter that wraps.
        const ulong Counter52 = (1UL << 52) - 1;
        ulong low = pte & 0xFFF;
        ulong upper = pte >> 12;
        upper = DecodedEntry.Decode(pte).KeepsInvertedFrame ? (upper - nr) & Counter52 : (upper + nr) & Counter52;
        return (upper << 12) | low;
    }

    /// <summary>
    /// The part of pte_modify / pmd_modify / pud_modify common to all three: every field the change
    /// masks share (_COMMON_PAGE_CHG_MASK) comes from <paramref name="old"/>, the rest from
    /// <paramref name="newprot"/>. The level-specific bit 7 (PAT or PSE) and PAT_LARGE are left to the caller.
    /// </summary>
    internal static DecodedEntry TakeProtection(in DecodedEntry old, in DecodedEntry newprot) => new()
    {
        // from newprot
        Present = newprot.Present,
        Writable = newprot.Writable,
        UserMode = newprot.UserMode,
        Global = newprot.Global,
        HighUnused = newprot.HighUnused,
        Software4 = newprot.Software4, // DEVMAP left _COMMON_PAGE_CHG_MASK with 6.17
        ProtectionKey = newprot.ProtectionKey,
        ExecuteDisable = newprot.ExecuteDisable,
        PageSize = newprot.PageSize,
        // from the old entry
        Frame = old.Frame,
        WriteThrough = old.WriteThrough,
        CacheDisable = old.CacheDisable,
        Special = old.Special,
        Accessed = old.Accessed,
        Dirty = old.Dirty,
        SavedDirty = old.SavedDirty,
        SoftDirty = old.SoftDirty,
        UffdWp = old.UffdWp,
    };
}
