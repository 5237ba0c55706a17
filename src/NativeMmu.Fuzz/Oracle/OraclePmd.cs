namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// pmd_* helpers and predicates recomputed on decoded fields. A PMD is a PTE-table pointer (bit 7
/// clear) or a 2 MiB leaf (bit 7 = PS set); in a leaf, address bits 12..20 are not address
/// (bit 12 is PAT), which is what pmd_pfn_mask encodes.
/// </summary>
public static class OraclePmd
{
    private static ulong AddressFrames(in DecodedEntry e) => e.PageSize ? DecodedEntry.PmdLeafFrameBits : DecodedEntry.AllFrameBits;

    // ---- getters and predicates (on a raw entry, or on one already decoded) ----

    /// <summary>pmd_pfn_mask.</summary>
    public static ulong PfnMask(ulong pmd) => PfnMask(DecodedEntry.Decode(pmd));
    public static ulong PfnMask(in DecodedEntry e) => EntryRules.AddressMask(AddressFrames(e));
    /// <summary>pmd_flags: a leaf's bits 12..20 count as flags.</summary>
    public static ulong Flags(ulong pmd) => Flags(DecodedEntry.Decode(pmd));
    public static ulong Flags(DecodedEntry e) { e.Frame &= ~AddressFrames(e); return e.Encode(); }
    /// <summary>pmd_pfn: un-inverted, masked by pmd_pfn_mask.</summary>
    public static ulong Pfn(ulong pmd) => Pfn(DecodedEntry.Decode(pmd));
    public static ulong Pfn(in DecodedEntry e) => EntryRules.FrameOf(e, AddressFrames(e));
    public static bool None(ulong pmd) => OraclePte.None(DecodedEntry.Decode(pmd));
    public static bool None(in DecodedEntry e) => OraclePte.None(e);
    /// <summary>pmd_present: P, PROTNONE or PS (PS survives the split's temporary P=0).</summary>
    public static bool Present(ulong pmd) => Present(DecodedEntry.Decode(pmd));
    public static bool Present(in DecodedEntry e) => e.Present || e.Global || e.PageSize;
    public static bool Leaf(ulong pmd) => DecodedEntry.Decode(pmd).PageSize;
    /// <summary>pmd_trans_huge after DEVMAP's removal: PS alone.</summary>
    public static bool TransHuge(ulong pmd) => DecodedEntry.Decode(pmd).PageSize;
    public static bool Protnone(ulong pmd) => OraclePte.Protnone(DecodedEntry.Decode(pmd));

    /// <summary>pmd_bad: apart from U/S and A, the flags must be exactly P, R/W and D.</summary>
    public static bool Bad(ulong pmd) => Bad(DecodedEntry.Decode(pmd));

    public static bool Bad(in DecodedEntry e)
    {
        DecodedEntry f = DecodedEntry.Decode(Flags(e));
        f.UserMode = false;
        f.Accessed = false;
        return f != new DecodedEntry { Present = true, Writable = true, Dirty = true };
    }

    public static bool Shstk(in DecodedEntry e) => OraclePte.ShadowStackFeature && !e.Writable && e.Dirty && e.PageSize;
    public static bool Write(ulong pmd) => Write(DecodedEntry.Decode(pmd));
    public static bool Write(in DecodedEntry e) => e.Writable || Shstk(e);
    public static bool Dirty(ulong pmd) => OraclePte.Dirty(DecodedEntry.Decode(pmd));
    public static bool Young(ulong pmd) => DecodedEntry.Decode(pmd).Accessed;
    public static bool User(ulong pmd) => DecodedEntry.Decode(pmd).UserMode;
    public static bool SoftDirty(ulong pmd) => DecodedEntry.Decode(pmd).SoftDirty;
    public static bool UffdWp(ulong pmd) => DecodedEntry.Decode(pmd).UffdWp;
    public static bool Special(ulong pmd) => DecodedEntry.Decode(pmd).Special;

    // ---- constructors ----

    /// <summary>pfn_pmd: the frame is cut to 2 MiB granularity whatever the pgprot.</summary>
    public static ulong PfnPmd(ulong pfn, ulong pgprot) => EntryRules.Build(pfn, pgprot, DecodedEntry.PmdLeafFrameBits);
    /// <summary>pmd_populate: a user PTE-table pointer (_PAGE_TABLE).</summary>
    public static ulong Populate(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: true);
    /// <summary>pmd_populate_kernel: a kernel PTE-table pointer (_KERNPG_TABLE).</summary>
    public static ulong PopulateKernel(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: false);

    // ---- helpers ----

    public static ulong SetFlags(ulong pmd, ulong set) => pmd | set;
    public static ulong ClearFlags(ulong pmd, ulong clear) => pmd & ~clear;
    public static ulong MkHuge(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.PageSize = true; return e.Encode(); }
    public static ulong MkOld(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.Accessed = false; return e.Encode(); }
    public static ulong MkYoung(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.Accessed = true; return e.Encode(); }
    public static ulong MkSpecial(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.Special = true; return e.Encode(); }
    public static ulong MkSoftDirty(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.SoftDirty = true; return e.Encode(); }
    public static ulong ClearSoftDirty(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.SoftDirty = false; return e.Encode(); }
    public static ulong MkSavedDirty(ulong pmd) { var e = DecodedEntry.Decode(pmd); EntryRules.ParkDirtyIfReadOnly(ref e); return e.Encode(); }
    public static ulong ClearSavedDirty(ulong pmd) { var e = DecodedEntry.Decode(pmd); EntryRules.UnparkDirtyIfWritable(ref e); return e.Encode(); }
    public static ulong MkWriteNovma(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.Writable = true; return e.Encode(); }

    public static ulong MkClean(ulong pmd)
    {
        var e = DecodedEntry.Decode(pmd);
        e.Dirty = false;
        e.SavedDirty = false;
        return e.Encode();
    }

    public static ulong MkDirty(ulong pmd)
    {
        var e = DecodedEntry.Decode(pmd);
        e.Dirty = true;
        e.SoftDirty = true;
        EntryRules.ParkDirtyIfReadOnly(ref e);
        return e.Encode();
    }

    public static ulong Wrprotect(ulong pmd)
    {
        var e = DecodedEntry.Decode(pmd);
        e.Writable = false;
        EntryRules.ParkDirtyIfReadOnly(ref e);
        return e.Encode();
    }

    /// <summary>pmd_mkwrite(pmd, vma) for a VMA without VM_SHADOW_STACK.</summary>
    public static ulong MkWrite(ulong pmd)
    {
        var e = DecodedEntry.Decode(pmd);
        e.Writable = true;
        EntryRules.UnparkDirtyIfWritable(ref e);
        return e.Encode();
    }

    public static ulong MkUffdWp(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.UffdWp = true; return Wrprotect(e.Encode()); }
    public static ulong ClearUffdWp(ulong pmd) { var e = DecodedEntry.Decode(pmd); e.UffdWp = false; return e.Encode(); }

    /// <summary>
    /// pmd_mkinvalid: rebuilt through pfn_pmd from pmd_pfn and pmd_flags minus P and PROTNONE, so a
    /// non-blank result keeps its frame inverted. PS stays.
    /// </summary>
    public static ulong MkInvalid(ulong pmd)
    {
        DecodedEntry prot = DecodedEntry.Decode(Flags(pmd));
        prot.Present = false;
        prot.Global = false;
        return PfnPmd(Pfn(pmd), prot.Encode());
    }

    /// <summary>
    /// pmd_modify: like pte_modify but with _HPAGE_CHG_MASK (PS and PAT_LARGE stay, bit 7 is PS) and
    /// the inversion guard over the 2 MiB address bits. Whether D survives depends on the kernel:
    /// 6.6 to 6.17 drop it ("_HPAGE_CHG_MASK &amp; ~_PAGE_DIRTY", what REFERENCE.md §1.5 records);
    /// commit f7491d7c81db ("x86/mm: Fix user-space data loss with MADV_FREE and THP", September 2025)
    /// keeps it, like pte_modify and pud_modify do.
    /// </summary>
    public static ulong Modify(ulong pmd, ulong newprot)
    {
        DecodedEntry old = DecodedEntry.Decode(pmd);
        DecodedEntry result = OraclePte.TakeProtection(old, DecodedEntry.Decode(newprot));
        result.PageSize = old.PageSize; // _PAGE_PSE; PAT_LARGE is frame bit 0, already kept
        result.Dirty = old.Dirty; // kept since the 2025 MADV_FREE/THP data-loss fix
        EntryRules.FlipFrameOnInversionChange(old, ref result, DecodedEntry.PmdLeafFrameBits);
        if (old.Writable)
            EntryRules.ParkDirtyIfReadOnly(ref result);
        else
            EntryRules.UnparkDirtyIfWritable(ref result);
        return result.Encode();
    }
}
