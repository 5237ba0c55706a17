using System.Runtime.CompilerServices;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>mm/rmap.c and the folio reference helpers, for order-0 anonymous folios (large folios: Folio).</summary>
internal static unsafe class Rmap
{
    /// <summary>The mapping word of an anonymous page: the anon_vma's identity with FOLIO_MAPPING_ANON.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong AnonMapping(AnonVma anonVma) => ((ulong)anonVma.Id << 4) | PageTypes.MappingAnon;

    /// <summary>
    /// folio_add_new_anon_rmap(RMAP_EXCLUSIVE) + folio_add_lru_vma: a page nobody else can see yet, so
    /// plain stores suffice; the PTE store that follows publishes them. The PTL of that entry held.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FolioAddNewAnonRmap(Cpu cpu, Machine m, Page* page, Vma vma, AnonVma anonVma, ulong address)
    {
        page->Mapping = AnonMapping(anonVma);
        page->Index = vma.LinearPageIndex(address);
        page->MapCount = 0;
        page->SetFlags(PG.AnonExclusive, PG.Swapbacked, PG.Lru);
        m.Counters.Add(cpu.Id, VmStat.NrAnonPages, 1);
    }

    /// <summary>
    /// folio_get + folio_try_dup_anon_rmap_pte of an order-0 page that cannot be pinned: another PTE now maps
    /// it. PageAnonExclusive is tested before it is cleared (an already shared page takes no locked op), and
    /// the two counts rise in one locked add (<see cref="Page.IncMapcountAndGet"/>). The source PTL held.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SmallFolioDupAnonRmapPte(Page* page)
    {
        if (page->TestFlag(PG.AnonExclusive)) page->ClearFlagAtomic(PG.AnonExclusive);
        page->IncMapcountAndGet();
    }

    /// <summary>folio_remove_rmap_pte: the last unmap (mapcount back to -1) leaves NR_ANON_MAPPED. The PTL of the cleared entry held.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FolioRemoveRmapPte(Cpu cpu, Machine m, ulong pfn, MmStruct mm)
    {
        Page* page = m.Vmemmap.PfnToPage(pfn);
        if (page->IsCompound)
        {
            Folio.RemoveRmapPtes(cpu, m, Folio.HeadPfn(m, pfn), pfn, 1, mm);
            return;
        }
        SmallFolioRemoveRmapPte(cpu, m, page, pfn);
    }

    /// <summary>folio_remove_rmap_pte of an order-0 folio whose struct page the caller already has. The PTL of the cleared entry held.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void SmallFolioRemoveRmapPte(Cpu cpu, Machine m, Page* page, ulong pfn)
    {
        int after = Interlocked.Decrement(ref page->MapCount);
        Bug.On(after < -1, "page {0:x}: mapcount underflow", pfn);
        if (after == -1) m.Counters.Add(cpu.Id, VmStat.NrAnonPages, -1);
    }

    /// <summary>folio_put: the last reference takes the folio off the LRU and frees it. Any lock state; takes none but the allocator's.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void FolioPut(Cpu cpu, Machine m, ulong pfn)
    {
        Page* page = m.Vmemmap.PfnToPage(pfn);
        if (page->IsCompound)
        {
            Folio.PutRefs(cpu, m, Folio.HeadPfn(m, pfn), 1);
            return;
        }
        if (!FrameAllocator.PutPageTestZero(page)) return;
        // __folio_put → page_cache_release: off the LRU; anon state dies with the page.
        page->ClearFlags(PG.Lru, PG.Active, PG.AnonExclusive, PG.Swapbacked);
        m.Allocator.FreeFrozenPage(cpu.Id, pfn, page);
    }

    /// <summary>folio_trylock (PG_locked): never waits, so it may be tried under a page-table lock.</summary>
    public static bool FolioTryLock(Page* page)
        => !page->TestAndSetFlag(PG.Locked);

    /// <summary>folio_unlock.</summary>
    public static void FolioUnlock(Page* page) => page->ClearFlagAtomic(PG.Locked);
}
