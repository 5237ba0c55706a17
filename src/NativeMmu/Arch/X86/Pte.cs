using System.Runtime.CompilerServices;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Arch.X86;

/// <summary>
/// pte_t: a 4 KiB leaf entry. A pure value: the pte_* helpers of arch/x86/include/asm/pgtable.h;
/// reading and writing entries in table frames belongs to <c>PageTableEntries</c> (the ptep_* side).
/// </summary>
public readonly struct Pte : IEquatable<Pte>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pte(ulong value) => Value = value;

    public static Pte Empty => default;

    /// <summary>pte_flags: everything outside bits 12..51.</summary>
    public ulong Flags { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Value & PteFlagsMask; }

    /// <summary>pte_none: only A and/or D set (the KNL erratum) still counts as none.</summary>
    public bool None { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & ~KnlErratumMask) == 0; }
    /// <summary>pte_present: PRESENT or PROTNONE.</summary>
    public bool Present { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & (PageTableBits.Present | ProtNone)) != 0; }
    /// <summary>pte_protnone: PROTNONE without PRESENT.</summary>
    public bool Protnone => (Value & (ProtNone | PageTableBits.Present)) == ProtNone;
    /// <summary>pte_write: RW (the emulated CPU has no shadow stacks, so pte_shstk is always false).</summary>
    public bool Write { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & Rw) != 0; }
    /// <summary>pte_dirty: DIRTY or SAVED_DIRTY.</summary>
    public bool Dirty { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & DirtyBits) != 0; }
    /// <summary>pte_young.</summary>
    public bool Young => (Value & Accessed) != 0;
    public bool User => (Value & PageTableBits.User) != 0;
    /// <summary>pte_exec: NX clear.</summary>
    public bool Exec => (Value & Nx) == 0;
    public bool Global => (Value & PageTableBits.Global) != 0;
    /// <summary>pte_special: no struct page behind it (the zero page, PFN maps).</summary>
    public bool Special { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (Value & PageTableBits.Special) != 0; }
    public bool SoftDirty => (Value & PageTableBits.SoftDirty) != 0;
    public bool UffdWp => (Value & PageTableBits.UffdWp) != 0;
    /// <summary>pte_huge: PSE (the PAT bit at this level).</summary>
    public bool Huge => (Value & Pse) != 0;

    /// <summary>pte_pfn: undoes the L1TF inversion of PROT_NONE entries.</summary>
    public ulong Pfn
    {
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        get => ((Value ^ EntryBits.ProtnoneMask(Value)) & PtePfnMask) >> Geometry.PageShift;
    }

    /// <summary>pfn_pte: PFN and pgprot, inverted when the pgprot is non-present (PROT_NONE).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte PfnPte(ulong pfn, ulong pgprot)
    {
        ulong phys = pfn << Geometry.PageShift;
        phys ^= EntryBits.ProtnoneMask(pgprot);
        phys &= PtePfnMask;
        return new Pte(phys | EntryBits.CheckPgprot(pgprot));
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pte SetFlags(ulong set) => new(Value | set);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pte ClearFlags(ulong clear) => new(Value & ~clear);

    public Pte MkSavedDirty() => new(EntryBits.MkSavedDirtyShift(Value));
    public Pte ClearSavedDirty() => new(EntryBits.ClearSavedDirtyShift(Value));

    /// <summary>pte_wrprotect: clear RW, then park a set DIRTY in SAVED_DIRTY.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pte Wrprotect() => new(EntryBits.MkSavedDirtyShift(Value & ~Rw));
    /// <summary>pte_mkwrite_novma: set RW only.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pte MkWriteNovma() => new(Value | Rw);
    /// <summary>pte_mkwrite for a VMA without VM_SHADOW_STACK: set RW and restore DIRTY from SAVED_DIRTY.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pte MkWrite() => new(EntryBits.ClearSavedDirtyShift(Value | Rw));
    /// <summary>pte_mkdirty: DIRTY and SOFT_DIRTY; lands in SAVED_DIRTY when RW is clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pte MkDirty() => new(EntryBits.MkSavedDirtyShift(Value | PageTableBits.Dirty | PageTableBits.SoftDirty));
    /// <summary>pte_mkclean: clear both dirty bits.</summary>
    public Pte MkClean() => new(Value & ~DirtyBits);
    /// <summary>pte_mkyoung.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Pte MkYoung() => new(Value | Accessed);
    /// <summary>pte_mkold.</summary>
    public Pte MkOld() => new(Value & ~Accessed);
    public Pte MkSpecial() => new(Value | PageTableBits.Special);
    public Pte MkExec() => new(Value & ~Nx);
    public Pte MkHuge() => new(Value | Pse);
    public Pte ClrHuge() => new(Value & ~Pse);
    public Pte MkGlobal() => new(Value | PageTableBits.Global);
    public Pte ClrGlobal() => new(Value & ~PageTableBits.Global);
    public Pte MkSoftDirty() => new(Value | PageTableBits.SoftDirty);
    public Pte ClearSoftDirty() => new(Value & ~PageTableBits.SoftDirty);
    /// <summary>pte_mkuffd_wp: set UFFD_WP and write-protect.</summary>
    public Pte MkUffdWp() => new Pte(Value | PageTableBits.UffdWp).Wrprotect();
    public Pte ClearUffdWp() => new(Value & ~PageTableBits.UffdWp);

    /// <summary>pte_modify: keep _PAGE_CHG_MASK, take the rest from newprot, fix inversion and saved-dirty.</summary>
    public Pte Modify(ulong newprot)
    {
        ulong oldval = Value;
        ulong val = oldval & PageChgMask;
        val |= EntryBits.CheckPgprot(newprot) & ~PageChgMask;
        val = EntryBits.FlipProtnoneGuard(oldval, val, PtePfnMask);
        return new Pte((oldval & Rw) != 0 ? EntryBits.MkSavedDirtyShift(val) : EntryBits.ClearSavedDirtyShift(val));
    }

    /// <summary>pte_advance_pfn: step the PFN by nr; an inverted PFN steps backwards.</summary>
    public Pte AdvancePfn(ulong nr)
        => new(EntryBits.NeedsInvert(Value) ? Value - (nr << Geometry.PageShift) : Value + (nr << Geometry.PageShift));

    // Swap-entry side (PRESENT clear, not none).
    /// <summary>is_swap_pte: neither none nor present.</summary>
    public bool IsSwap => !None && !Present;
    public bool SwpSoftDirty => (Value & PageTableBits.SwpSoftDirty) != 0;
    public bool SwpExclusive => (Value & PageTableBits.SwpExclusive) != 0;
    public bool SwpUffdWp => (Value & PageTableBits.SwpUffdWp) != 0;
    public Pte SwpMkSoftDirty() => new(Value | PageTableBits.SwpSoftDirty);
    public Pte SwpClearSoftDirty() => new(Value & ~PageTableBits.SwpSoftDirty);
    public Pte SwpMkExclusive() => new(Value | PageTableBits.SwpExclusive);
    public Pte SwpClearExclusive() => new(Value & ~PageTableBits.SwpExclusive);
    public Pte SwpMkUffdWp() => new(Value | PageTableBits.SwpUffdWp);
    public Pte SwpClearUffdWp() => new(Value & ~PageTableBits.SwpUffdWp);
    /// <summary>pte_swp_clear_flags: the entry with the three swap flag bits cleared.</summary>
    public Pte SwpClearFlags() => new(Value & ~SwpFlagsMask);

    public bool Equals(Pte other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is Pte p && Equals(p);
    public override int GetHashCode() => Value.GetHashCode();
    public static bool operator ==(Pte a, Pte b) => a.Value == b.Value;
    public static bool operator !=(Pte a, Pte b) => a.Value != b.Value;
    public override string ToString() => $"pte {Value:x16}";
}
