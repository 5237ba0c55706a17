using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Sync;

namespace NativeMmu.Physical;

/// <summary>gfp_t bits this emulator honours.</summary>
[Flags]
public enum Gfp : uint
{
    None = 0,
    /// <summary>__GFP_ZERO: the pages come back cleared.</summary>
    Zero = 1,
    /// <summary>__GFP_COMP: a compound page (folio) with head and tails.</summary>
    Comp = 2,
    /// <summary>
    /// __GFP_RETRY_MAYFAIL: the caller copes with failure. Only such allocations consult the
    /// fail_page_alloc hook (<see cref="FrameAllocator.FailPageAlloc"/>), since only their callers have
    /// a failure path to exercise.
    /// </summary>
    RetryMayfail = 4,
}

/// <summary>
/// The page allocator of mm/page_alloc.c for one zone: a buddy allocator over orders 0..10 whose free
/// lists run through struct page (buddy_list, PageBuddy, order in private), fronted by per-CPU order-0
/// lists (per_cpu_pages) on the fast path.
/// </summary>
public sealed unsafe class FrameAllocator : IDisposable
{
    /// <summary>MAX_PAGE_ORDER.</summary>
    public const int MaxOrder = 10;
    public const int NrOrders = MaxOrder + 1;

    private readonly PhysicalMemory _phys;
    private readonly Vmemmap _vmemmap;
    private readonly PerCpuCounters _counters;
    private readonly ulong _zoneStart, _zoneEnd;

    // zone->lock protects the free areas and nr_free; a word on its own cache line.
    private readonly int* _zoneLock;
    private readonly FreeArea[] _freeArea = new FreeArea[NrOrders];
    /// <summary>
    /// Pages on the buddy lists: changed under the zone lock, with Volatile stores so that FreeFrames
    /// and BuddyFreePages, which read it without the lock, see a whole value (possibly a moment old).
    /// </summary>
    private long _buddyFreePages;

    // per_cpu_pages: each row is touched only by the CPU that owns it.
    private readonly PerCpuPages* _pcp;
    private readonly int _cpus;

    private struct FreeArea
    {
        /// <summary>The first free block's pfn; 0 (a reserved frame) means empty.</summary>
        public ulong Head;
        public long NrFree;
    }

    /// <summary>
    /// per_cpu_pages with its one order-0 list, doubly linked through pcp_list as the kernel's: a freed
    /// page goes on at the head and an allocation takes the head, so the page reused next is the one
    /// freed last, still in the cache; rmqueue_bulk adds the pages it brings from the buddy lists at the
    /// tail, and free_pcppages_bulk gives back the tail, the pages longest unused.
    /// </summary>
    [StructLayout(LayoutKind.Explicit, Size = 64)]
    private struct PerCpuPages
    {
        /// <summary>The first page of the list (0 = empty): the next allocation's.</summary>
        [FieldOffset(0)] public ulong Head;
        /// <summary>Written only by the owning CPU, with Volatile stores: FreeFrames sums it from any thread without the list.</summary>
        [FieldOffset(8)] public int Count;
        [FieldOffset(12)] public int High;
        [FieldOffset(16)] public int Batch;
        /// <summary>
        /// How many pages at the tail came from the buddy lists (rmqueue_bulk) and have not been handed out:
        /// frames no CPU has touched for a while, unlike the freed ones in front of them.
        /// </summary>
        [FieldOffset(20)] public int FromBuddy;
        /// <summary>The last page of the list (0 = empty).</summary>
        [FieldOffset(24)] public ulong Tail;
    }

    internal FrameAllocator(PhysicalMemory phys, Vmemmap vmemmap, PerCpuCounters counters, int cpus,
        ulong zoneStart, int pcpHigh, int pcpBatch)
    {
        _phys = phys;
        _vmemmap = vmemmap;
        _counters = counters;
        _cpus = cpus;
        _zoneStart = zoneStart;
        _zoneEnd = phys.Frames;
        _pcp = (PerCpuPages*)NativeMemory.AlignedAlloc((nuint)(cpus * sizeof(PerCpuPages)), 64);
        _zoneLock = (int*)NativeMemory.AlignedAlloc(64, 64);
        *_zoneLock = 0;
        for (int c = 0; c < cpus; c++)
            _pcp[c] = new PerCpuPages { Head = 0, Count = 0, High = pcpHigh, Batch = pcpBatch };
    }

    /// <summary>
    /// The frames the zone manages (present_pages minus the boot-time reservations, plus boot-time
    /// frames handed over later, as free_bootmem_page does with freed vmemmap pages).
    /// </summary>
    public ulong ManagedPages => _zoneEnd - _zoneStart + (ulong)Volatile.Read(ref _managedAdjust);

    /// <summary>adjust_managed_page_count: boot-time frames given to the allocator after boot. Interlocked.</summary>
    private long _managedAdjust;

    /// <summary>
    /// fail_page_alloc (should_fail_alloc_page): when set, asked before each allocation that carries
    /// <see cref="Gfp.RetryMayfail"/>; true makes that allocation fail. Tests set it to drive the
    /// failure paths (vmemmap restore); null otherwise.
    /// </summary>
    public Func<int, bool>? FailPageAlloc { get; set; }
    public ulong ZoneStartPfn => _zoneStart;

    /// <summary>Free frames: the buddy lists plus every CPU's pcp list.</summary>
    public long FreeFrames
    {
        get
        {
            long total = Volatile.Read(ref _buddyFreePages);
            for (int c = 0; c < _cpus; c++) total += Volatile.Read(ref _pcp[c].Count);
            return total;
        }
    }

    /// <summary>NR_FREE_PAGES: pages on the buddy lists (pcp pages are not counted, as in the kernel).</summary>
    public long BuddyFreePages => Volatile.Read(ref _buddyFreePages);

    public long PcpPages(int cpu) => Volatile.Read(ref _pcp[cpu].Count);

    /// <summary>How many pages at the tail of a CPU's list came from the buddy lists and are still there (the owner's view).</summary>
    internal int PcpFromBuddy(int cpu) => _pcp[cpu].FromBuddy;

    /// <summary>Whether the CPU's next order-0 allocation hands out one of those pages (the owner's view).</summary>
    internal bool NextFromBuddy(int cpu) => HeadFromBuddy(_pcp + cpu);

    /// <summary>The list's head is one of the pages at its tail that came from the buddy lists: there are no others in front.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool HeadFromBuddy(PerCpuPages* pcp) => pcp->Count > 0 && pcp->Count <= pcp->FromBuddy;

    /// <summary>Hands every frame from the zone start to the end of memory to the buddy lists (memblock_free_all).</summary>
    internal void FreeAllBootMemory()
    {
        ulong pfn = _zoneStart;
        while (pfn < _zoneEnd)
        {
            int order = MaxOrder;
            while (order > 0 && ((pfn & ((1UL << order) - 1)) != 0 || pfn + (1UL << order) > _zoneEnd)) order--;
            for (ulong i = 0; i < (1UL << order); i++)
            {
                Page* p = Page(pfn + i);
                p->Flags = 0;
                p->RefCount = 0;
                p->MapCount = -1;
            }
            Spin.Lock(LockWord);
            FreeOneBlock(pfn, order);
            Spin.Unlock(LockWord);
            pfn += 1UL << order;
        }
    }

    private int* LockWord => _zoneLock;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Page* Page(ulong pfn) => _vmemmap.PfnToPage(pfn);

    /// <summary>
    /// alloc_pages: 2^order contiguous frames with refcount 1, or 0 when memory is exhausted.
    /// Order 0 comes from the calling CPU's pcp list, refilled from the buddy lists a batch at a time.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong AllocPages(int cpu, int order, Gfp gfp)
    {
        // gfp is a constant at every call site: for callers without RetryMayfail this folds away.
        if ((gfp & Gfp.RetryMayfail) != 0 && FailPageAlloc is { } fail && fail(order)) return 0;
        ulong pfn = order == 0 ? RmqueuePcp(cpu) : RmqueueBuddy(order);
        if (pfn == 0) return 0;
        PrepNewPage(pfn, Page(pfn), order, gfp);
        _counters.Add(cpu, VmEvent.PgallocNormal, 1L << order);
        return pfn;
    }

    /// <summary>__free_pages: drops a reference; frees the block when it was the last one.</summary>
    public void FreePages(int cpu, ulong pfn, int order)
    {
        Page* page = Page(pfn);
        if (PutPageTestZero(page)) FreeFrozenPages(cpu, pfn, order);
    }

    /// <summary>put_page_testzero: VM_BUG_ON a page whose count is already zero (a double free).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool PutPageTestZero(Page* page)
    {
        int after = Interlocked.Decrement(ref page->RefCount);
        if (after < 0) Bug.Throw("put_page on a page whose refcount is already zero (double free)");
        return after == 0;
    }

    /// <summary>free_frozen_pages / free_unref_page: the refcount is already zero; return the block.</summary>
    public void FreeFrozenPages(int cpu, ulong pfn, int order)
    {
        if (order == 0)
        {
            FreeFrozenPage(cpu, pfn, Page(pfn));
            return;
        }
        _ = FreePagesPrepare(pfn, Page(pfn), order); // order > 0: never refused
        _counters.Add(cpu, VmEvent.Pgfree, 1L << order);
        Spin.Lock(LockWord);
        FreeOneBlock(pfn, order);
        Spin.Unlock(LockWord);
    }

    /// <summary>free_frozen_pages for one order-0 page whose struct page the caller already has: onto this CPU's pcp list.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void FreeFrozenPage(int cpu, ulong pfn, Page* page)
    {
        if (!FreePagesPrepare(pfn, page, 0)) return;
        _counters.Add(cpu, VmEvent.Pgfree, 1);
        PerCpuPages* pcp = _pcp + cpu;
        PcpAddHead(pcp, pfn, page);
        if (pcp->Count >= pcp->High) FreePcppagesBulk(cpu, pcp->Batch);
    }

    /// <summary>list_add of pcp_list: the page becomes the list's head.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PcpAddHead(PerCpuPages* pcp, ulong pfn, Page* page)
    {
        page->LruPrev = 0;
        if (pcp->Head == 0)
        {
            page->LruNext = 0;
            pcp->Tail = pfn;
        }
        else
        {
            page->LruNext = LruVaddr(pcp->Head);
            Page(pcp->Head)->LruPrev = LruVaddr(pfn);
        }
        pcp->Head = pfn;
        Volatile.Write(ref pcp->Count, pcp->Count + 1);
    }

    /// <summary>list_add_tail of pcp_list.</summary>
    private void PcpAddTail(PerCpuPages* pcp, ulong pfn)
    {
        Page* page = Page(pfn);
        page->LruNext = 0;
        if (pcp->Tail == 0)
        {
            page->LruPrev = 0;
            pcp->Head = pfn;
        }
        else
        {
            page->LruPrev = LruVaddr(pcp->Tail);
            Page(pcp->Tail)->LruNext = LruVaddr(pfn);
        }
        pcp->Tail = pfn;
        Volatile.Write(ref pcp->Count, pcp->Count + 1);
    }

    /// <summary>list_first_entry + list_del: takes the head. The list is not empty.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong PcpTakeHead(PerCpuPages* pcp)
    {
        ulong pfn = pcp->Head;
        if (HeadFromBuddy(pcp)) pcp->FromBuddy--;
        PcpDel(pcp, Page(pfn));
        return pfn;
    }

    /// <summary>list_last_entry + list_del: takes the tail. The list is not empty.</summary>
    private ulong PcpTakeTail(PerCpuPages* pcp)
    {
        ulong pfn = pcp->Tail;
        if (pcp->FromBuddy > 0) pcp->FromBuddy--;
        PcpDel(pcp, Page(pfn));
        return pfn;
    }

    /// <summary>list_del of pcp_list: unlinks the page from its neighbours (or the list's ends).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PcpDel(PerCpuPages* pcp, Page* page)
    {
        ulong prev = page->LruPrev, next = page->LruNext;
        if (prev == 0) pcp->Head = next == 0 ? 0 : PfnOfLru(next);
        else Page(PfnOfLru(prev))->LruNext = next;
        if (next == 0) pcp->Tail = prev == 0 ? 0 : PfnOfLru(prev);
        else Page(PfnOfLru(next))->LruPrev = prev;
        page->LruNext = page->LruPrev = 0;
        Volatile.Write(ref pcp->Count, pcp->Count - 1);
    }

    /// <summary>
    /// A hint after an order-0 allocation: when the frame this CPU hands out next came from the buddy
    /// lists, its lines are requested now, so that zeroing it later finds them instead of waiting for
    /// each in turn behind the stores. A frame freed to the list lately is left alone; it is still in
    /// the cache, and asking for it again only costs. Nothing is read into a decision.
    /// </summary>
    /// <remarks>
    /// The lines are asked into L2 (prefetcht2), not L1: the zeroing's stores need them near, not in
    /// the L1, and a prefetch into L1 holds a miss buffer per line until its data arrives. Where the
    /// hardware's own stream prefetch already keeps up with the zeroing (Zen 4), 64 such prefetches
    /// stalled the fault behind their miss buffers: page_fault1 took 329 ns a fault with them against
    /// 266 ns with no hint; with prefetcht2, 278-290 ns, and from 128 MiB to 8 GiB it ties with none.
    /// The hint stays for machines whose zeroing waits on each line from memory, where it was added
    /// (page_fault1 317 → 187 ns a fault).
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void PrefetchNextFrame(int cpu)
    {
        PerCpuPages* pcp = _pcp + cpu;
        if (!System.Runtime.Intrinsics.X86.Sse.IsSupported || !HeadFromBuddy(pcp)) return;
        byte* frame = _phys.FrameAddress(pcp->Head);
        for (int line = 0; line < (int)Geometry.PageSize; line += 64) System.Runtime.Intrinsics.X86.Sse.Prefetch2(frame + line);
    }

    /// <summary>drain_local_pages: return a CPU's pcp pages to the buddy lists.</summary>
    public void DrainPcp(int cpu) => FreePcppagesBulk(cpu, _pcp[cpu].Count);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong RmqueuePcp(int cpu)
    {
        PerCpuPages* pcp = _pcp + cpu;
        if (pcp->Count == 0 && !RmqueueBulk(cpu, pcp->Batch)) return 0;
        return PcpTakeHead(pcp);
    }

    /// <summary>
    /// rmqueue_bulk: move up to count order-0 pages from the buddy lists to the tail of the CPU's pcp
    /// list (list_add_tail), in the order the buddy hands them out, so the CPU then uses them in
    /// ascending address order.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private bool RmqueueBulk(int cpu, int count)
    {
        PerCpuPages* pcp = _pcp + cpu;
        int n = 0;
        Spin.Lock(LockWord);
        while (n < count)
        {
            ulong pfn = RmqueueSmallest(0);
            if (pfn == 0) break;
            PcpAddTail(pcp, pfn);
            n++;
        }
        Spin.Unlock(LockWord);
        pcp->FromBuddy += n;
        return pcp->Count > 0;
    }

    /// <summary>free_pcppages_bulk: up to count pages from the tail of the list back to the buddy lists.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreePcppagesBulk(int cpu, int count)
    {
        PerCpuPages* pcp = _pcp + cpu;
        Spin.Lock(LockWord);
        while (count-- > 0 && pcp->Count > 0) FreeOneBlock(PcpTakeTail(pcp), 0);
        Spin.Unlock(LockWord);
    }

    private ulong RmqueueBuddy(int order)
    {
        Bug.On(order is < 0 or > MaxOrder, "alloc_pages order out of range");
        Spin.Lock(LockWord);
        ulong pfn = RmqueueSmallest(order);
        Spin.Unlock(LockWord);
        return pfn;
    }

    /// <summary>__rmqueue_smallest: the first non-empty list at or above order, split down by expand(). Zone lock held.</summary>
    private ulong RmqueueSmallest(int order)
    {
        for (int current = order; current <= MaxOrder; current++)
        {
            ulong pfn = _freeArea[current].Head;
            if (pfn == 0) continue;
            DelFromFreeList(pfn, current);
            // expand: hand the upper halves back, largest first.
            for (int o = current; o > order; o--)
            {
                ulong buddy = pfn + (1UL << (o - 1));
                AddToFreeList(buddy, o - 1);
            }
            return pfn;
        }
        return 0;
    }

    /// <summary>__free_one_page: merge with free buddies as far as possible. Zone lock held.</summary>
    private void FreeOneBlock(ulong pfn, int order)
    {
        while (order < MaxOrder)
        {
            ulong buddy = pfn ^ (1UL << order);
            if (buddy < _zoneStart || buddy + (1UL << order) > _zoneEnd) break;
            Page* bp = Page(buddy);
            if (bp->PageType != (PageTypes.Buddy << 24) || (int)bp->Private != order) break;
            DelFromFreeList(buddy, order);
            pfn &= buddy;
            order++;
        }
        AddToFreeList(pfn, order);
    }

    private void AddToFreeList(ulong pfn, int order)
    {
        Page* p = Page(pfn);
        Bug.On(p->PageType != PageTypes.NoType, "__SetPageBuddy on a page that has a type or mappings");
        p->PageType = PageTypes.Buddy << 24;
        p->Private = (ulong)order;
        ref FreeArea area = ref _freeArea[order];
        p->LruPrev = 0;
        p->LruNext = area.Head == 0 ? 0 : LruVaddr(area.Head);
        if (area.Head != 0) Page(area.Head)->LruPrev = LruVaddr(pfn);
        area.Head = pfn;
        area.NrFree++;
        Volatile.Write(ref _buddyFreePages, _buddyFreePages + (1L << order));
    }

    private void DelFromFreeList(ulong pfn, int order)
    {
        Page* p = Page(pfn);
        ref FreeArea area = ref _freeArea[order];
        if (p->LruPrev != 0) Page(PfnOfLru(p->LruPrev))->LruNext = p->LruNext;
        else area.Head = p->LruNext == 0 ? 0 : PfnOfLru(p->LruNext);
        if (p->LruNext != 0) Page(PfnOfLru(p->LruNext))->LruPrev = p->LruPrev;
        p->LruNext = p->LruPrev = 0;
        p->PageType = PageTypes.NoType;
        p->Private = 0;
        area.NrFree--;
        Volatile.Write(ref _buddyFreePages, _buddyFreePages - (1L << order));
    }

    /// <summary>The kernel virtual address of the page's lru list_head (what buddy_list.next holds).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong LruVaddr(ulong pfn) => _vmemmap.PageVaddr(pfn) + 8;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong PfnOfLru(ulong lruVaddr) => _vmemmap.PfnOfVaddr(lruVaddr - 8);

    /// <summary>prep_new_page: check the expected free state, take the first reference, zero, build the compound page.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void PrepNewPage(ulong pfn, Page* p, int order, Gfp gfp)
    {
        if (p->MapCount != -1 || p->Mapping != 0 || p->RefCount != 0 || (p->Flags & PG.CheckAtPrep) != 0)
            BadPage(pfn, "allocated page is not in the free state");
        p->LruNext = 0;
        p->RefCount = 1;
        if ((gfp & Gfp.Zero) != 0)
        {
            // clear_highpage per page of the block, as folio_zero_user clears a large folio.
            byte* frame = _phys.FrameAddress(pfn);
            for (ulong i = 0; i < (1UL << order); i++) PhysicalMemory.ClearPage(frame + (i << Geometry.PageShift));
        }
        if (order > 0 && (gfp & Gfp.Comp) != 0) PrepCompoundPage(pfn, order);
    }

    /// <summary>prep_compound_page: PG_head on the head, compound_head (or compound_info) on every tail, then the folio fields.</summary>
    private void PrepCompoundPage(ulong pfn, int order)
    {
        Page* head = Page(pfn);
        head->SetFlag(PG.Head); // __SetPageHead: nobody else can see the block yet
        ulong headVaddr = _vmemmap.PageVaddr(pfn);
        ulong info = _vmemmap.TailInfo(headVaddr, order); // head | 1, or the compound_info mask
        for (ulong i = 1; i < (1UL << order); i++)
            Page(pfn + i)->CompoundHead = info;
        PrepCompoundHead(LargeFolio.Of(head), headVaddr, order);
    }

    /// <summary>
    /// prep_compound_head (mm/internal.h): folio_set_order, the mapcounts at their "unmapped" values,
    /// no pins, no MM ids, and an empty deferred-split list for folios that have a page[2].
    /// </summary>
    private static void PrepCompoundHead(LargeFolio* folio, ulong headVaddr, int order)
    {
        // folio_set_order: the order lives in the low byte of page[1].flags; _nr_pages after it.
        folio->Flags1 = (ulong)order;
        folio->NrPages = 1UL << order;
        folio->LargeMapcount = -1;
        folio->NrPagesMapped = 0;
        folio->EntireMapcount = -1;
        folio->Pincount = 0;
        folio->MmIdMapcount[0] = -1;
        folio->MmIdMapcount[1] = -1;
        folio->MmIds = 0;
        if (order > 1)
        {
            ulong self = headVaddr + (ulong)FolioLayout.DeferredList; // INIT_LIST_HEAD
            folio->DeferredListNext = self;
            folio->DeferredListPrev = self;
        }
    }

    /// <summary>free_tail_page_prepare's checks of the folio fields: what must hold of a large folio when it is freed.</summary>
    private static string? FolioBadAtFree(LargeFolio* folio, ulong headVaddr, int order)
    {
        if (folio->LargeMapcount != -1) return "nonzero large_mapcount";
        if (folio->NrPagesMapped != 0) return "nonzero nr_pages_mapped";
        if (folio->MmIdMapcount[0] != -1 || folio->MmIdMapcount[1] != -1) return "nonzero mm mapcount";
        if (folio->EntireMapcount != -1) return "nonzero entire_mapcount";
        if (folio->Pincount != 0) return "nonzero pincount";
        if (order > 1 && folio->DeferredListNext != headVaddr + (ulong)FolioLayout.DeferredList) return "on deferred list";
        return null;
    }

    /// <summary>
    /// free_pages_prepare: drop anon mapping, check for a bad page, clear the flags, undo the compound.
    /// False for a hardware-poisoned order-0 page, which must not reach the free lists ("Do not let
    /// hwpoison pages hit pcplists/buddy"); a poisoned subpage of a larger block keeps its flag and is
    /// taken off the lists afterwards (take_page_off_buddy).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool FreePagesPrepare(ulong pfn, Page* p, int order)
    {
        if ((p->Mapping & PageTypes.MappingFlags) != 0) p->Mapping = 0;
        if (p->MapCount != -1 || p->Mapping != 0 || p->RefCount != 0 || (p->Flags & PG.CheckAtFree) != 0)
            BadPage(pfn, "freed page is still mapped, referenced or flagged");
        if (order > 0 && p->IsHead) FreeTailPagesPrepare(pfn, p, order);
        if (order == 0 && p->TestFlag(PG.Hwpoison)) return false;
        p->Flags &= ~PG.ClearAtFree;
        p->Private = 0;
        p->Index = 0;
        p->MemcgData = 0;
        return true;
    }

    // ---------------------------------------------------------------------------------------------
    // Ranges above MAX_PAGE_ORDER (alloc_contig_pages, free_contig_range) and poisoned pages
    // (take_page_off_buddy), free_bootmem_page for boot-time frames.
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// alloc_contig_pages / folio_alloc_gigantic: 2^order naturally aligned frames (order above
    /// MAX_PAGE_ORDER), taken from the buddy lists where every frame of such a range is free there, as a
    /// compound page with refcount 1 when <see cref="Gfp.Comp"/>; 0 when no such range exists. The
    /// calling CPU's pcp list is drained first; pages on other CPUs' pcp lists, or in use, make a range
    /// unusable: this allocator does not migrate, so a range is taken only when it is wholly free
    /// (alloc_contig_range's isolate + migrate step succeeding trivially).
    /// </summary>
    public ulong AllocContigPages(int cpu, int order, Gfp gfp)
    {
        Bug.On(order <= MaxOrder, "alloc_contig_pages for an order the buddy lists serve");
        if ((gfp & Gfp.RetryMayfail) != 0 && FailPageAlloc is { } fail && fail(order)) return 0;
        ulong nr = 1UL << order;
        DrainPcp(cpu);
        ulong found = 0;
        Spin.Lock(LockWord);
        for (ulong start = (_zoneStart + nr - 1) & ~(nr - 1); start + nr <= _zoneEnd; start += nr)
        {
            if (!RangeFreeInBuddy(start, start + nr)) continue;
            for (ulong pfn = start; pfn < start + nr;)
            {
                int o = (int)Page(pfn)->Private;
                DelFromFreeList(pfn, o);
                pfn += 1UL << o;
            }
            found = start;
            break;
        }
        Spin.Unlock(LockWord);
        if (found == 0) return 0;
        for (ulong pfn = found; pfn < found + nr; pfn++)
        {
            Page* p = Page(pfn);
            if (p->MapCount != -1 || p->Mapping != 0 || p->RefCount != 0 || (p->Flags & PG.CheckAtPrep) != 0)
                BadPage(pfn, "allocated page is not in the free state");
        }
        PrepNewPage(found, Page(found), order, gfp & ~Gfp.Comp);
        // prep_new_page checked the head; the loop above checked the rest as check_new_pages does.
        if ((gfp & Gfp.Comp) != 0) PrepCompoundPage(found, order);
        _counters.Add(cpu, VmEvent.PgallocNormal, (long)nr);
        return found;
    }

    /// <summary>Whether [start, end) is covered by free buddy blocks, each wholly inside it. Zone lock held.</summary>
    private bool RangeFreeInBuddy(ulong start, ulong end)
    {
        for (ulong pfn = start; pfn < end;)
        {
            Page* p = Page(pfn);
            if (p->PageType != (PageTypes.Buddy << 24)) return false;
            ulong size = 1UL << (int)p->Private;
            if (pfn + size > end) return false;
            pfn += size;
        }
        return true;
    }

    /// <summary>
    /// free_contig_range for a gigantic folio whose refcount is already zero: the compound is undone
    /// (free_pages_prepare over the whole range), then the frames go back to the buddy lists in
    /// MAX_PAGE_ORDER blocks.
    /// </summary>
    public void FreeFrozenContigRange(int cpu, ulong pfn, int order)
    {
        Bug.On(order <= MaxOrder, "free_contig_range for an order the buddy lists serve");
        _ = FreePagesPrepare(pfn, Page(pfn), order); // order > 0: never refused
        ulong nr = 1UL << order;
        _counters.Add(cpu, VmEvent.Pgfree, (long)nr);
        Spin.Lock(LockWord);
        for (ulong p = pfn; p < pfn + nr; p += 1UL << MaxOrder) FreeOneBlock(p, MaxOrder);
        Spin.Unlock(LockWord);
    }

    /// <summary>
    /// The page-allocator half of demote_free_hugetlb_folios: the naturally aligned 2^order frames at
    /// pfn, part of a larger compound page being demoted, become a compound page of their own
    /// (clear_compound_head on its first page, then prep_compound_page). The caller owns every frame.
    /// </summary>
    internal void PrepCompoundPageForDemote(ulong pfn, int order)
    {
        Page* head = Page(pfn);
        head->CompoundHead = 0; // clear_compound_head: it was a tail of the bigger folio
        head->Mapping = 0;
        PrepCompoundPage(pfn, order);
    }

    /// <summary>
    /// take_page_off_buddy: the free block holding pfn is split down (break_down_buddy_pages) and the
    /// page taken out, so a hardware-poisoned page is never handed out. False when the page is not on the
    /// buddy lists (in use, or on a pcp list).
    /// </summary>
    public bool TakePageOffBuddy(ulong pfn)
    {
        Spin.Lock(LockWord);
        try
        {
            for (int order = 0; order <= MaxOrder; order++)
            {
                ulong start = pfn & ~((1UL << order) - 1);
                if (start < _zoneStart) break;
                Page* p = Page(start);
                if (p->PageType != (PageTypes.Buddy << 24) || (int)p->Private < order) continue;
                int blockOrder = (int)p->Private;
                DelFromFreeList(start, blockOrder);
                // break_down_buddy_pages: keep halving, giving back the half without the target.
                ulong lo = start;
                for (int o = blockOrder; o > 0; o--)
                {
                    ulong half = 1UL << (o - 1);
                    if (pfn >= lo + half) { AddToFreeList(lo, o - 1); lo += half; }
                    else AddToFreeList(lo + half, o - 1);
                }
                return true;
            }
            return false;
        }
        finally
        {
            Spin.Unlock(LockWord);
        }
    }

    /// <summary>
    /// free_bootmem_page: a frame the boot allocator handed out (PG_reserved, one reference) joins the
    /// allocator's free frames (ClearPageReserved, adjust_managed_page_count, __free_page).
    /// </summary>
    public void FreeBootmemPage(int cpu, ulong pfn)
    {
        Page* p = Page(pfn);
        Bug.On(!p->TestFlag(PG.Reserved) || p->RefCount != 1, "free_bootmem_page on a page not reserved at boot");
        p->ClearFlag(PG.Reserved);
        p->RefCount = 0;
        p->Mapping = 0;
        p->MapCount = -1;
        Interlocked.Increment(ref _managedAdjust);
        FreeFrozenPages(cpu, pfn, 0);
    }

    /// <summary>free_pages_prepare's compound part: the folio fields checked, every tail page's compound state undone.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void FreeTailPagesPrepare(ulong pfn, Page* p, int order)
    {
        LargeFolio* folio = LargeFolio.Of(p);
        if (FolioBadAtFree(folio, _vmemmap.PageVaddr(pfn), order) is { } why) BadPage(pfn, why);
        // folio->_nr_pages = 0: it overlays page[1]'s memcg_data, which the tail loop leaves alone.
        folio->NrPages = 0;
        for (ulong i = 1; i < (1UL << order); i++)
        {
            Page* t = Page(pfn + i);
            // free_tail_page_prepare: page[1] and page[2] carry folio fields in the union words.
            t->CompoundHead = 0;
            t->LruPrev = 0;
            t->Mapping = 0;
            t->Index = 0;
            t->Private = 0;
            t->MapCount = -1;
            t->Flags &= ~PG.ClearAtFree;
            if (t->RefCount != 0) BadPage(pfn + i, "tail page has a reference");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void BadPage(ulong pfn, string reason)
    {
        Page* p = Page(pfn);
        Bug.Throw($"Bad page state: pfn {pfn:x}: {reason} (flags {p->Flags:x} mapping {p->Mapping:x} mapcount {p->MapCount} refcount {p->RefCount})");
    }

    public void Dispose()
    {
        NativeMemory.AlignedFree(_pcp);
        NativeMemory.AlignedFree(_zoneLock);
    }
}
