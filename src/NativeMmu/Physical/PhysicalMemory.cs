using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
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
    /// clear_page on a 4 KiB-aligned host page: libc's memset, which for 4 KiB is <c>rep stosb</c> on this
    /// kind of CPU, the kernel's clear_page_erms; called without the runtime transition NativeMemory.Clear
    /// pays per page (Buffer.ZeroMemoryInternal and the transition were about 3.4 % of a 1-thread
    /// multi-fault). 64-byte vector stores were tried: faster in a loop that only zeroes (the ceiling),
    /// but slower in the fault, whose PTE-lock cmpxchg right after waits for the stores to drain -
    /// page_fault1 1.3x slower (106-122 against 138-155 M pf/min), multi-fault about 1.1x faster.
    /// </summary>
    /// <remarks>
    /// A raw pointer because the page is any 4 KiB-aligned host page, not only an arena frame: the
    /// multi-fault ceiling zeroes its own buffer with this same primitive, so that it measures exactly
    /// the zeroing an emulated fault does. A Span would add a length the operation does not have.
    /// </remarks>
    public static void ClearPage(byte* page)
    {
        if (OperatingSystem.IsLinux()) memset(page, 0, (nuint)Geometry.PageSize);
        else NativeMemory.Clear(page, (nuint)Geometry.PageSize);
    }

    /// <summary>libc's memset, called without a GC transition: it neither blocks nor calls back.</summary>
    [LibraryImport("libc", EntryPoint = "memset")]
    [SuppressGCTransition]
    private static partial void* memset(void* destination, int value, nuint length);

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
