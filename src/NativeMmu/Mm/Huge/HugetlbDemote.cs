using NativeMmu.Physical;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// Demotion (demote_store → demote_pool_huge_page → demote_free_hugetlb_folios): a free 1 GiB page
/// becomes 512 free 2 MiB pages. Its vmemmap is restored first (the 1 GiB folio's optimization cannot
/// carry over: the new folios have heads where it had tails); if that fails the page goes back to its
/// pool as it was. The new folios are optimized as one batch, as freshly allocated ones are.
/// </summary>
public sealed unsafe partial class Hugetlb
{
    /// <summary>demote_size: the hstate a page of h demotes to (the next smaller size), or null.</summary>
    public Hstate? DemoteTarget(Hstate h)
    {
        Hstate? best = null;
        foreach (Hstate x in Hstates)
            if (x.Order < h.Order && (best == null || x.Order > best.Order)) best = x;
        return best;
    }

    /// <summary>
    /// Writes to hugepages-&lt;size&gt;kB/demote: demote up to nr free, unreserved pages of h. Returns how
    /// many were demoted; stops early (-ENOMEM in the kernel) when a vmemmap restore fails.
    /// </summary>
    public long Demote(int cpu, Hstate src, long nr)
    {
        Hstate dst = DemoteTarget(src) ?? throw new ArgumentException($"EINVAL: {src.Name} has no smaller size to demote to");
        long done = 0;
        while (done < nr)
        {
            ulong pfn = 0;
            lock (_lock)
            {
                if (src.free_huge_pages - src.resv_huge_pages <= 0) break;
                for (ulong p = src.FreeList; p != 0;)
                {
                    Page* head = Head(p);
                    if (!head->TestFlag(PG.Hwpoison)) { pfn = p; break; }
                    p = head->LruNext == 0 ? 0 : PfnOfLru(head->LruNext);
                }
                if (pfn == 0) break;
                RemoveHugetlbFolio(src, pfn, adjustSurplus: false);
            }
            if (RestoreFolios(cpu, src, [pfn]).Count != 0)
            {
                lock (_lock) AddHugetlbFolio(src, pfn, adjustSurplus: false);
                break;
            }
            var folios = DemoteFreeHugetlbFolio(src, dst, pfn);
            AfterAllocBatch(cpu, dst, folios);
            lock (_lock)
            {
                foreach (ulong f in folios)
                {
                    dst.nr_huge_pages++;
                    EnqueueHugetlbFolio(dst, f);
                }
                src.max_huge_pages--;
                dst.max_huge_pages += folios.Count;
            }
            done++;
        }
        return done;
    }

    /// <summary>
    /// demote_free_hugetlb_folios for one folio whose vmemmap is whole: clear its hugetlb type, then
    /// each dst-sized piece becomes a compound page of its own, typed hugetlb and frozen
    /// (prep_compound_page, init_new_hugetlb_folio).
    /// </summary>
    private List<ulong> DemoteFreeHugetlbFolio(Hstate src, Hstate dst, ulong pfn)
    {
        Page* head = Head(pfn);
        head->PageType = PageTypes.NoType; // __folio_clear_hugetlb
        head->Private = 0;
        var folios = new List<ulong>((int)(src.PagesPerHugePage / dst.PagesPerHugePage));
        for (ulong p = pfn; p < pfn + src.PagesPerHugePage; p += dst.PagesPerHugePage)
        {
            _m.Allocator.PrepCompoundPageForDemote(p, dst.Order);
            Page* h = Head(p);
            h->PageType = PageTypes.Hugetlb << 24;
            h->Private = 0;
            h->RefCount = 0;
            folios.Add(p);
        }
        return folios;
    }
}
