namespace NativeMmu.Fuzz.Oracle;

/// <summary>pud_* helpers and predicates: a PMD-table pointer or a 1 GiB leaf (bits 12..29 not address).</summary>
public static class OraclePud
{
    private static ulong AddressFrames(in DecodedEntry e) => e.PageSize ? DecodedEntry.PudLeafFrameBits : DecodedEntry.AllFrameBits;

    /// <summary>pud_pfn_mask.</summary>
    public static ulong PfnMask(ulong pud) => PfnMask(DecodedEntry.Decode(pud));
    public static ulong PfnMask(in DecodedEntry e) => EntryRules.AddressMask(AddressFrames(e));
    public static ulong Flags(ulong pud) => Flags(DecodedEntry.Decode(pud));
    public static ulong Flags(DecodedEntry e) { e.Frame &= ~AddressFrames(e); return e.Encode(); }
    public static ulong Pfn(ulong pud) => Pfn(DecodedEntry.Decode(pud));
    public static ulong Pfn(in DecodedEntry e) => EntryRules.FrameOf(e, AddressFrames(e));
    public static bool None(ulong pud) => OraclePte.None(DecodedEntry.Decode(pud));
    /// <summary>pud_present: P only.</summary>
    public static bool Present(ulong pud) => DecodedEntry.Decode(pud).Present;
    public static bool Leaf(ulong pud) => DecodedEntry.Decode(pud).PageSize;

    /// <summary>pud_bad: any flag beyond P, R/W, U/S, A and D is bad; missing ones are not.</summary>
    public static bool Bad(ulong pud) => Bad(DecodedEntry.Decode(pud));

    public static bool Bad(in DecodedEntry e)
    {
        DecodedEntry f = DecodedEntry.Decode(Flags(e));
        f.Present = f.Writable = f.UserMode = f.Accessed = f.Dirty = false;
        return !f.IsBlank;
    }

    /// <summary>pud_write: R/W only (no shadow-stack term at this level).</summary>
    public static bool Write(ulong pud) => DecodedEntry.Decode(pud).Writable;
    public static bool Dirty(ulong pud) => OraclePte.Dirty(DecodedEntry.Decode(pud));
    public static bool Young(ulong pud) => DecodedEntry.Decode(pud).Accessed;

    /// <summary>pfn_pud: the frame is cut to 1 GiB granularity.</summary>
    public static ulong PfnPud(ulong pfn, ulong pgprot) => EntryRules.Build(pfn, pgprot, DecodedEntry.PudLeafFrameBits);
    public static ulong Populate(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: true);
    public static ulong PopulateKernel(ulong tablePfn) => EntryRules.TablePointer(tablePfn, user: false);

    public static ulong MkHuge(ulong pud) { var e = DecodedEntry.Decode(pud); e.PageSize = true; return e.Encode(); }
    public static ulong MkOld(ulong pud) { var e = DecodedEntry.Decode(pud); e.Accessed = false; return e.Encode(); }
    public static ulong MkYoung(ulong pud) { var e = DecodedEntry.Decode(pud); e.Accessed = true; return e.Encode(); }
    public static ulong MkSavedDirty(ulong pud) { var e = DecodedEntry.Decode(pud); EntryRules.ParkDirtyIfReadOnly(ref e); return e.Encode(); }
    public static ulong ClearSavedDirty(ulong pud) { var e = DecodedEntry.Decode(pud); EntryRules.UnparkDirtyIfWritable(ref e); return e.Encode(); }

    public static ulong MkClean(ulong pud)
    {
        var e = DecodedEntry.Decode(pud);
        e.Dirty = false;
        e.SavedDirty = false;
        return e.Encode();
    }

    public static ulong MkDirty(ulong pud)
    {
        var e = DecodedEntry.Decode(pud);
        e.Dirty = true;
        e.SoftDirty = true;
        EntryRules.ParkDirtyIfReadOnly(ref e);
        return e.Encode();
    }

    public static ulong Wrprotect(ulong pud)
    {
        var e = DecodedEntry.Decode(pud);
        e.Writable = false;
        EntryRules.ParkDirtyIfReadOnly(ref e);
        return e.Encode();
    }

    /// <summary>pud_mkwrite: grant write permission and take D back from SAVED_DIRTY.</summary>
    public static ulong MkWrite(ulong pud)
    {
        var e = DecodedEntry.Decode(pud);
        e.Writable = true;
        EntryRules.UnparkDirtyIfWritable(ref e);
        return e.Encode();
    }

    /// <summary>pud_mkinvalid: like pmd_mkinvalid, at 1 GiB granularity.</summary>
    public static ulong MkInvalid(ulong pud)
    {
        DecodedEntry prot = DecodedEntry.Decode(Flags(pud));
        prot.Present = false;
        prot.Global = false;
        return PfnPud(Pfn(pud), prot.Encode());
    }

    /// <summary>pud_modify: _HPAGE_CHG_MASK stays (D included), the guard works on the 1 GiB address bits.</summary>
    public static ulong Modify(ulong pud, ulong newprot)
    {
        DecodedEntry old = DecodedEntry.Decode(pud);
        DecodedEntry result = OraclePte.TakeProtection(old, DecodedEntry.Decode(newprot));
        result.PageSize = old.PageSize;
        EntryRules.FlipFrameOnInversionChange(old, ref result, DecodedEntry.PudLeafFrameBits);
        if (old.Writable)
            EntryRules.ParkDirtyIfReadOnly(ref result);
        else
            EntryRules.UnparkDirtyIfWritable(ref result);
        return result.Encode();
    }
}
