using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// struct hstate (include/linux/hugetlb.h) for one huge page size: its order and the pool counters under
/// the kernel's names. Every counter changes under hugetlb_lock (<see cref="Hugetlb"/>); the getters read
/// without it, with Volatile loads, and may see a value that is already changing, as sysfs readers do.
/// </summary>
public sealed class Hstate
{
    internal Hstate(int order)
    {
        Order = order;
        SizeBytes = Geometry.PageSize << order;
    }

    /// <summary>huge_page_order: 9 for 2 MiB, 18 for 1 GiB.</summary>
    public int Order { get; }
    /// <summary>huge_page_size.</summary>
    public ulong SizeBytes { get; }
    /// <summary>pages_per_huge_page.</summary>
    public ulong PagesPerHugePage => 1UL << Order;
    /// <summary>h->name: the sysfs directory, hugepages-&lt;size&gt;kB.</summary>
    public string Name => $"hugepages-{SizeBytes >> 10}kB";
    /// <summary>hstate_is_gigantic: above MAX_PAGE_ORDER, so not from the buddy lists.</summary>
    public bool IsGigantic => Order > FrameAllocator.MaxOrder;

    // The counters (hugetlb_lock).
    internal long nr_huge_pages, free_huge_pages, resv_huge_pages, surplus_huge_pages, nr_overcommit_huge_pages, max_huge_pages;
    /// <summary>hugepage_freelists: the first free folio's head PFN (0 = empty), linked through the head's lru words.</summary>
    internal ulong FreeList;

    /// <summary>nr_huge_pages: every huge page of this size, persistent and surplus, free and in use.</summary>
    public long NrHugepages => Volatile.Read(ref nr_huge_pages);
    /// <summary>free_huge_pages: pages on the free list (reserved ones included).</summary>
    public long FreeHugepages => Volatile.Read(ref free_huge_pages);
    /// <summary>resv_huge_pages: pages promised to mappings and not yet faulted in.</summary>
    public long ResvHugepages => Volatile.Read(ref resv_huge_pages);
    /// <summary>surplus_huge_pages: pages above the persistent pool, allocated by overcommit (or kept when their vmemmap could not be restored).</summary>
    public long SurplusHugepages => Volatile.Read(ref surplus_huge_pages);
    /// <summary>nr_overcommit_huge_pages: how many surplus pages the pool may grow by on demand.</summary>
    public long NrOvercommitHugepages => Volatile.Read(ref nr_overcommit_huge_pages);
    /// <summary>persistent_huge_pages: nr_huge_pages - surplus_huge_pages (what nr_hugepages reads).</summary>
    public long PersistentHugepages => NrHugepages - SurplusHugepages;
}

/// <summary>
/// The hugetlb pools of mm/hugetlb.c: one <see cref="Hstate"/> per size (2 MiB from the buddy lists,
/// 1 GiB from contiguous ranges), hugetlb_lock, the pool operations (set_max_huge_pages,
/// alloc_hugetlb_folio, free_huge_folio, hugetlb_acct_memory with gather_surplus_pages), dissolve, and
/// the /sys/kernel/mm/hugepages knobs.
/// </summary>
/// <remarks>
/// A hugetlb folio is a compound page whose head has page_type PGTY_hugetlb (folio_test_hugetlb); the
/// HPG_* flags are bits of the head's private word. A free pool folio is frozen (refcount 0) on its
/// hstate's free list, linked through the head's lru words as the kernel's list_head is.
/// Lock order: hugetlb_lock is taken inside page-table locks (free_huge_folio runs from the last
/// folio_put, wherever that is) and never held across the page allocator's slow work of the vmemmap.
/// </remarks>
public sealed unsafe partial class Hugetlb
{
    /// <summary>enum hugetlb_page_flags: bits of a hugetlb folio's private word.</summary>
    public static class Hpg
    {
        public const int RestoreReserve = 0;
        public const int Migratable = 1;
        public const int Temporary = 2;
        public const int Freed = 3;
        public const int VmemmapOptimized = 4;
        public const int RawHwpUnreliable = 5;
    }

    /// <summary>HUGETLB_PAGE_ORDER (2 MiB) and the PUD order (1 GiB).</summary>
    public const int PmdOrder = Geometry.PmdShift - Geometry.PageShift;
    public const int PudOrder = Geometry.PudShift - Geometry.PageShift;

    private readonly Machine _m;
    /// <summary>hugetlb_lock: every Hstate counter and free list.</summary>
    private readonly Lock _lock = new();

    internal Hugetlb(Machine m)
    {
        _m = m;
        Hstates = [new Hstate(PmdOrder), new Hstate(PudOrder)];
        _optimizeVmemmap = m.Config.Hvo != HvoMode.Off ? 1 : 0; // hugetlb_free_vmemmap=on with the design built in
    }

    /// <summary>hstates[]: 2 MiB first (default_hstate), then 1 GiB.</summary>
    public IReadOnlyList<Hstate> Hstates { get; }

    /// <summary>default_hstate: 2 MiB (default_hugepagesz).</summary>
    public Hstate Default => Hstates[0];

    /// <summary>size_to_hstate: the hstate of a huge page size in bytes, or null.</summary>
    public Hstate? ForSize(ulong bytes)
    {
        foreach (Hstate h in Hstates) if (h.SizeBytes == bytes) return h;
        return null;
    }

    /// <summary>
    /// hugetlb_init / hugetlb_hstate_alloc_pages: the boot command line's pools (hugepagesz=1G
    /// hugepages=N, hugepages=N for 2 MiB). Runs before any process exists, so every gigantic range is
    /// still free, as memblock would give it.
    /// </summary>
    internal void BootInit(int cpu, int pages2M, int pages1G)
    {
        if (pages1G > 0) SetMaxHugePages(cpu, Hstates[1], pages1G);
        if (pages2M > 0) SetMaxHugePages(cpu, Hstates[0], pages2M);
    }

    // ---------------------------------------------------------------------------------------------
    // HPG flags and the hugetlb page type
    // ---------------------------------------------------------------------------------------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private Page* Head(ulong pfn) => _m.Vmemmap.PfnToPage(pfn);

    /// <summary>folio_test_hugetlb: a large folio whose head carries PGTY_hugetlb.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool FolioTestHugetlb(Page* head) => head->IsHead && head->PageType >> 24 == PageTypes.Hugetlb;

    /// <summary>folio_test_hugetlb for a head PFN.</summary>
    public bool IsHugetlbFolio(ulong headPfn) => FolioTestHugetlb(Head(headPfn));

    internal static bool TestHpg(Page* head, int bit) => (Volatile.Read(ref head->Private) & (1UL << bit)) != 0;
    internal static void SetHpg(Page* head, int bit) => Interlocked.Or(ref head->Private, 1UL << bit);
    internal static void ClearHpg(Page* head, int bit) => Interlocked.And(ref head->Private, ~(1UL << bit));

    /// <summary>folio_test_hugetlb_restore_reserve.</summary>
    public bool TestRestoreReserve(ulong headPfn) => TestHpg(Head(headPfn), Hpg.RestoreReserve);

    /// <summary>
    /// folio_clear_hugetlb_restore_reserve: the reservation the folio consumed now belongs to the
    /// mapping that instantiated it (hugetlb_add_new_anon_rmap clears it); without this the free
    /// gives the reservation back.
    /// </summary>
    public void ClearRestoreReserve(ulong headPfn) => ClearHpg(Head(headPfn), Hpg.RestoreReserve);

    /// <summary>The hstate of a hugetlb folio (folio_hstate), by its order.</summary>
    public Hstate FolioHstate(ulong headPfn)
    {
        int order = Folio.Order(Head(headPfn));
        foreach (Hstate h in Hstates) if (h.Order == order) return h;
        Bug.Throw($"folio {headPfn:x}: no hstate of order {order}");
        return null!;
    }

    // ---------------------------------------------------------------------------------------------
    // Free lists (hugetlb_lock held)
    // ---------------------------------------------------------------------------------------------

    private ulong LruVaddr(ulong pfn) => _m.Vmemmap.PageVaddr(pfn) + 8;
    private ulong PfnOfLru(ulong lru) => _m.Vmemmap.PfnOfVaddr(lru - 8);

    /// <summary>enqueue_hugetlb_folio: a frozen folio onto the free list (list_move at the head).</summary>
    private void EnqueueHugetlbFolio(Hstate h, ulong pfn)
    {
        Page* head = Head(pfn);
        Bug.On(Volatile.Read(ref head->RefCount) != 0, "enqueue_hugetlb_folio: folio {0:x} is not frozen", pfn);
        head->LruPrev = 0;
        head->LruNext = h.FreeList == 0 ? 0 : LruVaddr(h.FreeList);
        if (h.FreeList != 0) Head(h.FreeList)->LruPrev = LruVaddr(pfn);
        h.FreeList = pfn;
        h.free_huge_pages++;
        SetHpg(head, Hpg.Freed);
    }

    /// <summary>list_del of a free folio from its hstate's free list.</summary>
    private void ListDel(Hstate h, ulong pfn)
    {
        Page* head = Head(pfn);
        if (head->LruPrev != 0) Head(PfnOfLru(head->LruPrev))->LruNext = head->LruNext;
        else h.FreeList = head->LruNext == 0 ? 0 : PfnOfLru(head->LruNext);
        if (head->LruNext != 0) Head(PfnOfLru(head->LruNext))->LruPrev = head->LruPrev;
        head->LruNext = head->LruPrev = 0;
    }

    /// <summary>
    /// dequeue_hugetlb_folio_node_exact: the first free folio that is not hardware-poisoned, taken off
    /// the list with its refcount unfrozen to 1.
    /// </summary>
    private ulong DequeueHugetlbFolio(Hstate h)
    {
        for (ulong pfn = h.FreeList; pfn != 0;)
        {
            Page* head = Head(pfn);
            ulong next = head->LruNext == 0 ? 0 : PfnOfLru(head->LruNext);
            if (!head->TestFlag(PG.Hwpoison))
            {
                ListDel(h, pfn);
                ClearHpg(head, Hpg.Freed);
                Volatile.Write(ref head->RefCount, 1); // folio_ref_unfreeze
                h.free_huge_pages--;
                return pfn;
            }
            pfn = next;
        }
        return 0;
    }

    /// <summary>
    /// remove_hugetlb_folio: a folio leaves the pool's accounting (off the free list if it is on it);
    /// adjust_surplus takes it from the surplus count. The hugetlb flag stays until the vmemmap is
    /// restored (__update_and_free_hugetlb_folio clears it).
    /// </summary>
    private void RemoveHugetlbFolio(Hstate h, ulong pfn, bool adjustSurplus)
    {
        Page* head = Head(pfn);
        if (TestHpg(head, Hpg.Freed))
        {
            ListDel(h, pfn);
            ClearHpg(head, Hpg.Freed);
            h.free_huge_pages--;
        }
        if (adjustSurplus) h.surplus_huge_pages--;
        h.nr_huge_pages--;
    }

    /// <summary>add_hugetlb_folio: a folio (frozen) back into the pool, as a surplus one when adjust_surplus.</summary>
    private void AddHugetlbFolio(Hstate h, ulong pfn, bool adjustSurplus)
    {
        h.nr_huge_pages++;
        if (adjustSurplus) h.surplus_huge_pages++;
        EnqueueHugetlbFolio(h, pfn);
    }

    /// <summary>remove_pool_hugetlb_folio: a free folio, preferring a healthy one, out of the pool; 0 when the free list is empty.</summary>
    private ulong RemovePoolHugetlbFolio(Hstate h, bool accountSurplus)
    {
        if (h.FreeList == 0) return 0;
        ulong pfn = h.FreeList;
        RemoveHugetlbFolio(h, pfn, accountSurplus);
        return pfn;
    }

    // ---------------------------------------------------------------------------------------------
    // Fresh folios and their release
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// alloc_fresh_hugetlb_folio without the accounting: a compound folio of the hstate's order from the
    /// buddy lists (2 MiB) or a contiguous range (1 GiB), typed PGTY_hugetlb (init_new_hugetlb_folio),
    /// frozen at refcount 0. 0 when no memory. No lock held.
    /// </summary>
    private ulong AllocFreshHugetlbFolio(int cpu, Hstate h)
    {
        ulong pfn = h.IsGigantic
            ? _m.Allocator.AllocContigPages(cpu, h.Order, Gfp.Comp | Gfp.RetryMayfail)
            : _m.Allocator.AllocPages(cpu, h.Order, Gfp.Comp | Gfp.RetryMayfail);
        if (pfn == 0) return 0;
        Page* head = Head(pfn);
        head->PageType = PageTypes.Hugetlb << 24; // __folio_set_hugetlb
        head->Private = 0;
        Volatile.Write(ref head->RefCount, 0); // folio_ref_freeze: pool pages are frozen
        return pfn;
    }

    /// <summary>
    /// __update_and_free_hugetlb_folio for a folio out of the pool's accounting whose vmemmap is whole
    /// again (<see cref="UpdateAndFreePagesBulk"/> restored it): clear the
    /// hugetlb type, move the poison onto the raw error pages, and hand the frames back to the page
    /// allocator (taking poisoned pages back off it). No lock held on entry.
    /// </summary>
    private void UpdateAndFreeHugetlbFolio(int cpu, Hstate h, ulong pfn)
    {
        Page* head = Head(pfn);
        if (TestHpg(head, Hpg.RawHwpUnreliable)) return; // which subpages are bad is unknown: leaked on purpose
        lock (_lock) head->PageType = PageTypes.NoType; // __folio_clear_hugetlb
        head->Private = 0;
        head->Mapping = 0;
        ulong[]? poisoned = FolioClearHugetlbHwpoison(pfn);
        if (h.IsGigantic) _m.Allocator.FreeFrozenContigRange(cpu, pfn, h.Order);
        else _m.Allocator.FreeFrozenPages(cpu, pfn, h.Order);
        if (poisoned != null)
            foreach (ulong bad in poisoned) _m.Allocator.TakePageOffBuddy(bad);
    }

    /// <summary>
    /// update_and_free_pages_bulk: restore the vmemmap of the whole list (one kernel TLB flush), then
    /// every restored folio back to the page allocator. A folio whose vmemmap cannot be restored goes
    /// back into the pool as a surplus page (bulk_vmemmap_restore_error → add_hugetlb_folio(h, folio,
    /// true)), so a later shrink or unreserve can free it. Folios out of the pool's accounting, frozen;
    /// no lock held.
    /// </summary>
    private void UpdateAndFreePagesBulk(int cpu, Hstate h, List<ulong> folios)
    {
        List<ulong> failed = RestoreFolios(cpu, h, folios);
        if (failed.Count > 0)
            lock (_lock)
                foreach (ulong pfn in failed) AddHugetlbFolio(h, pfn, adjustSurplus: true);
        foreach (ulong pfn in folios)
            if (!failed.Contains(pfn)) UpdateAndFreeHugetlbFolio(cpu, h, pfn);
    }

    // ---------------------------------------------------------------------------------------------
    // The pool size: set_max_huge_pages (nr_hugepages)
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// set_max_huge_pages: grow the persistent pool to count (turning surplus pages persistent first,
    /// then allocating fresh ones in a batch whose vmemmap is optimized together), or shrink it, never
    /// below the pages in use or reserved, turning the rest into surplus pages that go as they are freed.
    /// Returns the persistent pool size reached.
    /// </summary>
    public long SetMaxHugePages(int cpu, Hstate h, long count)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count));
        var fresh = new List<ulong>();
        lock (_lock)
        {
            // Turn surplus pages into persistent ones (adjust_pool_surplus(-1)).
            while (h.surplus_huge_pages > 0 && count > h.nr_huge_pages - h.surplus_huge_pages)
                h.surplus_huge_pages--;
        }
        // alloc_pool_huge_folio, without the lock, until the pool is big enough or memory runs out.
        long need;
        lock (_lock) need = count - (h.nr_huge_pages - h.surplus_huge_pages);
        for (long i = 0; i < need; i++)
        {
            ulong pfn = AllocFreshHugetlbFolio(cpu, h);
            if (pfn == 0) break;
            fresh.Add(pfn);
        }
        // prep_and_add_allocated_folios: the batch's vmemmap optimized together, then into the pool.
        AfterAllocBatch(cpu, h, fresh);
        var release = new List<ulong>();
        lock (_lock)
        {
            foreach (ulong pfn in fresh)
            {
                h.nr_huge_pages++;
                EnqueueHugetlbFolio(h, pfn);
            }
            // Shrinking: never below what is in use or reserved.
            long minCount = h.resv_huge_pages + h.nr_huge_pages - h.free_huge_pages;
            minCount = Math.Max(count, minCount);
            while (minCount < h.nr_huge_pages - h.surplus_huge_pages)
            {
                ulong pfn = RemovePoolHugetlbFolio(h, accountSurplus: false);
                if (pfn == 0) break;
                release.Add(pfn);
            }
            // What is still above count becomes surplus (adjust_pool_surplus(+1)).
            while (count < h.nr_huge_pages - h.surplus_huge_pages && h.surplus_huge_pages < h.nr_huge_pages)
                h.surplus_huge_pages++;
            h.max_huge_pages = h.nr_huge_pages - h.surplus_huge_pages;
        }
        if (release.Count > 0) UpdateAndFreePagesBulk(cpu, h, release);
        return h.PersistentHugepages;
    }

    /// <summary>nr_overcommit_hugepages.</summary>
    public void SetOvercommit(Hstate h, long count)
    {
        if (count < 0) throw new ArgumentOutOfRangeException(nameof(count));
        if (h.IsGigantic && count != 0) throw new ArgumentException("EINVAL: gigantic pages cannot be overcommitted");
        lock (_lock) h.nr_overcommit_huge_pages = count;
    }

    // ---------------------------------------------------------------------------------------------
    // Surplus pages, reservations, allocation and free
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// alloc_surplus_hugetlb_folio: a fresh folio beyond the persistent pool, within
    /// nr_overcommit_hugepages (never for gigantic pages), accounted as surplus and returned with
    /// refcount 1 (not on the free list). 0 on failure. No lock held on entry or exit.
    /// </summary>
    private ulong AllocSurplusHugetlbFolio(int cpu, Hstate h)
    {
        if (h.IsGigantic) return 0;
        lock (_lock)
            if (h.surplus_huge_pages >= h.nr_overcommit_huge_pages) return 0;
        ulong pfn = AllocFreshHugetlbFolio(cpu, h);
        if (pfn == 0) return 0;
        AfterAllocBatch(cpu, h, [pfn]); // prep_new_hugetlb_folio → hugetlb_vmemmap_optimize_folio
        bool over;
        lock (_lock)
        {
            h.nr_huge_pages++;
            // The counter may have moved while the lock was dropped: then it is a temporary page, freed at once.
            over = h.surplus_huge_pages >= h.nr_overcommit_huge_pages;
            if (over) h.nr_huge_pages--;
            else h.surplus_huge_pages++;
        }
        if (over)
        {
            UpdateAndFreePagesBulk(cpu, h, [pfn]);
            return 0;
        }
        Volatile.Write(ref Head(pfn)->RefCount, 1);
        return pfn;
    }

    /// <summary>
    /// alloc_hugetlb_folio's pool side: a free folio dequeued (with useReserve, one a reservation
    /// promised: resv_huge_pages drops and the folio is marked HPG_restore_reserve so that a free before
    /// it is mapped gives the reservation back; without, only a folio no reservation holds), else a
    /// surplus folio within nr_overcommit_hugepages. Returns the head PFN with refcount 1, typed hugetlb,
    /// or 0 (the caller's VM_FAULT_OOM / ENOMEM). Any lock state but hugetlb_lock.
    /// </summary>
    public ulong AllocHugetlbFolio(Hstate h, int cpu, bool useReserve)
    {
        ulong pfn;
        lock (_lock)
        {
            pfn = 0;
            if (useReserve || h.free_huge_pages - h.resv_huge_pages > 0) pfn = DequeueHugetlbFolio(h);
            if (pfn != 0 && useReserve)
            {
                SetHpg(Head(pfn), Hpg.RestoreReserve);
                h.resv_huge_pages--;
            }
        }
        if (pfn != 0) return pfn;
        pfn = AllocSurplusHugetlbFolio(cpu, h);
        if (pfn != 0 && useReserve)
        {
            lock (_lock)
            {
                SetHpg(Head(pfn), Hpg.RestoreReserve);
                h.resv_huge_pages--;
            }
        }
        return pfn;
    }

    /// <summary>
    /// hugetlb_acct_memory: the global reservation count changes by delta pages. Growing it runs
    /// gather_surplus_pages (surplus pages allocated so that free pages cover every reservation, within
    /// nr_overcommit_hugepages); false means ENOMEM and changes nothing. Shrinking it runs
    /// return_unused_surplus_pages. Any lock state but hugetlb_lock.
    /// </summary>
    public bool HugetlbAcctMemory(Hstate h, long delta)
    {
        using CpuScope scope = _m.EnterCpu();
        int cpu = scope.Cpu.Id;
        if (delta > 0) return GatherSurplusPages(cpu, h, delta);
        if (delta < 0) ReturnUnusedSurplusPages(cpu, h, -delta);
        return true;
    }

    /// <summary>gather_surplus_pages: reserve delta pages, allocating surplus ones when the free pages do not cover the reservations.</summary>
    private bool GatherSurplusPages(int cpu, Hstate h, long delta)
    {
        var surplus = new List<ulong>();
        long needed;
        lock (_lock)
        {
            needed = h.resv_huge_pages + delta - h.free_huge_pages;
            if (needed <= 0)
            {
                h.resv_huge_pages += delta;
                return true;
            }
        }
        bool ok = false;
        while (true)
        {
            bool allocOk = true;
            for (long i = 0; i < needed; i++)
            {
                ulong pfn = AllocSurplusHugetlbFolio(cpu, h);
                if (pfn == 0) { allocOk = false; break; }
                surplus.Add(pfn);
            }
            lock (_lock)
            {
                needed = h.resv_huge_pages + delta - (h.free_huge_pages + surplus.Count);
                if (needed <= 0)
                {
                    // Enough: the reservation holds, and the pages it needs join the free list.
                    long take = needed + surplus.Count;
                    h.resv_huge_pages += delta;
                    for (int i = 0; i < surplus.Count && take-- > 0;)
                    {
                        ulong pfn = surplus[i];
                        surplus.RemoveAt(i);
                        Volatile.Write(ref Head(pfn)->RefCount, 0);
                        EnqueueHugetlbFolio(h, pfn);
                    }
                    ok = true;
                    break;
                }
            }
            if (!allocOk) break;
        }
        // The surplus pages not needed go back (free_huge_folio of each: surplus, so freed).
        foreach (ulong pfn in surplus) PutHugetlbFolio(cpu, pfn);
        return ok;
    }

    /// <summary>return_unused_surplus_pages: unreserve, and free as many free surplus pages as were unreserved.</summary>
    private void ReturnUnusedSurplusPages(int cpu, Hstate h, long unused)
    {
        var release = new List<ulong>();
        lock (_lock)
        {
            h.resv_huge_pages -= unused;
            Bug.On(h.resv_huge_pages < 0, "{0}: resv_huge_pages underflow", h.Name);
            long nr = Math.Min(unused, h.surplus_huge_pages);
            while (nr-- > 0)
            {
                ulong pfn = RemovePoolHugetlbFolio(h, accountSurplus: true);
                if (pfn == 0) break;
                release.Add(pfn);
            }
        }
        if (release.Count > 0) UpdateAndFreePagesBulk(cpu, h, release);
    }

    /// <summary>The last reference of a surplus folio in hand goes (folio_put → free_huge_folio).</summary>
    private void PutHugetlbFolio(int cpu, ulong pfn)
    {
        Page* head = Head(pfn);
        if (Interlocked.Decrement(ref head->RefCount) == 0) FreeHugeFolio(cpu, pfn);
    }

    /// <summary>
    /// free_huge_folio: the last reference of a hugetlb folio went (folio_put routes it here by the
    /// hugetlb type). The reservation comes back if the folio still held one (HPG_restore_reserve);
    /// a surplus or temporary folio, or a hardware-poisoned one, leaves the pool for the page allocator;
    /// any other goes back on the free list. Any lock state but hugetlb_lock.
    /// </summary>
    internal void FreeHugeFolio(int cpu, ulong pfn)
    {
        Page* head = Head(pfn);
        Hstate h = FolioHstate(pfn);
        bool restoreReserve = TestHpg(head, Hpg.RestoreReserve);
        head->Mapping = 0;
        ClearHpg(head, Hpg.RestoreReserve);
        bool release;
        lock (_lock)
        {
            ClearHpg(head, Hpg.Migratable);
            if (restoreReserve) h.resv_huge_pages++;
            if (TestHpg(head, Hpg.Temporary))
            {
                RemoveHugetlbFolio(h, pfn, adjustSurplus: false);
                release = true;
            }
            else if (h.surplus_huge_pages > 0)
            {
                RemoveHugetlbFolio(h, pfn, adjustSurplus: true);
                release = true;
            }
            else if (head->TestFlag(PG.Hwpoison))
            {
                // A poisoned folio is never handed out again: it is dissolved at once (the kernel leaves it
                // on the free list, skipped by dequeue, until memory-failure's own dissolve).
                RemoveHugetlbFolio(h, pfn, adjustSurplus: false);
                release = true;
            }
            else
            {
                EnqueueHugetlbFolio(h, pfn);
                release = false;
            }
        }
        if (release) UpdateAndFreePagesBulk(cpu, h, [pfn]);
    }

    /// <summary>
    /// dissolve_free_hugetlb_folio: a free pool folio leaves the pool for the page allocator. When its
    /// vmemmap cannot be restored it stays in the pool, as it was, and the call fails (-ENOMEM);
    /// -EBUSY when the folio is in use; 0 when dissolved (or the page is not hugetlb at all).
    /// </summary>
    public int DissolveFreeHugetlbFolio(int cpu, ulong pfn)
    {
        ulong headPfn = Folio.HeadPfn(_m, pfn);
        Page* head = Head(headPfn);
        Hstate h;
        lock (_lock)
        {
            if (!FolioTestHugetlb(head)) return 0;
            if (!TestHpg(head, Hpg.Freed)) return -(int)Errno.EBUSY;
            h = FolioHstate(headPfn);
            // A free page that reservations need stays unless a surplus page can be given up instead.
            if (h.free_huge_pages - h.resv_huge_pages == 0) return -(int)Errno.EBUSY;
            RemoveHugetlbFolio(h, headPfn, adjustSurplus: false);
            h.max_huge_pages--;
        }
        // hugetlb_vmemmap_restore_folio: on failure the folio goes back as it was (add_hugetlb_folio(h,
        // folio, false): dissolve, unlike the bulk free, does not turn it into a surplus page).
        if (RestoreFolios(cpu, h, [headPfn]).Count != 0)
        {
            lock (_lock)
            {
                AddHugetlbFolio(h, headPfn, adjustSurplus: false);
                h.max_huge_pages++;
            }
            return -(int)Errno.ENOMEM;
        }
        UpdateAndFreeHugetlbFolio(cpu, h, headPfn);
        return 0;
    }
}
