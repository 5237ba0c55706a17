using System.Runtime.CompilerServices;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Large folios (include/linux/mm.h, rmap.h, mm/rmap.c, ≥6.15 with CONFIG_PAGE_MAPCOUNT and CONFIG_MM_ID):
/// the head's fields in page[1] and page[2], per-page _mapcount, _large_mapcount with the two MM-ID
/// slots, _entire_mapcount, _nr_pages_mapped and the deferred-split list.
/// </summary>
/// <remarks>
/// Locking, as in rmap.h: the mapcounts change under the page-table lock of the entry that maps or
/// unmaps (the PTL for PTEs, the PMD lock for a PMD), with atomics because entries in different tables
/// map the same folio; _large_mapcount and the MM-ID slots change together under
/// folio_lock_large_mapcount (bit 31 of _mm_ids). The accessors without a lock in their summary read
/// without one and may see a value that is already changing.
/// </remarks>
internal static unsafe class Folio
{
    /// <summary>ENTIRELY_MAPPED: added to _nr_pages_mapped by a PMD mapping.</summary>
    public const int EntirelyMapped = 0x800000;
    /// <summary>FOLIO_PAGES_MAPPED.</summary>
    public const int PagesMapped = EntirelyMapped - 1;
    private const uint MmIdMask = 0x7fff_ffff;
    private const int MmIdsLockBit = 31;
    private const int MmIdsSharedBit = 63;

    /// <summary>
    /// page_folio: the head PFN of the folio the page belongs to (compound_head, bit 0 marks a tail).
    /// No lock: a mapped page cannot change folio. While the vmemmap key is 0 (no HVO folio with fake
    /// heads, tails carrying head pointers) this is the plain decode behind one predictable branch, as
    /// the kernel's static key makes it; otherwise <see cref="HeadPfnSlow"/> also decodes a
    /// compound_info mask and fixes fake heads.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong HeadPfn(Machine m, ulong pfn)
    {
        Vmemmap vm = m.Vmemmap;
        Page* page = vm.PfnToPage(pfn);
        ulong head = page->CompoundHead;
        if (vm.CompoundHeadKey != 0) return HeadPfnSlow(vm, page, pfn, head);
        return (head & 1) == 0 ? pfn : vm.PfnOfVaddr(head & ~1UL);
    }

    /// <summary>
    /// compound_head with HVO: a tail decodes its compound_info (head pointer or mask); a page that looks
    /// like a head goes through page_fixed_fake_head: when it is PAGE_SIZE aligned in the vmemmap and
    /// PG_head is set, it may be an alias of the real head (KeepHead maps every tail vmemmap page onto
    /// the head's), and page[1]'s compound_head, a true tail's, names the real head.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong HeadPfnSlow(Vmemmap vm, Page* page, ulong pfn, ulong head)
    {
        if ((head & 1) != 0) return vm.PfnOfVaddr(vm.DecodeTailInfo(head, pfn));
        if ((vm.CompoundHeadKey & Vmemmap.KeyFakeHeads) != 0 && pfn % Vmemmap.PagesPerVmemmapPage == 0 && page->IsHead)
        {
            ulong next = page[1].CompoundHead; // same vmemmap page: the alias's page[1] is a real tail
            if ((next & 1) != 0) return vm.PfnOfVaddr(vm.DecodeTailInfo(next, pfn + 1));
        }
        return pfn;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsLarge(Page* head) => head->IsHead;

    /// <summary>folio_order: the low byte of page[1].flags.</summary>
    public static int Order(Page* head) => IsLarge(head) ? (int)(*(ulong*)((byte*)head + FolioLayout.Flags1) & 0xff) : 0;

    public static int NrPages(Page* head) => 1 << Order(head);

    public static ref int LargeMapcount(Page* head) => ref *(int*)((byte*)head + FolioLayout.LargeMapcount);
    public static ref int NrPagesMapped(Page* head) => ref *(int*)((byte*)head + FolioLayout.NrPagesMapped);
    public static ref int EntireMapcount(Page* head) => ref *(int*)((byte*)head + FolioLayout.EntireMapcount);
    public static ref int Pincount(Page* head) => ref *(int*)((byte*)head + FolioLayout.Pincount);
    private static int* MmIdMapcount(Page* head) => (int*)((byte*)head + FolioLayout.MmIdMapcount);
    private static ref ulong MmIds(Page* head) => ref *(ulong*)((byte*)head + FolioLayout.MmIds);
    /// <summary>_deferred_list in page[2]: next at +0, prev at +8, kernel virtual addresses of list_heads.</summary>
    public static ulong* DeferredList(Page* head) => (ulong*)((byte*)head + FolioLayout.DeferredList);

    /// <summary>folio_mapcount: every mapping of the folio (PTEs and PMDs).</summary>
    public static int Mapcount(Page* head) => IsLarge(head) ? Volatile.Read(ref LargeMapcount(head)) + 1 : Volatile.Read(ref head->MapCount) + 1;

    /// <summary>folio_test_large_maybe_mapped_shared.</summary>
    public static bool MaybeMappedShared(Page* head) => (Volatile.Read(ref MmIds(head)) & (1UL << MmIdsSharedBit)) != 0;

    /// <summary>folio_test_partially_mapped (PG_partially_mapped lives in page[1]).</summary>
    public static bool PartiallyMapped(Page* head) => head[1].TestFlag(PG.PartiallyMapped);

    /// <summary>folio_maybe_dma_pinned: a large folio counts pins in _pincount, a small one by GUP_PIN_COUNTING_BIAS.</summary>
    public static bool MaybeDmaPinned(Page* head) => IsLarge(head)
        ? Volatile.Read(ref Pincount(head)) > 0
        : Volatile.Read(ref head->RefCount) >= Gup.GupPinCountingBias;

    // ---------------------------------------------------------------------------------------------
    // _large_mapcount with MM-ID tracking (include/linux/rmap.h, CONFIG_MM_ID)
    // ---------------------------------------------------------------------------------------------

    /// <summary>folio_lock_large_mapcount: the bit spinlock in _mm_ids; nests inside the page-table lock.</summary>
    private static void LockLargeMapcount(Page* head)
    {
        ref ulong ids = ref MmIds(head);
        var spin = new SpinWait();
        while ((Interlocked.Or(ref ids, 1UL << MmIdsLockBit) & (1UL << MmIdsLockBit)) != 0) spin.SpinOnce(-1);
    }

    /// <summary>folio_unlock_large_mapcount.</summary>
    private static void UnlockLargeMapcount(Page* head) => Interlocked.And(ref MmIds(head), ~(1UL << MmIdsLockBit));

    private static uint MmId(Page* head, int idx) => (uint)(MmIds(head) >> (32 * idx)) & MmIdMask;

    /// <summary>
    /// folio_set_mm_id: one slot's MM ID, under folio_lock_large_mapcount (or, for a new folio, before any
    /// other CPU can see it).
    /// </summary>
    private static void SetMmId(Page* head, int idx, uint id)
    {
        ref ulong ids = ref MmIds(head);
        int shift = 32 * idx;
        ulong cleared = ids & ~((ulong)MmIdMask << shift);
        // Not an atomic read-modify-write, and it need not be: every writer of the word holds the lock
        // bit in it, except CPUs spinning for that bit, whose atomic OR leaves the word unchanged while it
        // is held. The IDs are read only under the lock; the one lockless reader
        // (folio_maybe_mapped_shared) looks at bit 63, which this store carries over as it was.
        Volatile.Write(ref ids, cleared | ((ulong)id << shift));
    }

    /// <summary>The "maybe mapped shared" bit (63 of _mm_ids), under folio_lock_large_mapcount; atomic, as the lock bit shares the word.</summary>
    private static void SetShared(Page* head, bool shared)
    {
        if (shared) Interlocked.Or(ref MmIds(head), 1UL << MmIdsSharedBit);
        else Interlocked.And(ref MmIds(head), ~(1UL << MmIdsSharedBit));
    }

    /// <summary>folio_set_large_mapcount: the first mappings, all by one mm. The folio is not yet visible: no lock.</summary>
    private static void SetLargeMapcount(Page* head, int mappings, uint mmId)
    {
        LargeMapcount(head) = mappings - 1;
        MmIdMapcount(head)[0] = mappings - 1;
        SetMmId(head, 0, mmId);
    }

    /// <summary>folio_add_return_large_mapcount: takes and drops folio_lock_large_mapcount; the caller holds the page-table lock of the new mappings.</summary>
    public static int AddLargeMapcount(Page* head, int diff, uint mmId)
    {
        LockLargeMapcount(head);
        int val = LargeMapcount(head) + diff;
        Volatile.Write(ref LargeMapcount(head), val);
        int* slot = MmIdMapcount(head);
        if (MmId(head, 0) == mmId) slot[0] += diff;
        else if (MmId(head, 1) == mmId) slot[1] += diff;
        else if (MmId(head, 0) == 0)
        {
            SetMmId(head, 0, mmId);
            slot[0] = diff - 1;
            if (val != diff - 1) SetShared(head, true); // we might have other mappings already
        }
        else if (MmId(head, 1) == 0)
        {
            SetMmId(head, 1, mmId);
            slot[1] = diff - 1;
            SetShared(head, true); // slot 0 certainly has mappings as well
        }
        else
        {
            SetShared(head, true); // a third mm: no slot, certainly shared
        }
        UnlockLargeMapcount(head);
        return val + 1;
    }

    /// <summary>folio_sub_return_large_mapcount: takes and drops folio_lock_large_mapcount; the caller holds the page-table lock of the mappings going.</summary>
    public static int SubLargeMapcount(Page* head, int diff, uint mmId)
    {
        LockLargeMapcount(head);
        int val = LargeMapcount(head) - diff;
        Volatile.Write(ref LargeMapcount(head), val);
        int* slot = MmIdMapcount(head);
        bool check = true;
        for (int i = 0; i < 2; i++)
        {
            if (MmId(head, i) != mmId) continue;
            slot[i] -= diff;
            if (slot[i] >= 0) { check = false; break; }
            slot[i] = -1;
            SetMmId(head, i, 0);
            break;
        }
        // One slot owning every mapping means mapped exclusively (an unmapped folio too: both slots are -1).
        if (check && (slot[0] == val || slot[1] == val)) SetShared(head, false);
        UnlockLargeMapcount(head);
        return val + 1;
    }

    /// <summary>The reuse test of __wp_can_reuse_large_anon_folio under folio_lock_large_mapcount (taken and dropped here); the caller holds the PTL.</summary>
    public static bool ExclusiveToOneMm(Page* head)
    {
        LockLargeMapcount(head);
        bool ok = !MaybeMappedShared(head) && LargeMapcount(head) + 1 == Volatile.Read(ref head->RefCount);
        UnlockLargeMapcount(head);
        return ok;
    }

    // ---------------------------------------------------------------------------------------------
    // rmap for large anonymous folios (PTE level)
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// folio_add_new_anon_rmap(RMAP_EXCLUSIVE) for a PTE-mapped large folio: every page mapped once,
    /// exclusively. PTL held; the folio is new, so plain stores do, published by the set_ptes that follows.
    /// </summary>
    public static void AddNewAnonRmap(Cpu cpu, Machine m, ulong headPfn, Vma vma, AnonVma anonVma, ulong address)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int order = Order(head), nr = 1 << order;
        head->Mapping = Rmap.AnonMapping(anonVma);
        head->Index = vma.LinearPageIndex(address);
        for (int i = 0; i < nr; i++)
        {
            Page* p = head + i;
            p->MapCount = 0;
            p->SetFlag(PG.AnonExclusive);
        }
        SetLargeMapcount(head, nr, vma.Mm.MmId);
        NrPagesMapped(head) = nr;
        head->SetFlags(PG.Swapbacked, PG.Lru);
        m.Counters.Add(cpu.Id, VmStat.NrAnonPages, nr);
        m.Thp.Count(order, MthpStat.NrAnon, 1);
    }

    /// <summary>
    /// __folio_try_dup_anon_rmap (PTE level, large folio): fork shares nr pages of the folio with the
    /// child. False (-EBUSY) when the folio may be pinned and one of the pages is exclusive. Both mms'
    /// mmap_lock for write and both PTLs held (copy_pte_range).
    /// </summary>
    public static bool TryDupAnonRmapPtes(Machine m, Page* head, Page* page, int nr, Vma dstVma, bool maybePinned)
    {
        if (maybePinned)
            for (int i = 0; i < nr; i++)
                if (page[i].TestFlag(PG.AnonExclusive)) return false;
        for (int i = 0; i < nr; i++)
        {
            if (page[i].TestFlag(PG.AnonExclusive)) page[i].ClearFlagAtomic(PG.AnonExclusive);
            Interlocked.Increment(ref page[i].MapCount);
        }
        AddLargeMapcount(head, nr, dstVma.Mm.MmId);
        return true;
    }

    /// <summary>
    /// __folio_remove_rmap (PTE level, large folio): nr consecutive pages of the folio lose one PTE
    /// mapping each. Pages whose last mapping went leave NR_ANON_MAPPED unless a PMD still maps the
    /// folio entirely; a folio left partly mapped goes on the deferred-split queue (its lock taken inside).
    /// The PTL of the cleared entries held.
    /// </summary>
    public static void RemoveRmapPtes(Cpu cpu, Machine m, ulong headPfn, ulong pfn, int nr, MmStruct mm)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        Page* page = m.Vmemmap.PfnToPage(pfn);
        SubLargeMapcount(head, nr, mm.MmId);
        int last = 0;
        for (int i = 0; i < nr; i++)
        {
            int after = Interlocked.Decrement(ref page[i].MapCount);
            Bug.On(after < -1, "page {0:x}: mapcount underflow", pfn + (ulong)i);
            if (after == -1) last++;
        }
        if (last == 0) return;
        int mapped = Interlocked.Add(ref NrPagesMapped(head), -last);
        if (mapped >= EntirelyMapped) return; // a PMD still maps every page
        m.Counters.Add(cpu.Id, VmStat.NrAnonPages, -last);
        if (mapped != 0 && !PartiallyMapped(head)) m.SplitQueue.DeferredSplitFolio(cpu, headPfn);
    }

    /// <summary>
    /// folio_add_anon_rmap_ptes (large folio, an existing folio mapped again by PTEs, as a PMD split does):
    /// each page's _mapcount up, the folio's large mapcount by nr; RMAP_EXCLUSIVE marks every page
    /// PageAnonExclusive. Pages mapped for the first time count in NR_ANON_MAPPED unless a PMD maps them.
    /// The PMD lock held (the split fills a table no one can reach yet).
    /// </summary>
    public static void AddAnonRmapPtes(Cpu cpu, Machine m, ulong headPfn, ulong pfn, int nr, Vma vma, bool exclusive)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        Page* page = m.Vmemmap.PfnToPage(pfn);
        int first = 0;
        for (int i = 0; i < nr; i++)
        {
            if (Interlocked.Increment(ref page[i].MapCount) == 0) first++;
            if (exclusive && !page[i].TestFlag(PG.AnonExclusive)) page[i].SetFlagAtomic(PG.AnonExclusive);
        }
        if (first != 0 && Interlocked.Add(ref NrPagesMapped(head), first) < EntirelyMapped)
            m.Counters.Add(cpu.Id, VmStat.NrAnonPages, first);
        AddLargeMapcount(head, nr, vma.Mm.MmId);
    }

    // ---------------------------------------------------------------------------------------------
    // rmap for PMD-mapped folios
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// folio_add_new_anon_rmap(RMAP_EXCLUSIVE) for a PMD mapping: _entire_mapcount 0, one mapping in
    /// _large_mapcount, _nr_pages_mapped ENTIRELY_MAPPED, PageAnonExclusive on the head page only;
    /// NR_ANON_MAPPED and NR_ANON_THPS by the folio's pages. PMD lock held; the folio is new (plain stores,
    /// published by set_pmd_at).
    /// </summary>
    public static void AddNewAnonRmapPmd(Cpu cpu, Machine m, ulong headPfn, Vma vma, AnonVma anonVma, ulong haddr)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int order = Order(head), nr = 1 << order;
        head->Mapping = Rmap.AnonMapping(anonVma);
        head->Index = vma.LinearPageIndex(haddr);
        EntireMapcount(head) = 0;
        SetLargeMapcount(head, 1, vma.Mm.MmId);
        NrPagesMapped(head) = EntirelyMapped;
        head->SetFlags(PG.AnonExclusive, PG.Swapbacked, PG.Lru);
        m.Counters.Add(cpu.Id, VmStat.NrAnonPages, nr);
        m.Counters.Add(cpu.Id, VmStat.NrAnonThps, nr);
        m.Thp.Count(order, MthpStat.NrAnon, 1);
    }

    /// <summary>
    /// __folio_try_dup_anon_rmap (PMD level): fork maps the folio by one more PMD. False (-EBUSY) when
    /// the folio may be pinned and is exclusive: the caller splits the PMD and copies by PTEs. Both PMD
    /// locks held (copy_huge_pmd).
    /// </summary>
    public static bool TryDupAnonRmapPmd(Page* head, Vma dstVma, bool maybePinned)
    {
        if (head->TestFlag(PG.AnonExclusive))
        {
            if (maybePinned) return false;
            head->ClearFlagAtomic(PG.AnonExclusive);
        }
        Interlocked.Increment(ref EntireMapcount(head));
        AddLargeMapcount(head, 1, dstVma.Mm.MmId);
        return true;
    }

    /// <summary>
    /// __folio_remove_rmap (PMD level): the last PMD mapping gives up ENTIRELY_MAPPED; the pages no PTE
    /// maps leave NR_ANON_MAPPED, the folio leaves NR_ANON_THPS, and a folio still mapped in part by
    /// PTEs goes on the deferred-split queue. The PMD lock of the mapping going held.
    /// </summary>
    public static void RemoveRmapPmd(Cpu cpu, Machine m, ulong headPfn, MmStruct mm)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int folioNr = NrPages(head);
        SubLargeMapcount(head, 1, mm.MmId);
        int nr = 0, nrPmdmapped = 0;
        if (Interlocked.Decrement(ref EntireMapcount(head)) == -1)
        {
            int left = Interlocked.Add(ref NrPagesMapped(head), -EntirelyMapped);
            if (left < EntirelyMapped)
            {
                nrPmdmapped = folioNr;
                nr = Math.Max(0, nrPmdmapped - (left & PagesMapped));
            }
        }
        if (nr != 0 && nr < nrPmdmapped && !PartiallyMapped(head)) m.SplitQueue.DeferredSplitFolio(cpu, headPfn);
        m.Counters.Add(cpu.Id, VmStat.NrAnonPages, -nr);
        m.Counters.Add(cpu.Id, VmStat.NrAnonThps, -nrPmdmapped);
    }

    /// <summary>
    /// folio_put_refs: drop nr references; the last one frees the folio (__folio_put: a hugetlb folio to
    /// free_huge_folio; any other off the deferred list, out of the mTHP nr_anon count, off the LRU, back
    /// to the allocator at its order). No lock
    /// needed or held: after the last reference nobody else can reach the folio (the split-queue lock is
    /// taken inside to unqueue it).
    /// </summary>
    public static void PutRefs(Cpu cpu, Machine m, ulong headPfn, int nr)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int after = Interlocked.Add(ref head->RefCount, -nr);
        if (after > 0) return;
        Bug.On(after < 0, "folio {0:x}: refcount underflow", headPfn);
        // __folio_put: a hugetlb folio goes back to its pool (free_huge_folio), not to the allocator.
        if (Huge.Hugetlb.FolioTestHugetlb(head))
        {
            m.Hugetlb.FreeHugeFolio(cpu.Id, headPfn);
            return;
        }
        int order = Order(head);
        if (order > 0)
        {
            m.SplitQueue.Unqueue(headPfn);
            if ((head->Mapping & PageTypes.MappingAnon) != 0) m.Thp.Count(order, MthpStat.NrAnon, -1);
            for (int i = 0; i < 1 << order; i++) head[i].ClearFlag(PG.AnonExclusive);
        }
        head->ClearFlags(PG.Lru, PG.Active, PG.AnonExclusive, PG.Swapbacked);
        m.Allocator.FreeFrozenPages(cpu.Id, headPfn, order);
    }

    /// <summary>folio_clear_partially_mapped (under the split-queue lock): atomic, as page[1]'s own PG_anon_exclusive shares the word.</summary>
    public static void ClearPartiallyMapped(Page* head) => head[1].ClearFlagAtomic(PG.PartiallyMapped);

    /// <summary>folio_set_partially_mapped (under the split-queue lock): atomic for the same reason.</summary>
    public static void SetPartiallyMapped(Page* head) => head[1].SetFlagAtomic(PG.PartiallyMapped);
}
