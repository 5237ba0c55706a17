using NativeMmu.Cpus;
using NativeMmu.Mm.Huge;

namespace NativeMmu.Mm;

/// <summary>
/// The booted machine as the memory-management layer uses it: the <see cref="Platform"/> (memory,
/// allocator, CPUs, RCU) plus the machine-wide state of mm/huge_memory.c - the THP knobs and stats,
/// the huge zero folio, the deferred-split queue and the hugetlb pools.
/// </summary>
public sealed class Machine : Platform
{
    public Machine(KernelConfig config) : base(config)
    {
        SplitQueue = new DeferredSplitQueue(this);
        HugeZero = new HugeZeroFolio(this);
        // memmap_boot_pages_add: every vmemmap frame came from the boot allocator.
        Counters.Add(0, Physical.VmStat.NrMemmapBootPages, (long)Vmemmap.FrameCount);
        if (config.Hvo == HvoMode.SharedTails) Vmemmap.SetTailInfoMask(); // before the first compound page
        Hugetlb = new Hugetlb(this);
        // hugetlb_init: the boot command line's pools, before any process runs (CPU 0's lists).
        Hugetlb.BootInit(cpu: 0, config.HugePages2M, config.HugePages1G);
    }

    /// <summary>The hugetlb pools (mm/hugetlb.c): one hstate per size, /sys/kernel/mm/hugepages.</summary>
    public Hugetlb Hugetlb { get; }

    /// <summary>/sys/kernel/mm/transparent_hugepage: the THP and mTHP knobs and the per-size stats.</summary>
    public Thp Thp { get; } = new();

    /// <summary>The huge zero folio (mm/huge_memory.c), allocated on first use.</summary>
    public HugeZeroFolio HugeZero { get; }

    /// <summary>The deferred-split queue of partially mapped large folios.</summary>
    public DeferredSplitQueue SplitQueue { get; }
}
