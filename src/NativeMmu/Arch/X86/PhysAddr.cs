using System.Runtime.CompilerServices;

namespace NativeMmu.Arch.X86;

/// <summary>A physical address (phys_addr_t): an offset into the emulated machine's physical memory.</summary>
public readonly struct PhysAddr : IEquatable<PhysAddr>
{
    public readonly ulong Value;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public PhysAddr(ulong value) => Value = value;

    /// <summary>PHYS_PFN: the frame the address lies in.</summary>
    public Pfn Pfn { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => new(Value >> Geometry.PageShift); }
    /// <summary>offset_in_page: the byte within that frame.</summary>
    public ulong PageOffset { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => Value & (Geometry.PageSize - 1); }
    /// <summary>The address rounded down to its frame (PFN_PHYS(PHYS_PFN(x))).</summary>
    public PhysAddr PageAlignDown { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => new(Value & Geometry.PageMask); }

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static PhysAddr operator +(PhysAddr a, ulong bytes) => new(a.Value + bytes);
    public static bool operator ==(PhysAddr a, PhysAddr b) => a.Value == b.Value;
    public static bool operator !=(PhysAddr a, PhysAddr b) => a.Value != b.Value;
    public static explicit operator ulong(PhysAddr a) => a.Value;
    public static explicit operator PhysAddr(ulong value) => new(value);

    public bool Equals(PhysAddr other) => Value == other.Value;
    public override bool Equals(object? obj) => obj is PhysAddr a && Equals(a);
    public override int GetHashCode() => Value.GetHashCode();
    public override string ToString() => $"phys {Value:x}";
}
