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
    /// <summary>cow_pte_share: PTE tables fork shared instead of copying.</summary>
    CowPteShare,
    /// <summary>cow_pte_fallback: tables fork would have shared but copied (a page that may be pinned).</summary>
    CowPteFallback,
    /// <summary>cow_pte_break_copy: breaks that copied the shared table into a new one.</summary>
    CowPteBreakCopy,
    /// <summary>cow_pte_break_reuse: breaks by the last holder, which took the table over.</summary>
    CowPteBreakReuse,
    /// <summary>cow_pte_drop: zaps that only dropped this mm's reference on a table still shared.</summary>
    CowPteDrop,
    Count,
}
