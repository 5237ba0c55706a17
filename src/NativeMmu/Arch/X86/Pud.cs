using System.Runtime.CompilerServices;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Arch.X86;

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
