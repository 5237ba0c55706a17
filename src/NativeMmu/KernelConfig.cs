using NativeMmu.Arch.X86;

namespace NativeMmu;

/// <summary>How empty user PTE tables are reclaimed.</summary>
public enum PtReclaimMode
{
    /// <summary>Tables survive MADV_DONTNEED (before both series).</summary>
    Off,
    /// <summary>The 2021 "Free user PTE page table pages" series: a pte_refcount held by entries and walkers.</summary>
    Refcount,
    /// <summary>6.14's CONFIG_PT_RECLAIM: zap_page_range_single frees a wholly zapped table synchronously.</summary>
    Sync,
}

/// <summary>What do_wp_page does with a write fault on a PTE-mapped large anonymous folio that is not PageAnonExclusive.</summary>
public enum LargeFolioWp
{
    /// <summary>Kernels before 6.15: a large folio is never reused; the 4 KiB subpage is copied.</summary>
    Copy,
    /// <summary>6.15+ (__wp_can_reuse_large_anon_folio): reuse when every reference is a mapping of this mm; only the faulting PTE becomes writable.</summary>
    ReuseSubpage,
    /// <summary>The RFC "entirely reuse the whole anon mTHP in do_wp_page": when all its conditions hold, all nr PTEs become writable in one fault.</summary>
    ReuseWholeFolio,
}

/// <summary>HugeTLB Vmemmap Optimization: which design frees the tail struct pages of a hugetlb folio.</summary>
public enum HvoMode
{
    /// <summary>No HVO (CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP unset): every struct page keeps its own frame.</summary>
    Off,
    /// <summary>The 2020 RFC: vmemmap pages 0 and 1 kept, pages 2.. remapped writable onto page 1 (6 freed per 2 MiB, 4094 per 1 GiB).</summary>
    KeepTwo,
    /// <summary>5.18 to 7.0: only the head vmemmap page kept, every tail page mapped read-only onto it (7 / 4095 freed), with fake heads.</summary>
    KeepHead,
    /// <summary>The 2026 design: tails carry a compound_info mask, so all tail vmemmap pages of one zone and order map read-only onto one shared page.</summary>
    SharedTails,
}

/// <summary>
/// Copy-on-write PTE tables at fork (CONFIG_COW_PTE, not in mainline): which design, if any. See
/// docs/cow-pte.md for the rules each keeps for mapcount, refcount, PageAnonExclusive and RSS.
/// </summary>
public enum CowPteMode
{
    /// <summary>The feature is absent: fork copies every PTE table, prctl(PR_SET_COW_PTE) fails with EINVAL.</summary>
    Off,
    /// <summary>
    /// On-Demand-Fork and the RFC v1-v2 series: fork shares a PTE table wholly inside one anonymous VMA and
    /// touches no data page's struct page; the refcounts, mapcounts and RSS of its pages are settled when a
    /// table is copied at the break.
    /// </summary>
    Lazy,
    /// <summary>
    /// The v3-v5 series (prctl(PR_SET_COW_PTE)): fork shares every PTE table but VM_DONTCOPY ones and
    /// accounts every page it maps (mapcount, refcount, PageAnonExclusive) at fork; a table holding a page
    /// that may be pinned is copied instead (recover_pte_range).
    /// </summary>
    Eager,
}

/// <summary>
/// The emulated kernel's configuration, fixed at boot like Kconfig and the boot command line.
/// Defaults are the kernel's defaults where the kernel has one.
/// </summary>
public sealed record KernelConfig
{
    /// <summary>Physical memory: the arena size in bytes (default 1 GiB).</summary>
    public ulong MemoryBytes { get; init; } = 1UL << 30;
    /// <summary>Emulated CPUs (nr_cpu_ids); threads attach to them. At most 64 (mm_cpumask is one word).</summary>
    public int Cpus { get; init; } = 64;
    /// <summary>4-level paging by default; 5 enables LA57.</summary>
    public int PagingLevels { get; init; } = 4;
    /// <summary>4 KiB TLB entries per CPU (a power of two).</summary>
    public int TlbEntries { get; init; } = 1024;
    /// <summary>2 MiB TLB entries per CPU (a power of two).</summary>
    public int TlbHugeEntries { get; init; } = 32;
    /// <summary>pcp->batch: pages moved between a CPU's list and the buddy lists at a time (zone_batchsize gives 63 for 1 GiB).</summary>
    public int PcpBatch { get; init; } = 63;
    /// <summary>pcp->high: a CPU's list is trimmed by a batch when it reaches this (the kernel tunes it up to high_max).</summary>
    public int PcpHigh { get; init; } = 2048;
    /// <summary>CONFIG_DEBUG_VM + CONFIG_PAGE_TABLE_CHECK: check invariants on every entry update.</summary>
    public bool DebugVm { get; init; }
    /// <summary>Empty PTE-table reclaim: Sync (CONFIG_PT_RECLAIM, 6.14+, the default), Refcount (the 2021 pte_refcount series) or Off.</summary>
    public PtReclaimMode PtReclaim { get; init; } = PtReclaimMode.Sync;
    /// <summary>arch_flush_tlb_before_set_pte_page / _huge_page: flush a pending batched flush before repopulating a PMD (x86: yes).</summary>
    public bool FlushTlbBeforeSetPmd { get; init; } = true;

    /// <summary>
    /// Read faults map no zero page: do_anonymous_page and do_huge_pmd_anonymous_page allocate a zeroed
    /// page (or THP) of the mm's own where mainline maps the shared zero page (or the huge zero page),
    /// as under mm_forbids_zeropage(). A split still maps zero-filled subpages to the zero page. Off in
    /// mainline; a host booted with pvm_no_zero_page=1 behaves so (measured: a 4 KiB read adds 4 kB of
    /// RssAnon, a read in a MADV_HUGEPAGE range 2 MiB, and MADV_FREE's split still drops zero-filled
    /// subpages), and the host comparison boots the emulator the same way when it finds such a host.
    /// </summary>
    public bool ForbidZeroPage { get; init; }

    /// <summary>
    /// X86_FEATURE_OSPKE: the CPUs have protection keys and the kernel turned them on (CR4.PKE). The page
    /// walk then checks each user data access against the CPU's PKRU and the leaf's pkey (bits 59-62), a
    /// violation is a #PF with X86_PF_PK, and mmap or mprotect with PROT_EXEC alone give the VMA the mm's
    /// execute-only pkey, which PKRU denies all data access (a load there is SIGSEGV with SEGV_PKUERR).
    /// Off by default, as on a CPU without PKU; the host comparison turns it on where the host has it.
    /// </summary>
    public bool Pku { get; init; }

    /// <summary>The write fault on a PTE-mapped large anonymous folio: ReuseSubpage (mainline 6.15+, the default), Copy (before 6.15) or ReuseWholeFolio.</summary>
    public LargeFolioWp WpLargeFolio { get; init; } = LargeFolioWp.ReuseSubpage;

    /// <summary>hugepages=N (with hugepagesz=2M, the default size): 2 MiB pages put in the pool at boot.</summary>
    public int HugePages2M { get; init; }
    /// <summary>hugepagesz=1G hugepages=N: 1 GiB pages taken from contiguous memory at boot.</summary>
    public int HugePages1G { get; init; }

    /// <summary>
    /// HVO design (Off by default, as CONFIG_HUGETLB_PAGE_OPTIMIZE_VMEMMAP_DEFAULT_ON is). Any other
    /// value boots with vm.hugetlb_optimize_vmemmap = 1 (hugetlb_free_vmemmap=on).
    /// </summary>
    public HvoMode Hvo { get; init; } = HvoMode.Off;

    /// <summary>Copy-on-write PTE tables at fork: Off (the default, as without CONFIG_COW_PTE), Lazy or Eager.</summary>
    public CowPteMode CowPte { get; init; } = CowPteMode.Off;

    /// <summary>With <see cref="CowPte"/> on: every process shares its tables at its next fork, as if it had called prctl(PR_SET_COW_PTE).</summary>
    public bool CowPteAllProcesses { get; init; }

    public PagingMode Paging => PagingLevels == 5 ? PagingMode.FiveLevel : PagingMode.FourLevel;

    internal void Validate()
    {
        if (PagingLevels is not (4 or 5)) throw new ArgumentException("PagingLevels must be 4 or 5");
        if (Cpus is < 1 or > 64) throw new ArgumentException("Cpus must be 1..64");
        if (TlbEntries < 1 || (TlbEntries & (TlbEntries - 1)) != 0) throw new ArgumentException("TlbEntries must be a power of two");
        if (TlbHugeEntries < 1 || (TlbHugeEntries & (TlbHugeEntries - 1)) != 0) throw new ArgumentException("TlbHugeEntries must be a power of two");
        if (HugePages2M < 0 || HugePages1G < 0) throw new ArgumentException("HugePages2M and HugePages1G must not be negative");
        if (PcpBatch < 1 || PcpHigh < PcpBatch) throw new ArgumentException("PcpHigh must be at least PcpBatch >= 1");
    }
}
