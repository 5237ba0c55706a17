using System.Runtime.CompilerServices;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Arch.X86;

/// <summary>
/// pmd_t: either a pointer to a PTE table (PSE clear) or a 2 MiB leaf (PSE set). The PFN mask depends
/// on PSE (pmd_pfn_mask), which keeps PAT_LARGE out of a huge entry's PFN.
/// </summary>
public readonly struct Pmd : IEquatable<Pmd>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pmd(ulong value) => Value = value;

    /// <summary>pmd_pfn_mask.</summary>
    public ulong PfnMask { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & Pse) != 0 ? PhysicalPmdPageMask : PtePfnMask; }
    /// <summary>pmd_flags: bits 12..20 of a leaf count as flags.</summary>
    public ulong Flags => Value & ~PfnMask;

    /// <summary>pmd_none: ignores A and D.</summary>
    public bool None { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & ~KnlErratumMask) == 0; }
    /// <summary>pmd_present: PRESENT, PROTNONE or PSE (a THP split clears PRESENT but keeps PSE).</summary>
    public bool Present => (Value & (PageTableBits.Present | ProtNone | Pse)) != 0;
    /// <summary>pmd_leaf / pmd_trans_huge (DEVMAP gone).</summary>
    public bool Leaf { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & Pse) != 0; }
    public bool TransHuge => Leaf;
    public bool Protnone => (Value & (ProtNone | PageTableBits.Present)) == ProtNone;
    /// <summary>pmd_bad: a table pointer's flags must be exactly P|RW|D, with USER and A free.</summary>
    public bool Bad => (Flags & ~(PageTableBits.User | Accessed)) != (KernPgTable & ~Accessed);
    public bool Write => (Value & Rw) != 0;
    public bool Dirty => (Value & DirtyBits) != 0;
    public bool Young => (Value & Accessed) != 0;
    public bool User => (Value & PageTableBits.User) != 0;
    public bool SoftDirty => (Value & PageTableBits.SoftDirty) != 0;

    /// <summary>pmd_pfn: undoes the L1TF inversion, masks by pmd_pfn_mask.</summary>
    public ulong Pfn
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ((Value ^ EntryBits.ProtnoneMask(Value)) & PfnMask) >> Geometry.PageShift;
    }

    /// <summary>pfn_pmd.</summary>
    public static Pmd PfnPmd(ulong pfn, ulong pgprot)
    {
        ulong phys = pfn << Geometry.PageShift;
        phys ^= EntryBits.ProtnoneMask(pgprot);
        phys &= PhysicalPmdPageMask;
        return new Pmd(phys | EntryBits.CheckPgprot(pgprot));
    }

    /// <summary>pmd_populate: a user PTE table pointer (_PAGE_TABLE).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd MkTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | PageTable);
    /// <summary>pmd_populate_kernel: a kernel PTE table pointer (_KERNPG_TABLE).</summary>
    public static Pmd MkKernelTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | KernPgTable);

    public Pmd SetFlags(ulong set) => new(Value | set);
    public Pmd ClearFlags(ulong clear) => new(Value & ~clear);
    public Pmd MkHuge() => new(Value | Pse);
    public Pmd MkOld() => new(Value & ~Accessed);
    public Pmd MkYoung() => new(Value | Accessed);
    public Pmd MkClean() => new(Value & ~DirtyBits);
    public Pmd MkDirty() => new(EntryBits.MkSavedDirtyShift(Value | PageTableBits.Dirty | PageTableBits.SoftDirty));
    public Pmd Wrprotect() => new(EntryBits.MkSavedDirtyShift(Value & ~Rw));
    public Pmd MkWriteNovma() => new(Value | Rw);
    public Pmd MkWrite() => new(EntryBits.ClearSavedDirtyShift(Value | Rw));
    public Pmd MkSavedDirty() => new(EntryBits.MkSavedDirtyShift(Value));
    public Pmd ClearSavedDirty() => new(EntryBits.ClearSavedDirtyShift(Value));
    public Pmd MkSoftDirty() => new(Value | PageTableBits.SoftDirty);
    public Pmd ClearSoftDirty() => new(Value & ~PageTableBits.SoftDirty);

    /// <summary>pmd_mkinvalid: rebuild without PRESENT and PROTNONE, so the PFN ends up inverted; PSE stays.</summary>
    public Pmd MkInvalid() => PfnPmd(Pfn, Flags & ~(PageTableBits.Present | ProtNone));

    /// <summary>
    /// pmd_modify: keep _HPAGE_CHG_MASK, take the rest from newprot. DIRTY is kept, as since
    /// "x86/mm: Fix user-space data loss with MADV_FREE and THP" (2025): dropping it made a dirty THP
    /// look clean after mprotect, and lazyfree reclaim then discarded written data.
    /// </summary>
    public Pmd Modify(ulong newprot)
    {
        ulong oldval = Value;
        ulong val = oldval & HPageChgMask;
        val |= EntryBits.CheckPgprot(newprot) & ~HPageChgMask;
        val = EntryBits.FlipProtnoneGuard(oldval, val, PhysicalPmdPageMask);
        return new Pmd((oldval & Rw) != 0 ? EntryBits.MkSavedDirtyShift(val) : EntryBits.ClearSavedDirtyShift(val));
    }

    public bool Equals(Pmd other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is Pmd p && Equals(p);
    public override int GetHashCode() => Value.GetHashCode();
    public static bool operator ==(Pmd a, Pmd b) => a.Value == b.Value;
    public static bool operator !=(Pmd a, Pmd b) => a.Value != b.Value;
    public override string ToString() => $"pmd {Value:x16}";
}
