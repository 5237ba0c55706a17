using System.Runtime.CompilerServices;

namespace NativeMmu.Physical;

/// <summary>
/// Event counters of /proc/vmstat (enum vm_event_item), counted per CPU as the kernel does
/// (count_vm_event) and summed when read.
/// </summary>
public enum VmEvent
{
    PgallocNormal,
    Pgfree,
    Pgfault,
    Pgmajfault,
    Pgreuse,
    CowKsm,
    ThpFaultAlloc,
    ThpFaultFallback,
    ThpFaultFallbackCharge,
    ThpSplitPage,
    ThpSplitPmd,
    ThpDeferredSplitPage,
    ThpZeroPageAlloc,
    /// <summary>nr_tlb_remote_flush: flushes that had to reach other CPUs.</summary>
    NrTlbRemoteFlush,
    /// <summary>nr_tlb_remote_flush_received.</summary>
    NrTlbRemoteFlushReceived,
    NrTlbLocalFlushAll,
    NrTlbLocalFlushOne,
    // Emulator-side counters (not /proc/vmstat lines): faults by kind, zaps, page-table pages.
    FaultAnonZeroFill,
    FaultZeroPage,
    FaultWpReuse,
    FaultWpCopy,
    FaultHuge,
    FaultSpurious,
    ZapPages,
    PgtableAlloc,
    PgtableFree,
    PtReclaim,
    TlbConflict,
    /// <summary>Remote flushes that had to fall back to the process-wide barrier (a target did not acknowledge in time).</summary>
    TlbFlushBarrierFallback,
    Count,
}

/// <summary>Node/zone state items of /proc/vmstat (nr_*), kept as per-CPU deltas as the kernel does.</summary>
public enum VmStat
{
    NrFreePages,
    NrAnonPages,
    /// <summary>NR_ANON_THPS: pages of PMD-mapped anonymous THPs (vmstat prints it in THPs).</summary>
    NrAnonThps,
    NrPageTablePages,
    NrZeroPageUsers,
    Count,
}

/// <summary>
/// Per-CPU counter slots. Each CPU writes only its own slots (single writer, plain stores); readers
/// sum all slots without a lock, as percpu counters and vm_event_states are read.
/// </summary>
public sealed class PerCpuCounters
{
    // One 512-byte row per CPU, starting one row in, so no CPU's row shares a line with another's
    // or with the array header every reader touches.
    private const int RowLongs = 64;
    private readonly long[] _slots;

    public PerCpuCounters(int cpus)
    {
        Cpus = cpus;
        _slots = new long[(cpus + 2) * RowLongs];
    }

    public int Cpus { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int cpu, VmEvent e, long delta = 1) => _slots[(cpu + 1) * RowLongs + (int)e] += delta;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int cpu, VmStat s, long delta) => _slots[(cpu + 1) * RowLongs + (int)VmEvent.Count + (int)s] += delta;

    public long Sum(VmEvent e) => Sum((int)e);
    public long Sum(VmStat s) => Sum((int)VmEvent.Count + (int)s);

    private long Sum(int index)
    {
        long total = 0;
        for (int c = 0; c < Cpus; c++) total += Volatile.Read(ref _slots[(c + 1) * RowLongs + index]);
        return total;
    }

    static PerCpuCounters()
    {
        if ((int)VmEvent.Count + (int)VmStat.Count > RowLongs) throw new InvalidOperationException("per-CPU counter row too small");
    }
}
