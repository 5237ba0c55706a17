using BenchmarkDotNet.Attributes;
using EmulatedCpu = NativeMmu.Cpus.Cpu;

namespace NativeMmu.Benchmarks.Walks;

/// <summary>
/// Address translation for user loads of resident, writable pages (no faults): a TLB hit, and a TLB miss
/// that walks the four paging levels and refills the entry. One load per operation.
/// </summary>
[BenchmarkCategory("Walks")]
public class WalkBenchmarks : KernelBenchmark
{
    /// <summary>Pages that sit in distinct slots of the 1024-entry direct-mapped TLB.</summary>
    private const int HotPages = 16;
    private const int HotRounds = 32;
    /// <summary>Four times the TLB: each page's slot is taken by three others before the page comes round again.</summary>
    private const int StridePages = 4096;

    private ulong _hot, _wide;

    protected override void Setup(EmulatedCpu cpu)
    {
        _hot = Map(PmdSize);
        for (int i = 0; i < HotPages; i++) cpu.Store<long>(_hot + (ulong)i * PageSize, i);
        _wide = Map((ulong)StridePages * PageSize);
        for (int i = 0; i < StridePages; i++) cpu.Store<long>(_wide + (ulong)i * PageSize, i);
    }

    /// <summary>A load whose translation is in the TLB: 16 pages read round-robin.</summary>
    [Benchmark(OperationsPerInvoke = HotPages * HotRounds)]
    public long TlbHit_Load()
    {
        EmulatedCpu cpu = Cpu;
        ulong a = _hot;
        long sum = 0;
        for (int r = 0; r < HotRounds; r++)
            for (int i = 0; i < HotPages; i++)
                sum += cpu.Load<long>(a + (ulong)i * PageSize);
        return sum;
    }

    /// <summary>
    /// A full local flush (one generation step) followed by a load that misses and walks; the paging
    /// structures of the 16 hot pages stay in the host's caches.
    /// </summary>
    [Benchmark(OperationsPerInvoke = HotPages * HotRounds)]
    public long Walk_AfterFlushAll_Load()
    {
        EmulatedCpu cpu = Cpu;
        ulong a = _hot;
        long sum = 0;
        for (int r = 0; r < HotRounds; r++)
            for (int i = 0; i < HotPages; i++)
            {
                cpu.FlushAllLocal();
                sum += cpu.Load<long>(a + (ulong)i * PageSize);
            }
        return sum;
    }

    /// <summary>
    /// A load that misses because 4096 pages are read in turn through 1024 TLB slots: every access walks,
    /// over 32 KiB of PTEs and 16 MiB of data, so host cache misses are part of the cost.
    /// </summary>
    [Benchmark(OperationsPerInvoke = StridePages)]
    public long Walk_Stride4096Pages_Load()
    {
        EmulatedCpu cpu = Cpu;
        ulong a = _wide;
        long sum = 0;
        for (int i = 0; i < StridePages; i++) sum += cpu.Load<long>(a + (ulong)i * PageSize);
        return sum;
    }
}
