using BenchmarkDotNet.Attributes;
using NativeMmu.Mm;
using EmulatedCpu = NativeMmu.Cpus.Cpu;

namespace NativeMmu.Benchmarks.Zap;

/// <summary>
/// Tearing down 512 populated pages (a 2 MiB window, one PTE table), one system-call pair per operation.
/// A zap leaves nothing to zap again, so each operation first populates the window from the kernel side
/// (MAP_POPULATE / MADV_POPULATE_WRITE: the fault handler without the emulated CPU's #PF round trip); the
/// names say what each operation contains.
/// </summary>
[BenchmarkCategory("Zap")]
public class ZapBenchmarks : KernelBenchmark
{
    private ulong _window, _hole;

    protected override void Setup(EmulatedCpu cpu)
    {
        // A resident page above the windows keeps the PMD and PUD tables alive across munmap, so
        // free_pgtables releases the window's PTE table only, as it would in a process with other mappings.
        ulong anchor = Map(PageSize);
        cpu.Store<byte>(anchor, 1);
        _window = Map(PmdSize);
        cpu.Store<byte>(_window, 1);
        Check(Process.Madvise(_window, PmdSize, Advice.DontNeed), "madvise");
        // The munmap benchmark maps the middle 2 MiB of a 6 MiB hole: nothing is adjacent to merge with,
        // so each mmap creates a VMA and each munmap removes it whole, with no split.
        ulong reserve = Map(3 * PmdSize);
        Check(Process.Munmap(reserve, 3 * PmdSize), "munmap");
        _hole = reserve + PmdSize;
    }

    /// <summary>
    /// mmap(2 MiB, MAP_FIXED_NOREPLACE | MAP_POPULATE) then munmap: a VMA is created and filled with 512
    /// zeroed pages and a PTE table, then unmapped (zap, page freeing, free_pgtables, TLB flush) and dropped.
    /// </summary>
    [Benchmark]
    public void Munmap512Pages_InclMmapPopulate()
    {
        _ = Cpu;
        const MapFlags flags = MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace | MapFlags.Populate;
        Check(Process.Mmap(_hole, PmdSize, Prot.ReadWrite, flags, out ulong a), "mmap");
        Check(Process.Munmap(a, PmdSize), "munmap");
    }

    /// <summary>
    /// MADV_POPULATE_WRITE then MADV_DONTNEED over the same 2 MiB window: 512 zeroed pages faulted in,
    /// then zapped and freed with one TLB flush. The VMA and the PTE table stay.
    /// </summary>
    [Benchmark]
    public void DontNeed512Pages_InclPopulateWrite()
    {
        _ = Cpu;
        Check(Process.Madvise(_window, PmdSize, Advice.PopulateWrite), "madvise");
        Check(Process.Madvise(_window, PmdSize, Advice.DontNeed), "madvise");
    }
}
