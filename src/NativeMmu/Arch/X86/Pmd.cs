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

/// <summary>pud_t: a PMD-table pointer or a 1 GiB leaf.</summary>
public readonly struct Pud : IEquatable<Pud>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pud(ulong value) => Value = value;

    /// <summary>pud_pfn_mask.</summary>
    public ulong PfnMask => (Value & Pse) != 0 ? PhysicalPudPageMask : PtePfnMask;
    public ulong Flags => Value & ~PfnMask;
    public bool None { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & ~KnlErratumMask) == 0; }
    /// <summary>pud_present: PRESENT only.</summary>
    public bool Present => (Value & PageTableBits.Present) != 0;
    public bool Leaf => (Value & Pse) != 0;
    /// <summary>pud_bad: extra bits beyond _KERNPG_TABLE|USER are bad; missing ones are not.</summary>
    public bool Bad => (Flags & ~(KernPgTable | PageTableBits.User)) != 0;
    public bool Write => (Value & Rw) != 0;
    public bool Dirty => (Value & DirtyBits) != 0;
    public bool Young => (Value & Accessed) != 0;

    public ulong Pfn { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => ((Value ^ EntryBits.ProtnoneMask(Value)) & PfnMask) >> Geometry.PageShift; }

    /// <summary>pfn_pud.</summary>
    public static Pud PfnPud(ulong pfn, ulong pgprot)
    {
        ulong phys = pfn << Geometry.PageShift;
        phys ^= EntryBits.ProtnoneMask(pgprot);
        phys &= PhysicalPudPageMask;
        return new Pud(phys | EntryBits.CheckPgprot(pgprot));
    }

    /// <summary>pud_populate: a PMD table pointer.</summary>
    public static Pud MkTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | PageTable);
    public static Pud MkKernelTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | KernPgTable);
    public Pud MkHuge() => new(Value | Pse);
    public Pud MkOld() => new(Value & ~Accessed);
    public Pud MkYoung() => new(Value | Accessed);
    public Pud MkClean() => new(Value & ~DirtyBits);
    public Pud MkDirty() => new(EntryBits.MkSavedDirtyShift(Value | PageTableBits.Dirty | PageTableBits.SoftDirty));
    public Pud Wrprotect() => new(EntryBits.MkSavedDirtyShift(Value & ~Rw));
    public Pud MkWrite() => new(EntryBits.ClearSavedDirtyShift(Value | Rw));

    public bool Equals(Pud other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is Pud p && Equals(p);
    public override int GetHashCode() => Value.GetHashCode();
    public static bool operator ==(Pud a, Pud b) => a.Value == b.Value;
    public static bool operator !=(Pud a, Pud b) => a.Value != b.Value;
    public override string ToString() => $"pud {Value:x16}";
}

/// <summary>p4d_t: a PUD-table pointer. With 4-level paging the level is folded into the PGD.</summary>
public readonly struct P4d : IEquatable<P4d>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public P4d(ulong value) => Value = value;

    public ulong Flags => Value & PteFlagsMask;
    public bool None { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & ~KnlErratumMask) == 0; }
    public bool Present => (Value & PageTableBits.Present) != 0;
    /// <summary>p4d_bad, with CONFIG_PAGE_TABLE_ISOLATION: NX is ignored too.</summary>
    public bool Bad => (Flags & ~(KernPgTable | PageTableBits.User | Nx)) != 0;
    /// <summary>p4d_pfn: no PROT_NONE inversion at this level.</summary>
    public ulong Pfn { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & PtePfnMask) >> Geometry.PageShift; }
    /// <summary>p4d_populate.</summary>
    public static P4d MkTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | PageTable);
    public static P4d MkKernelTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | KernPgTable);

    public bool Equals(P4d other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is P4d p && Equals(p);
    public override int GetHashCode() => Value.GetHashCode();
    public static bool operator ==(P4d a, P4d b) => a.Value == b.Value;
    public static bool operator !=(P4d a, P4d b) => a.Value != b.Value;
    public override string ToString() => $"p4d {Value:x16}";
}

/// <summary>pgd_t: the root. Its predicates depend on whether LA57 is enabled (pgtable_l5_enabled()).</summary>
public readonly struct Pgd : IEquatable<Pgd>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pgd(ulong value) => Value = value;

    public ulong Flags => Value & PteFlagsMask;
    /// <summary>pgd_none: never none with a folded P4D; no KNL workaround at this level.</summary>
    public bool IsNone(PagingMode mode) => mode.L5Enabled && Value == 0;
    /// <summary>pgd_present: always with a folded P4D.</summary>
    public bool IsPresent(PagingMode mode) => !mode.L5Enabled || (Value & PageTableBits.Present) != 0;
    /// <summary>pgd_bad: only checked with 5-level paging (PTI: NX ignored).</summary>
    public bool IsBad(PagingMode mode) => mode.L5Enabled && (Flags & ~(PageTableBits.User | Nx)) != KernPgTable;
    public ulong Pfn => (Value & PtePfnMask) >> Geometry.PageShift;
    /// <summary>pgd_populate (5-level): a P4D table pointer.</summary>
    public static Pgd MkTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | PageTable);
    public static Pgd MkKernelTable(ulong tablePfn) => new((tablePfn << Geometry.PageShift) | KernPgTable);

    public bool Equals(Pgd other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is Pgd p && Equals(p);
    public override int GetHashCode() => Value.GetHashCode();
    public static bool operator ==(Pgd a, Pgd b) => a.Value == b.Value;
    public static bool operator !=(Pgd a, Pgd b) => a.Value != b.Value;
    public override string ToString() => $"pgd {Value:x16}";
}
