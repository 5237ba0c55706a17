using NativeMmu.Cpus;
using NativeMmu.Physical;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// Memory failure on hugetlb folios (mm/memory-failure.c, the hugetlb half): PG_hwpoison on the folio
/// head, the raw error pages in the folio's list (folio->_hugetlb_hwpoison, a list of raw_hwp_page),
/// moved onto the raw pages when the folio is freed (folio_clear_hugetlb_hwpoison), so that the healthy
/// subpages return to the page allocator and the poisoned ones are taken off it.
/// </summary>
public sealed unsafe partial class Hugetlb
{
    /// <summary>MF_* results and -EHWPOISON, as memory_failure returns them.</summary>
    public const int EHwpoison = 133;

    /// <summary>
    /// The raw error pages of each poisoned hugetlb folio, by head PFN: the kernel's llist of
    /// raw_hwp_page hanging off page[3], kmalloc'ed; here a managed list under hugetlb_lock.
    /// </summary>
    private readonly Dictionary<ulong, List<ulong>> _rawHwp = [];

    /// <summary>The raw error pages recorded for a hugetlb folio (empty when none).</summary>
    public IReadOnlyList<ulong> RawHwpPages(ulong headPfn)
    {
        lock (_lock) return _rawHwp.TryGetValue(headPfn, out List<ulong>? l) ? [.. l] : [];
    }

    /// <summary>
    /// hugetlb_update_hwpoison (folio_set_hugetlb_hwpoison): PG_hwpoison on the head, the raw page in
    /// the list. Returns -EHWPOISON when this raw page was already recorded, 0 otherwise. The raw tail
    /// struct pages may be read-only vmemmap (HVO), so nothing is written to them here.
    /// </summary>
    private int HugetlbUpdateHwpoison(ulong headPfn, ulong pfn)
    {
        Page* head = Head(headPfn);
        lock (_lock)
        {
            head->SetFlagAtomic(PG.Hwpoison);
            if (!_rawHwp.TryGetValue(headPfn, out List<ulong>? list)) _rawHwp[headPfn] = list = [];
            if (list.Contains(pfn)) return -EHwpoison;
            list.Add(pfn);
            return 0;
        }
    }

    /// <summary>
    /// folio_clear_hugetlb_hwpoison: after the vmemmap is restored and the hugetlb type cleared, the
    /// head's PG_hwpoison moves onto each raw error page. Returns those pages (null when the folio was
    /// not poisoned) for take_page_off_buddy once the frames are free.
    /// </summary>
    private ulong[]? FolioClearHugetlbHwpoison(ulong headPfn)
    {
        Page* head = Head(headPfn);
        if (!head->TestFlag(PG.Hwpoison)) return null;
        ulong[] raw;
        lock (_lock)
        {
            raw = _rawHwp.TryGetValue(headPfn, out List<ulong>? l) ? [.. l] : [];
            _rawHwp.Remove(headPfn);
        }
        head->ClearFlagAtomic(PG.Hwpoison);
        foreach (ulong pfn in raw) _m.Vmemmap.PfnToPageForWrite(pfn)->SetFlagAtomic(PG.Hwpoison);
        return raw;
    }

    /// <summary>
    /// memory_failure for a page of a hugetlb folio (try_memory_failure_hugetlb): the folio is marked
    /// poisoned and the raw page recorded. A free pool folio is dissolved at once (__page_handle_poison):
    /// its healthy subpages go back to the page allocator and the poisoned one is taken off it. A folio
    /// in use keeps its mappings here; the caller that owns them unmaps them (an access is then
    /// SIGBUS, BUS_MCEERR_AR), and the last put dissolves the folio instead of queueing it.
    /// Returns 0 when handled, -EHWPOISON when the page was already poisoned, -EBUSY when the folio in
    /// use must wait for its last reference, -ENOMEM when the free folio could not be dissolved (its
    /// vmemmap could not be restored; it stays on the free list, where dequeue skips a poisoned folio),
    /// -EINVAL when the page is not part of a hugetlb folio.
    /// </summary>
    public int MemoryFailure(int cpu, ulong pfn)
    {
        if (pfn >= _m.Memory.Frames) return -(int)Errno.EINVAL;
        ulong headPfn = Folio.HeadPfn(_m, pfn);
        if (!FolioTestHugetlb(Head(headPfn))) return -(int)Errno.EINVAL;
        int rc = HugetlbUpdateHwpoison(headPfn, pfn);
        if (rc != 0) return rc;
        bool free;
        lock (_lock) free = TestHpg(Head(headPfn), Hpg.Freed);
        if (!free) return -(int)Errno.EBUSY;
        return DissolveFreeHugetlbFolio(cpu, headPfn);
    }
}
