using BenchmarkDotNet.Attributes;
using NativeMmu.Mm;
using EmulatedCpu = NativeMmu.Cpus.Cpu;

namespace NativeMmu.Benchmarks.Faults;

/// <summary>
/// Anonymous page faults taken by user accesses, one per operation. Each invocation faults in every page of a
/// 2 MiB window (one PTE table) and then gives the window back with MADV_DONTNEED, so the next invocation
/// faults again; the zap is part of the measurement, 1/512 of it per operation, and the names say so.
/// Per empty-PTE-table reclaim mode: with Off the PTE table stays allocated throughout; with Sync the
/// zap frees it and the next invocation's first fault allocates another; with Refcount every fault
/// also takes and hands on a pte_refcount, and the zap's last put frees the table.
/// </summary>
[BenchmarkCategory("Faults")]
public class FaultBenchmarks : KernelBenchmark
{
    private ulong _window;

    [Params(PtReclaimMode.Off, PtReclaimMode.Refcount, PtReclaimMode.Sync)]
    public PtReclaimMode Mode { get; set; }

    protected override PtReclaimMode PtReclaim => Mode;

    protected override void Setup(EmulatedCpu cpu)
    {
        _window = Map(PmdSize); // 2 MiB anonymous mappings are 2 MiB aligned: exactly one PTE table
        cpu.Store<byte>(_window, 1); // allocates the page tables down to the PTE table
        Check(Process.Madvise(_window, PmdSize, Advice.DontNeed), "madvise");
    }

    /// <summary>
    /// A write to a never-touched page: TLB miss, walk, #PF, do_anonymous_page (a zeroed page, mapped
    /// writable and dirty), the retried walk and the store; plus one 512th of the MADV_DONTNEED that
    /// unmaps and frees the window.
    /// </summary>
    [Benchmark(OperationsPerInvoke = PagesPer2MiB)]
    public void ZeroFillWriteFault_InclDontNeed()
    {
        EmulatedCpu cpu = Cpu;
        ulong a = _window;
        for (int i = 0; i < PagesPer2MiB; i++) cpu.Store<byte>(a + (ulong)i * PageSize, 1);
        Check(Process.Madvise(a, PmdSize, Advice.DontNeed), "madvise");
    }

    /// <summary>
    /// A read of a never-touched page: TLB miss, walk, #PF, do_anonymous_page mapping the shared zero page
    /// read-only, the retried walk and the load; plus one 512th of the MADV_DONTNEED that clears the window
    /// (zero-page entries free nothing).
    /// </summary>
    [Benchmark(OperationsPerInvoke = PagesPer2MiB)]
    public long ZeroPageReadFault_InclDontNeed()
    {
        EmulatedCpu cpu = Cpu;
        ulong a = _window;
        long sum = 0;
        for (int i = 0; i < PagesPer2MiB; i++) sum += cpu.Load<long>(a + (ulong)i * PageSize);
        Check(Process.Madvise(a, PmdSize, Advice.DontNeed), "madvise");
        return sum;
    }
}
