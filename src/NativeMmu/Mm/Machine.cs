using NativeMmu.Cpus;

namespace NativeMmu.Mm;

/// <summary>
/// The booted machine as the memory-management layer uses it: the <see cref="Platform"/> (memory,
/// allocator, CPUs, RCU) plus the machine-wide state of mm/huge_memory.c - the THP knobs and stats,
/// the huge zero folio and the deferred-split queue.
/// </summary>
public sealed class Machine : Platform
{
    public Machine(KernelConfig config) : base(config)
    {
        SplitQueue = new DeferredSplitQueue(this);
        HugeZero = new HugeZeroFolio(this);
    }

    /// <summary>/sys/kernel/mm/transparent_hugepage: the THP and mTHP knobs and the per-size stats.</summary>
    public Thp Thp { get; } = new();

    /// <summary>The huge zero folio (mm/huge_memory.c), allocated on first use.</summary>
    public HugeZeroFolio HugeZero { get; }

    /// <summary>The deferred-split queue of partially mapped large folios.</summary>
    public DeferredSplitQueue SplitQueue { get; }

    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _invariantViolations = new();
    private int _failPageTableAllocIn;

    /// <summary>What the invariant mode found outside the audits (a shared PTE table changed behind its sharing).</summary>
    public IReadOnlyCollection<string> InvariantViolations => _invariantViolations;

    /// <summary>The invariant mode records a broken rule it can survive (page_table_check's report).</summary>
    internal void ReportInvariantViolation(string what) => _invariantViolations.Enqueue(what);

    /// <summary>
    /// Fault injection (should_fail for page-table allocations, a test knob like failslab): the
    /// <paramref name="nth"/> page-table allocation from now fails (1: the next); 0 disarms.
    /// </summary>
    public void FailPageTableAlloc(int nth)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(nth);
        Volatile.Write(ref _failPageTableAllocIn, nth);
    }

    /// <summary>Whether the knob is still armed (the failing allocation not reached yet).</summary>
    public bool PageTableAllocFailurePending => Volatile.Read(ref _failPageTableAllocIn) != 0;

    /// <summary>pagetable_alloc's should_fail: counts the armed knob down, true at its allocation.</summary>
    internal bool ShouldFailPageTableAlloc()
    {
        while (true)
        {
            int n = Volatile.Read(ref _failPageTableAllocIn);
            if (n == 0) return false;
            if (Interlocked.CompareExchange(ref _failPageTableAllocIn, n - 1, n) == n) return n == 1;
        }
    }
}
