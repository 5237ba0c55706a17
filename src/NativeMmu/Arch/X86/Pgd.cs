using System.Runtime.CompilerServices;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Arch.X86;

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
