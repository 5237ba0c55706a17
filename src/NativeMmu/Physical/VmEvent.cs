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
