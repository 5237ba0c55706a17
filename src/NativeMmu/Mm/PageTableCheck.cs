using NativeMmu.Arch.X86;
using NativeMmu.Cpu;
using NativeMmu.Physical;

namespace NativeMmu.Mm;

/// <summary>
/// The invariant mode's page-table audit (CONFIG_PAGE_TABLE_CHECK with the DEBUG_VM mapcount checks):
/// walks every live address space and compares what the page tables map with what struct page says.
/// <list type="bullet">
/// <item>No anonymous page is mapped writable by two mms, nor writable without PageAnonExclusive.</item>
/// <item>Every page's mapcount equals the number of PTEs that map it; a large folio's _large_mapcount
/// equals the PTE mappings of all its pages.</item>
/// <item>refcount ≥ mapcount + pins.</item>
/// </list>
/// A debug path: it allocates freely. Callers hold every mm still (mmap_lock for write).
/// </summary>
internal static unsafe class PageTableCheck
{
    private sealed class Seen
    {
        public int Ptes;
        public MmStruct? WritableBy;
    }

    public static List<string> Check(Machine m, IReadOnlyList<MmStruct> mms)
    {
        var errors = new List<string>();
        var pages = new Dictionary<ulong, Seen>();
        foreach (MmStruct mm in mms)
            foreach (Vma vma in mm.Vmas)
                for (ulong addr = vma.VmStart; addr < vma.VmEnd; addr += Geometry.PageSize)
                {
                    ulong* pte = PgTable.WalkToPte(mm, addr);
                    if (pte == null) { addr = (addr & Geometry.PmdMask) + Geometry.PmdSize - Geometry.PageSize; continue; }
                    var e = new Pte(PgTable.Get(pte));
                    if (!e.Present || e.Special || e.Pfn == m.ZeroPfn) continue;
                    if (!pages.TryGetValue(e.Pfn, out Seen? s)) pages[e.Pfn] = s = new Seen();
                    s.Ptes++;
                    if (!e.Write) continue;
                    Page* page = m.Vmemmap.PfnToPage(e.Pfn);
                    Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, e.Pfn));
                    if ((head->Mapping & PageTypes.MappingAnon) == 0) continue;
                    if (s.WritableBy is { } other && !ReferenceEquals(other, mm))
                        errors.Add($"pfn {e.Pfn:x}: anonymous page mapped writable by two mms (ids {other.MmId} and {mm.MmId})");
                    s.WritableBy = mm;
                    if (!page->TestFlag(PG.AnonExclusive))
                        errors.Add($"pfn {e.Pfn:x}: mapped writable at {addr:x} without PageAnonExclusive");
                }

        var folios = new Dictionary<ulong, int>();
        foreach ((ulong pfn, Seen s) in pages)
        {
            Page* page = m.Vmemmap.PfnToPage(pfn);
            ulong headPfn = Folio.HeadPfn(m, pfn);
            Page* head = m.Vmemmap.PfnToPage(headPfn);
            if (page->MapCount + 1 != s.Ptes)
                errors.Add($"pfn {pfn:x}: mapcount {page->MapCount + 1} but {s.Ptes} {(s.Ptes == 1 ? "PTE maps" : "PTEs map")} it");
            if (!Folio.IsLarge(head))
            {
                if (page->RefCount < page->MapCount + 1)
                    errors.Add($"pfn {pfn:x}: refcount {page->RefCount} below mapcount {page->MapCount + 1}");
                continue;
            }
            folios[headPfn] = folios.GetValueOrDefault(headPfn) + s.Ptes;
        }
        foreach ((ulong headPfn, int ptes) in folios)
        {
            Page* head = m.Vmemmap.PfnToPage(headPfn);
            int mapcount = Folio.Mapcount(head), pins = Folio.Pincount(head);
            if (mapcount != ptes)
                errors.Add($"folio {headPfn:x} (order {Folio.Order(head)}): large_mapcount {mapcount} but {ptes} PTEs map it");
            if (head->RefCount < mapcount + pins)
                errors.Add($"folio {headPfn:x}: refcount {head->RefCount} below mapcount {mapcount} + pincount {pins}");
        }
        return errors;
    }
}
