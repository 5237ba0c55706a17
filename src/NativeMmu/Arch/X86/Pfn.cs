using System.Runtime.CompilerServices;

namespace NativeMmu.Arch.X86;

/// <summary>
/// A page frame number: a physical address shifted right by PAGE_SHIFT (the kernel's <c>unsigned long
/// pfn</c>). One <c>ulong</c>, so it costs nothing over the raw number; the type keeps frame numbers,
/// physical addresses and virtual addresses from being mixed up.
/// </summary>
public readonly struct Pfn : IEquatable<Pfn>, IComparable<Pfn>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public Pfn(ulong value) => Value = value;

    /// <summary>PFN_PHYS: the physical address of the frame's first byte.</summary>
    public PhysAddr Phys { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => new(Value << Geometry.PageShift); }

    /// <summary>Whether the frame starts a naturally aligned block of 2^order frames (the buddy's alignment).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool IsAligned(int order) => (Value & ((1UL << order) - 1)) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Pfn operator +(Pfn pfn, ulong frames) => new(pfn.Value + frames);
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static Pfn operator -(Pfn pfn, ulong frames) => new(pfn.Value - frames);
    /// <summary>The number of frames from b to a.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong operator -(Pfn a, Pfn b) => a.Value - b.Value;
    public static bool operator <(Pfn a, Pfn b) => a.Value < b.Value;
    public static bool operator >(Pfn a, Pfn b) => a.Value > b.Value;
    public static bool operator <=(Pfn a, Pfn b) => a.Value <= b.Value;
    public static bool operator >=(Pfn a, Pfn b) => a.Value >= b.Value;
    public static bool operator ==(Pfn a, Pfn b) => a.Value == b.Value;
    public static bool operator !=(Pfn a, Pfn b) => a.Value != b.Value;
    public static explicit operator ulong(Pfn pfn) => pfn.Value;
    public static explicit operator Pfn(ulong value) => new(value);

    public bool Equals(Pfn other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is Pfn p && Equals(p);
    public override int GetHashCode() => Value.GetHashCode();
    public int CompareTo(Pfn other) => Value.CompareTo(other.Value);
    public override string ToString() => $"pfn {Value:x}";
}
