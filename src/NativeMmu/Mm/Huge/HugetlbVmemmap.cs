using System.Globalization;
using NativeMmu.Arch.X86;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// HugeTLB Vmemmap Optimization (mm/hugetlb_vmemmap.c), done on the vmemmap's own kernel page table:
/// the 2 MiB vmemmap leaves covering a folio's struct pages are split into PTE tables, the tail
/// vmemmap PTEs remapped onto a page that stays (page 1 writable in KeepTwo, the head page read-only in
/// KeepHead, the zone's shared tail page of that order read-only in SharedTails), and the frames they
/// pointed at freed to the page allocator. Batches follow 6.7's hugetlb_vmemmap_optimize_folios: split
/// every PMD, one flush_tlb_all, remap everything, one flush_tlb_all, then free. Restore is
/// vmemmap_remap_alloc: allocate the frames back (__GFP_RETRY_MAYFAIL, so it may fail), copy the reuse
/// page into each, reset_struct_pages for copies of the head page, map them writable, one flush per
/// batch. A folio whose restore fails stays in the pool as a surplus page.
/// </summary>
public sealed unsafe partial class Hugetlb
{
    /// <summary>NR_RESET_STRUCT_PAGE: struct pages at the start of a copied head page overwritten with the three after them.</summary>
    private const int NrResetStructPage = 3;

    private HvoMode Hvo => _m.Config.Hvo;

    /// <summary>vm.hugetlb_optimize_vmemmap (0/1); read at each optimization, so it governs only folios allocated after a change.</summary>
    private int _optimizeVmemmap;

    /// <summary>
    /// vm.hugetlb_optimize_vmemmap: whether new hugetlb folios get their vmemmap optimized. Folios
    /// already in the pool keep the state they were allocated with. Not registered without HVO
    /// (<see cref="HvoMode.Off"/>): reading or writing it is then ENOENT.
    /// </summary>
    public bool OptimizeVmemmap
    {
        get
        {
            if (Hvo == HvoMode.Off) throw new FileNotFoundException("/proc/sys/vm/hugetlb_optimize_vmemmap");
            return Volatile.Read(ref _optimizeVmemmap) != 0;
        }
        set
        {
            if (Hvo == HvoMode.Off) throw new FileNotFoundException("/proc/sys/vm/hugetlb_optimize_vmemmap");
            Volatile.Write(ref _optimizeVmemmap, value ? 1 : 0);
        }
    }

    /// <summary>Reads /proc/sys/vm/hugetlb_optimize_vmemmap ("0\n" or "1\n").</summary>
    public string ReadSysctl() => (OptimizeVmemmap ? "1" : "0") + "\n";

    /// <summary>Writes /proc/sys/vm/hugetlb_optimize_vmemmap (proc_dointvec_minmax over 0..1: anything else is EINVAL).</summary>
    public void WriteSysctl(string value) => OptimizeVmemmap = value.Trim() switch
    {
        "0" => false,
        "1" => true,
        _ => throw new ArgumentException($"EINVAL: hugetlb_optimize_vmemmap <- {value}"),
    };

    private bool OptimizeNow => Hvo != HvoMode.Off && Volatile.Read(ref _optimizeVmemmap) != 0;

    /// <summary>The vmemmap pages one folio of h spans: 8 for 2 MiB, 4096 for 1 GiB.</summary>
    public static int VmemmapPages(Hstate h) => (int)(h.PagesPerHugePage / (ulong)Vmemmap.PagesPerVmemmapPage);

    /// <summary>The vmemmap pages HVO keeps per folio (HUGETLB_VMEMMAP_RESERVE_SIZE in pages): 2 in KeepTwo, else 1.</summary>
    private int ReservedVmemmapPages => Hvo == HvoMode.KeepTwo ? 2 : 1;

    /// <summary>hugetlb_vmemmap_optimizable_size in pages: what HVO frees per folio of h (0 without HVO).</summary>
    public int OptimizableVmemmapPages(Hstate h) => Hvo == HvoMode.Off ? 0 : VmemmapPages(h) - ReservedVmemmapPages;

    /// <summary>folio_test_hugetlb_vmemmap_optimized.</summary>
    public bool VmemmapOptimized(ulong headPfn) => TestHpg(Head(headPfn), Hpg.VmemmapOptimized);

    /// <summary>Vmemmap frames HVO has freed and not yet restored, over every folio.</summary>
    public long VmemmapFramesFreed => Volatile.Read(ref _vmemmapFramesFreed);
    private long _vmemmapFramesFreed;

    // ---------------------------------------------------------------------------------------------
    // SharedTails: one read-only page of tail struct pages per zone and order
    // ---------------------------------------------------------------------------------------------

    private readonly Lock _sharedLock = new();
    // One zone: index 0 for 2 MiB, 1 for 1 GiB. The frame and how many optimized folios map it (under _sharedLock).
    private readonly ulong[] _sharedTailPfn = new ulong[2];
    private readonly long[] _sharedTailUsers = new long[2];

    /// <summary>The shared tail pages allocated now (one per zone and order in use).</summary>
    public int SharedTailPages
    {
        get { lock (_sharedLock) return (_sharedTailPfn[0] != 0 ? 1 : 0) + (_sharedTailPfn[1] != 0 ? 1 : 0); }
    }

    private static int SharedIndex(Hstate h) => h.IsGigantic ? 1 : 0;

    /// <summary>
    /// The zone's shared tail page for h's order, taken for one more folio: 64 struct pages as a pool
    /// folio's tails read (compound_info = the order's mask | 1, _mapcount -1, nothing else), allocated
    /// on first use and counted in nr_memmap_pages. 0 when it cannot be allocated.
    /// </summary>
    private ulong SharedTailGet(int cpu, Hstate h)
    {
        int i = SharedIndex(h);
        lock (_sharedLock)
        {
            if (_sharedTailPfn[i] == 0)
            {
                ulong pfn = _m.Allocator.AllocPages(cpu, 0, Gfp.Zero | Gfp.RetryMayfail);
                if (pfn == 0) return 0;
                Page* tails = (Page*)_m.Memory.FrameAddress(pfn);
                ulong info = _m.Vmemmap.TailInfo(0, h.Order);
                for (int t = 0; t < Vmemmap.PagesPerVmemmapPage; t++)
                {
                    tails[t].CompoundHead = info;
                    tails[t].MapCount = -1;
                }
                _m.Counters.Add(cpu, VmStat.NrMemmapPages, 1);
                _sharedTailPfn[i] = pfn;
            }
            _sharedTailUsers[i]++;
            return _sharedTailPfn[i];
        }
    }

    /// <summary>One folio stops mapping the shared tail page; the last one frees it (after the caller's flush).</summary>
    private ulong SharedTailPut(Hstate h)
    {
        int i = SharedIndex(h);
        lock (_sharedLock)
        {
            Bug.On(_sharedTailUsers[i] <= 0, "shared tail page put without a user");
            if (--_sharedTailUsers[i] != 0) return 0;
            ulong pfn = _sharedTailPfn[i];
            _sharedTailPfn[i] = 0;
            return pfn;
        }
    }

    // ---------------------------------------------------------------------------------------------
    // Optimize
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// hugetlb_vmemmap_split_folio: split every vmemmap PMD the folio's struct pages lie under. False
    /// (-ENOMEM) when a PTE table cannot be allocated. No flush.
    /// </summary>
    private bool VmemmapSplitFolio(int cpu, Hstate h, ulong headPfn)
    {
        Vmemmap vm = _m.Vmemmap;
        ulong v0 = headPfn / (ulong)Vmemmap.PagesPerVmemmapPage;
        ulong end = v0 + (ulong)VmemmapPages(h);
        for (ulong v = v0; v < end; v = (v | 511) + 1)
        {
            if (!vm.IsPmdMapped(v)) continue;
            ulong table = _m.Allocator.AllocPages(cpu, 0, Gfp.Zero | Gfp.RetryMayfail);
            if (table == 0) return false;
            if (!vm.SplitVmemmapHugePmd(v, table)) _m.Allocator.FreePages(cpu, table, 0);
        }
        return true;
    }

    /// <summary>
    /// __hugetlb_vmemmap_optimize_folio with VMEMMAP_REMAP_NO_TLB_FLUSH: remap the folio's tail vmemmap
    /// PTEs onto the reuse page, collecting the frames they pointed at into <paramref name="freed"/>.
    /// False when a PMD split or the shared page cannot be allocated (the folio stays unoptimized).
    /// </summary>
    private bool OptimizeFolio(int cpu, Hstate h, ulong headPfn, List<ulong> freed)
    {
        Vmemmap vm = _m.Vmemmap;
        if (!VmemmapSplitFolio(cpu, h, headPfn)) return false;
        ulong v0 = headPfn / (ulong)Vmemmap.PagesPerVmemmapPage;
        ulong end = v0 + (ulong)VmemmapPages(h);
        ulong first = v0 + (ulong)ReservedVmemmapPages;
        ulong reuse;
        bool writable = false;
        switch (Hvo)
        {
            case HvoMode.KeepTwo:
                reuse = vm.PtePfn(v0 + 1);
                writable = true; // the RFC's mapping; the read-only one came from review
                break;
            case HvoMode.KeepHead:
                reuse = vm.PtePfn(v0);
                break;
            default:
                reuse = SharedTailGet(cpu, h);
                if (reuse == 0) return false;
                break;
        }
        // static_branch_inc(&hugetlb_optimize_vmemmap_key) before any fake head can be seen.
        if (Hvo == HvoMode.KeepHead) vm.FakeHeadKey(+1);
        for (ulong v = first; v < end; v++)
        {
            freed.Add(vm.PtePfn(v));
            vm.SetPte(v, reuse, writable);
        }
        SetHpg(Head(headPfn), Hpg.VmemmapOptimized);
        Interlocked.Add(ref _vmemmapFramesFreed, (long)(end - first));
        return true;
    }

    /// <summary>free_vmemmap_page_list: boot-time frames to free_bootmem_page, the others to the buddy lists, each out of its memmap counter.</summary>
    private void FreeVmemmapPageList(int cpu, List<ulong> frames)
    {
        foreach (ulong pfn in frames)
        {
            if (_m.Vmemmap.PfnToPage(pfn)->TestFlag(PG.Reserved))
            {
                _m.Counters.Add(cpu, VmStat.NrMemmapBootPages, -1);
                _m.Allocator.FreeBootmemPage(cpu, pfn);
            }
            else
            {
                _m.Counters.Add(cpu, VmStat.NrMemmapPages, -1);
                _m.Allocator.FreePages(cpu, pfn, 0);
            }
        }
    }

    /// <summary>
    /// hugetlb_vmemmap_optimize_folios (6.7): split every folio's vmemmap PMDs (stopping at the first
    /// -ENOMEM), flush_tlb_all, remap every folio without flushing, flush_tlb_all, then free the frames.
    /// Folios that could not be optimized stay as they are. Runs on fresh folios no one else can see.
    /// </summary>
    private void AfterAllocBatch(int cpu, Hstate h, List<ulong> folios)
    {
        if (!OptimizeNow || folios.Count == 0) return;
        foreach (ulong pfn in folios)
            if (!VmemmapSplitFolio(cpu, h, pfn)) break;
        _m.Vmemmap.FlushTlbAll();
        var freed = new List<ulong>();
        foreach (ulong pfn in folios)
        {
            if (OptimizeFolio(cpu, h, pfn, freed)) continue;
            if (freed.Count == 0) continue;
            // ENOMEM halfway: free what was gathered and try this folio once more.
            _m.Vmemmap.FlushTlbAll();
            FreeVmemmapPageList(cpu, freed);
            freed.Clear();
            OptimizeFolio(cpu, h, pfn, freed);
        }
        _m.Vmemmap.FlushTlbAll();
        FreeVmemmapPageList(cpu, freed);
    }

    // ---------------------------------------------------------------------------------------------
    // Restore
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// __hugetlb_vmemmap_restore_folio with VMEMMAP_REMAP_NO_TLB_FLUSH (vmemmap_remap_alloc): frames
    /// for every remapped tail vmemmap page, each a copy of the page they were mapped onto (a copy of
    /// the head page with reset_struct_pages), mapped writable. False, with nothing changed, when the
    /// frames cannot all be allocated. Returns the shared tail page to free when this was its last user.
    /// </summary>
    private bool RestoreFolio(int cpu, Hstate h, ulong headPfn, out ulong sharedToFree)
    {
        sharedToFree = 0;
        Page* head = Head(headPfn);
        if (!TestHpg(head, Hpg.VmemmapOptimized)) return true;
        Vmemmap vm = _m.Vmemmap;
        ulong v0 = headPfn / (ulong)Vmemmap.PagesPerVmemmapPage;
        ulong end = v0 + (ulong)VmemmapPages(h);
        ulong first = v0 + (ulong)ReservedVmemmapPages;
        int need = (int)(end - first);
        // alloc_vmemmap_page_list: all or nothing.
        var frames = new ulong[need];
        for (int i = 0; i < need; i++)
        {
            frames[i] = _m.Allocator.AllocPages(cpu, 0, Gfp.RetryMayfail);
            if (frames[i] != 0) continue;
            for (int j = 0; j < i; j++) _m.Allocator.FreePages(cpu, frames[j], 0);
            return false;
        }
        ulong reuse = vm.PtePfn(first);
        byte* from = vm.FrameHost(reuse);
        for (int i = 0; i < need; i++)
        {
            byte* to = vm.FrameHost(frames[i]);
            Buffer.MemoryCopy(from, to, Geometry.PageSize, Geometry.PageSize);
            if (Hvo == HvoMode.KeepHead) ResetStructPages((Page*)to);
            vm.SetPte(first + (ulong)i, frames[i], writable: true);
        }
        _m.Counters.Add(cpu, VmStat.NrMemmapPages, need);
        ClearHpg(head, Hpg.VmemmapOptimized); // the fake-head key drops after the batch's flush
        if (Hvo == HvoMode.SharedTails) sharedToFree = SharedTailPut(h);
        Interlocked.Add(ref _vmemmapFramesFreed, -need);
        return true;
    }

    /// <summary>reset_struct_pages: a copy of the head vmemmap page must not carry head or folio fields in tail positions.</summary>
    private static void ResetStructPages(Page* start)
        => Buffer.MemoryCopy(start + NrResetStructPage, start, NrResetStructPage * Page.Size, NrResetStructPage * Page.Size);

    /// <summary>
    /// hugetlb_vmemmap_restore_folios: restore each folio's vmemmap (one flush_tlb_all for the batch),
    /// returning the folios that could not be restored. Folios out of the pool's accounting, frozen.
    /// </summary>
    private List<ulong> RestoreFolios(int cpu, Hstate h, List<ulong> folios)
    {
        var failed = new List<ulong>();
        var sharedFree = new List<ulong>();
        int restored = 0;
        foreach (ulong pfn in folios)
        {
            if (!VmemmapOptimized(pfn)) continue;
            if (RestoreFolio(cpu, h, pfn, out ulong shared)) restored++;
            else failed.Add(pfn);
            if (shared != 0) sharedFree.Add(shared);
        }
        if (restored > 0) _m.Vmemmap.FlushTlbAll();
        // static_branch_dec once no stale translation can show a fake head any more.
        if (Hvo == HvoMode.KeepHead)
            for (int i = 0; i < restored; i++) _m.Vmemmap.FakeHeadKey(-1);
        foreach (ulong pfn in sharedFree)
        {
            _m.Counters.Add(cpu, VmStat.NrMemmapPages, -1);
            _m.Allocator.FreePages(cpu, pfn, 0);
        }
        return failed;
    }

    /// <summary>A one-line summary of the vmemmap state, for reports.</summary>
    public string DescribeVmemmap() => string.Create(CultureInfo.InvariantCulture,
        $"hvo={Hvo} freed={VmemmapFramesFreed} split_pmds={_m.Vmemmap.SplitPmds} shared_pages={SharedTailPages} kernel_tlb_flushes={_m.Vmemmap.KernelTlbFlushes}");
}
