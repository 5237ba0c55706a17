using System.Runtime.CompilerServices;

namespace NativeMmu.Arch.X86;

/// <summary>
/// A virtual address, user or kernel, with the index helpers of pgtable.h: which entry of each level's
/// table translates it, and which page (4 KiB or 2 MiB) it lies in.
/// </summary>
public readonly struct VirtAddr : IEquatable<VirtAddr>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public VirtAddr(ulong value) => Value = value;

    /// <summary>offset_in_page.</summary>
    public ulong PageOffset { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Value & (Geometry.PageSize - 1); }
    /// <summary>The virtual page number: address >> PAGE_SHIFT.</summary>
    public ulong PageNumber { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Value >> Geometry.PageShift; }
    /// <summary>The 2 MiB page number: address >> PMD_SHIFT.</summary>
    public ulong HugePageNumber { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Value >> Geometry.PmdShift; }
    /// <summary>The byte within the 2 MiB page.</summary>
    public ulong PmdOffset { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Value & (Geometry.PmdSize - 1); }
    /// <summary>address &amp; PAGE_MASK.</summary>
    public VirtAddr PageAlignDown { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => new(Value & Geometry.PageMask); }
    /// <summary>address &amp; PMD_MASK (HPAGE_PMD_MASK).</summary>
    public VirtAddr PmdAlignDown { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => new(Value & Geometry.PmdMask); }

    /// <summary>pte_index.</summary>
    public int PteIndex { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Geometry.PteIndex(Value); }
    /// <summary>pmd_index.</summary>
    public int PmdIndex { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Geometry.PmdIndex(Value); }
    /// <summary>pud_index.</summary>
    public int PudIndex { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Geometry.PudIndex(Value); }
    /// <summary>p4d_index (meaningful with 5-level paging; with 4 levels the P4D is folded).</summary>
    public int P4dIndex { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Geometry.P4dIndex(Value); }
    /// <summary>pgd_index: depends on PGDIR_SHIFT, so on the paging mode.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int PgdIndex(PagingMode mode) => mode.PgdIndex(Value);

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static VirtAddr operator +(VirtAddr a, ulong bytes) => new(a.Value + bytes);
    /// <summary>The number of bytes from b to a.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong operator -(VirtAddr a, VirtAddr b) => a.Value - b.Value;
    public static bool operator ==(VirtAddr a, VirtAddr b) => a.Value == b.Value;
    public static bool operator !=(VirtAddr a, VirtAddr b) => a.Value != b.Value;
    public static explicit operator ulong(VirtAddr a) => a.Value;
    public static explicit operator VirtAddr(ulong value) => new(value);

    public bool Equals(VirtAddr other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is VirtAddr a && Equals(a);
    public override int GetHashCode() => Value.GetHashCode();
    public override string ToString() => $"va {Value:x}";
}
