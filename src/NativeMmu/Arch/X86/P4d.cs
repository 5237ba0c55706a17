using System.Runtime.CompilerServices;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Arch.X86;

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
