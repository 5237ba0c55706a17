using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// The deferred-split queue of mm/huge_memory.c (one node, no memcg): partially mapped large anonymous
/// folios wait here, linked through page[2]'s _deferred_list, until the shrinker splits them into
/// order-0 folios and frees the pages nobody maps any more.
/// </summary>
public sealed unsafe class DeferredSplitQueue
{
    private readonly Machine _m;
    private readonly Lock _lock = new(); // split_queue_lock
    private ulong _first, _last;         // PFNs of the first and last queued folio (0: empty)

    internal DeferredSplitQueue(Machine m) => _m = m;

    /// <summary>split_queue_len.</summary>
    public long Length { get; private set; }

    /// <summary>The address spaces a split must hold still (every live mm), supplied by the kernel.</summary>
    internal Func<IReadOnlyList<MmStruct>>? LiveMms;

    private ulong ListVaddr(ulong pfn) => _m.Vmemmap.PageVaddr(pfn) + (ulong)FolioLayout.DeferredList;
    private ulong PfnOfList(ulong vaddr) => _m.Vmemmap.PfnOfVaddr(vaddr - (ulong)FolioLayout.DeferredList);
    private ulong* Links(ulong pfn) => Folio.DeferredList(_m.Vmemmap.PfnToPage(pfn));

    /// <summary>
    /// deferred_split_folio(folio, partially_mapped = true): set PG_partially_mapped, count split_deferred
    /// (and thp_deferred_split_page for PMD-sized folios), and queue the folio if it is not queued yet.
    /// Order-1 folios have no _deferred_list and are never queued.
    /// </summary>
    internal void DeferredSplitFolio(Cpu cpu, ulong headPfn)
    {
        Page* head = _m.Vmemmap.PfnToPage(headPfn);
        int order = Folio.Order(head);
        if (order <= 1) return;
        lock (_lock)
        {
            if (!Folio.PartiallyMapped(head))
            {
                Folio.SetPartiallyMapped(head);
                if (order >= Thp.PmdOrder) _m.Counters.Add(cpu.Id, VmEvent.ThpDeferredSplitPage);
                _m.Thp.Count(order, MthpStat.SplitDeferred);
                _m.Thp.Count(order, MthpStat.NrAnonPartiallyMapped, 1);
            }
            ulong* links = Links(headPfn);
            if (links[0] != ListVaddr(headPfn)) return; // !list_empty: already queued
            links[0] = 0;                                  // list_add_tail
            links[1] = _last == 0 ? 0 : ListVaddr(_last);
            if (_last != 0) Links(_last)[0] = ListVaddr(headPfn);
            else _first = headPfn;
            _last = headPfn;
            Length++;
        }
    }

    /// <summary>folio_unqueue_deferred_split: off the queue (if on it), PG_partially_mapped cleared.</summary>
    internal void Unqueue(ulong headPfn)
    {
        Page* head = _m.Vmemmap.PfnToPage(headPfn);
        int order = Folio.Order(head);
        if (order <= 1) return;
        ulong self = ListVaddr(headPfn);
        ulong* links = Links(headPfn);
        if (Volatile.Read(ref links[0]) == self) return; // list_empty, checked locklessly first as the kernel does
        lock (_lock)
        {
            if (links[0] == self) return;
            if (Folio.PartiallyMapped(head))
            {
                Folio.ClearPartiallyMapped(head);
                _m.Thp.Count(order, MthpStat.NrAnonPartiallyMapped, -1);
            }
            ulong next = links[0], prev = links[1];
            if (prev != 0) Links(PfnOfList(prev))[0] = next; else _first = next == 0 ? 0 : PfnOfList(next);
            if (next != 0) Links(PfnOfList(next))[1] = prev; else _last = prev == 0 ? 0 : PfnOfList(prev);
            links[0] = links[1] = self; // list_del_init
            Length--;
        }
    }

    /// <summary>
    /// deferred_split_scan: split every queued folio that can be split. The emulator has no migration
    /// entries to freeze the mappings with, so the split holds every address space still instead (each
    /// mm's mmap_lock for write). Returns the folios split.
    /// </summary>
    public long Scan(Cpu cpu)
    {
        IReadOnlyList<MmStruct> mms = LiveMms?.Invoke() ?? [];
        foreach (MmStruct mm in mms) mm.MmapLock.WriteLock();
        long split = 0;
        try
        {
            var queued = new List<ulong>();
            lock (_lock)
                for (ulong pfn = _first; pfn != 0;)
                {
                    queued.Add(pfn);
                    ulong next = Links(pfn)[0];
                    pfn = next == 0 ? 0 : PfnOfList(next);
                }
            foreach (ulong pfn in queued)
            {
                int order = Folio.Order(_m.Vmemmap.PfnToPage(pfn));
                if (SplitFolio(cpu, pfn)) split++;
                else _m.Thp.Count(order, MthpStat.SplitFailed);
            }
        }
        finally
        {
            foreach (MmStruct mm in mms) mm.MmapLock.WriteUnlock();
        }
        return split;
    }

    /// <summary>
    /// split_folio to order 0 for a PTE-mapped anonymous folio whose every reference is a mapping
    /// (can_split_folio). Each page becomes an order-0 folio holding one reference per mapping; the
    /// pages nobody maps are freed. Caller holds every mm still.
    /// </summary>
    private bool SplitFolio(Cpu cpu, ulong headPfn)
    {
        Page* head = _m.Vmemmap.PfnToPage(headPfn);
        int order = Folio.Order(head), nr = 1 << order;
        if (Folio.EntireMapcount(head) != -1) return false;                       // still PMD-mapped somewhere
        if (head->RefCount != Folio.LargeMapcount(head) + 1) return false;        // pinned, or another reference
        Unqueue(headPfn);
        _m.Thp.Count(order, MthpStat.Split);
        _m.Thp.Count(order, MthpStat.NrAnon, -1);
        if (order >= Thp.PmdOrder) _m.Counters.Add(cpu.Id, VmEvent.ThpSplitPage);

        ulong mapping = head->Mapping, index = head->Index;
        ulong carry = head->Flags & PG.Mask(PG.Uptodate, PG.Dirty, PG.Swapbacked, PG.Lru);
        // The folio fields in page[1] and page[2] go back to being plain struct page words.
        Page* p1 = head + 1;
        p1->Flags &= ~(0xffUL | PG.Mask(PG.PartiallyMapped));
        p1->LruPrev = 0;
        p1->Mapping = 0;
        p1->Index = 0;
        p1->Private = 0;
        p1->MemcgData = 0;
        if (order > 1)
        {
            head[2].LruPrev = 0;
            head[2].Mapping = 0;
        }
        head->ClearFlag(PG.Head);
        for (int i = 0; i < nr; i++)
        {
            Page* p = head + i;
            if (i > 0) p->CompoundHead = 0;
            p->Flags |= carry;
            p->Mapping = mapping;
            p->Index = index + (ulong)i;
            p->RefCount = p->MapCount + 1;
        }
        for (int i = 0; i < nr; i++)
        {
            Page* p = head + i;
            if (p->RefCount != 0) continue;
            p->ClearFlags(PG.Lru, PG.Swapbacked, PG.AnonExclusive);
            _m.Allocator.FreeFrozenPages(cpu.Id, headPfn + (ulong)i, 0);
        }
        return true;
    }
}
