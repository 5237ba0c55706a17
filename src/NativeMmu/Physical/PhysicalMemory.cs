using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using System.Runtime.Intrinsics;
using NativeMmu.Arch.X86;

namespace NativeMmu.Physical;

/// <summary>
/// The emulated machine's physical memory: one NativeMemory arena of 4 KiB frames. It is the only
/// owner of the native allocation; everyone else reaches frames through <see cref="FrameAddress(ulong)"/>.
/// </summary>
public sealed unsafe partial class PhysicalMemory : IDisposable
{
    private byte* _base;

    public PhysicalMemory(ulong bytes)
    {
        if (bytes < 16 * Geometry.PmdSize || (bytes & (Geometry.PmdSize - 1)) != 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "the arena must be a multiple of 2 MiB and at least 32 MiB");
        Bytes = bytes;
        Frames = bytes >> Geometry.PageShift;
        _base = (byte*)NativeMemory.AlignedAlloc((nuint)bytes, (nuint)Geometry.PmdSize);
        if (OperatingSystem.IsLinux())
        {
            // The kernel's direct map uses large pages; ask the host for the same so the arena costs
            // the emulator few host TLB misses. Advisory: failure changes nothing but speed.
            _ = madvise(_base, (nuint)bytes, MadvHugepage);
        }
    }

    public ulong Bytes { get; }
    /// <summary>Number of 4 KiB frames (max_pfn).</summary>
    public ulong Frames { get; }
    internal byte* Base => _base;

    /// <summary>__va(pfn &lt;&lt; PAGE_SHIFT): the host address of a frame.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* FrameAddress(ulong pfn) => _base + (pfn << Geometry.PageShift);

    /// <summary>__va(PFN_PHYS(pfn)): the host address of a frame.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* FrameAddress(Pfn pfn) => _base + pfn.Phys.Value;

    /// <summary>__va(phys): the host address of a physical address.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal byte* HostAddress(PhysAddr phys) => _base + phys.Value;

    /// <summary>__pa: the physical address of a host address inside the arena.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal PhysAddr PhysAddrOf(void* host) => new((ulong)((byte*)host - _base));

    /// <summary>virt_to_pfn: the frame a host address inside the arena lies in.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Pfn PfnOf(void* host) => PhysAddrOf(host).Pfn;

    /// <summary>The frame as a span of bytes.</summary>
    public Span<byte> Frame(ulong pfn)
    {
        if (pfn >= Frames) throw new ArgumentOutOfRangeException(nameof(pfn));
        return new Span<byte>(FrameAddress(pfn), (int)Geometry.PageSize);
    }

    /// <summary>clear_page.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ClearFrame(ulong pfn) => ClearPage(FrameAddress(pfn));

    /// <summary>
    /// clear_page on a 4 KiB-aligned host page: the widest aligned vector stores the host has, as the
    /// kernel picks its clear_page variant by CPU feature. The call stays in managed code: memset
    /// (NativeMemory.Clear) costs a transition per page and, for 4 KiB, measured slower here than
    /// 64-byte stores (2 MiB working set: 52-57 ns against 40-42 ns per page; 128 MiB: 167-172 against
    /// 133-136).
    /// </summary>
    /// <remarks>
    /// A raw pointer because the page is any 4 KiB-aligned host page, not only an arena frame: the
    /// multi-fault ceiling zeroes its own buffer with this same primitive, so that it measures exactly
    /// the zeroing an emulated fault does. A Span would add a length the operation does not have.
    /// </remarks>
    public static void ClearPage(byte* page)
    {
        if (Vector512.IsHardwareAccelerated)
        {
            Vector512<byte> z = Vector512<byte>.Zero;
            for (nuint i = 0; i < (nuint)Geometry.PageSize; i += 256)
            {
                z.StoreAligned(page + i);
                z.StoreAligned(page + i + 64);
                z.StoreAligned(page + i + 128);
                z.StoreAligned(page + i + 192);
            }
        }
        else if (Vector256.IsHardwareAccelerated)
        {
            Vector256<byte> z = Vector256<byte>.Zero;
            for (nuint i = 0; i < (nuint)Geometry.PageSize; i += 128)
            {
                z.StoreAligned(page + i);
                z.StoreAligned(page + i + 32);
                z.StoreAligned(page + i + 64);
                z.StoreAligned(page + i + 96);
            }
        }
        else
        {
            NativeMemory.Clear(page, (nuint)Geometry.PageSize);
        }
    }

    /// <summary>copy_page.</summary>
    public void CopyFrame(ulong dstPfn, ulong srcPfn) => Buffer.MemoryCopy(FrameAddress(srcPfn), FrameAddress(dstPfn), Geometry.PageSize, Geometry.PageSize);

    public void Dispose()
    {
        if (_base != null)
        {
            NativeMemory.AlignedFree(_base);
            _base = null;
        }
    }

    private const int MadvHugepage = 14;

    [LibraryImport("libc", SetLastError = true)]
    private static partial int madvise(void* addr, nuint length, int advice);
}
