using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;

namespace NativeMmu.Mm;

/// <summary>
/// The invariant mode's page-table audit (CONFIG_PAGE_TABLE_CHECK with the DEBUG_VM mapcount checks):
/// walks every live address space and compares what the page tables map with what struct page says.
/// <list type="bullet">
/// <item>No anonymous page is mapped writable by two mms, nor writable without PageAnonExclusive.</item>
/// <item>Every page's _mapcount + 1 equals the number of PTEs that map it; a large folio's
/// folio_mapcount (_large_mapcount + 1) equals the PTE mappings of all its pages plus its PMD
/// mappings, and _entire_mapcount + 1 equals its PMD mappings.</item>
/// <item>refcount ≥ mapcount + pins (a small folio's pins are inside its refcount, GUP_PIN_COUNTING_BIAS
/// each; a large folio counts them in _pincount as well).</item>
/// <item>Copy-on-write PTE tables: a shared table's count (its page's _refcount) equals the PMDs that
/// point to it, across all mms; its entries are still those it had when shared (the checksum); an entry
/// under a write-protected table PMD is not writable, whatever its own RW bit says. Lazy counts a shared
/// table's entries once, however many mms hold it; Eager counts them once per holding mm.</item>
/// </list>
/// A debug path: it allocates freely and needs no CPU. Callers hold every mm still (mmap_lock for write).
/// </summary>
internal static unsafe class PageTableCheck
{
    /// <summary>What the page tables say about one page (PTE level) or one folio (PMD level).</summary>
    private sealed class Seen
    {
        public int Maps;
        public MmStruct? WritableBy;
    }

    private sealed class Audit(Machine m)
    {
        public readonly Machine M = m;
        public readonly PhysicalMemory Mem = m.Memory;
        public readonly List<string> Errors = [];
        /// <summary>PFN → the PTEs mapping that page.</summary>
        public readonly Dictionary<ulong, Seen> Pages = [];
        /// <summary>Head PFN → the PMD leaves mapping that folio entirely.</summary>
        public readonly Dictionary<ulong, Seen> Entire = [];
        /// <summary>The PMD tables walked, for the deposit check.</summary>
        public readonly HashSet<ulong> PmdTables = [];
        /// <summary>Shared PTE table → the PMD slots (physical addresses) pointing to it.</summary>
        public readonly Dictionary<ulong, HashSet<ulong>> CowHolders = [];
        /// <summary>(shared table, mm id) pairs whose entries were counted.</summary>
        public readonly HashSet<(ulong, uint)> CowCounted = [];
    }

    public static List<string> Check(Machine m, IReadOnlyList<MmStruct> mms)
    {
        var a = new Audit(m);
        foreach (MmStruct mm in mms)
            foreach (Vma vma in mm.Vmas)
            {
                if (vma.VmStart >= vma.VmEnd) continue;
                var walk = new AuditWalk(a, mm);
                PageWalk.WalkRange(null, mm, vma.VmStart, vma.VmEnd, ref walk);
            }

        // Per page: _mapcount against the PTEs; small folios' refcount here too.
        var folios = new Dictionary<ulong, int>(); // head PFN → PTE mappings of all its pages
        foreach ((ulong pfn, Seen s) in a.Pages)
        {
            Page* page = m.Vmemmap.PfnToPage(pfn);
            ulong headPfn = Folio.HeadPfn(m, pfn);
            Page* head = m.Vmemmap.PfnToPage(headPfn);
            int mapcount = page->MapCount + 1;
            if (mapcount != s.Maps)
                a.Errors.Add($"pfn {pfn:x}: mapcount {mapcount} but {s.Maps} {(s.Maps == 1 ? "PTE maps" : "PTEs map")} it");
            if (!Folio.IsLarge(head))
            {
                if (page->RefCount < mapcount)
                    a.Errors.Add($"pfn {pfn:x}: refcount {page->RefCount} below mapcount {mapcount}");
                continue;
            }
            folios[headPfn] = folios.GetValueOrDefault(headPfn) + s.Maps;
        }
        foreach (ulong headPfn in a.Entire.Keys)
            folios.TryAdd(headPfn, 0);

        // Every shared PTE table: as many holders as its count says, entries as they were shared.
        foreach ((ulong table, HashSet<ulong> holders) in a.CowHolders)
        {
            Page* tp = m.Vmemmap.PfnToPage(table);
            if (tp->RefCount != holders.Count)
                a.Errors.Add($"shared PTE table {table:x}: count {tp->RefCount} but {holders.Count} {(holders.Count == 1 ? "PMD points" : "PMDs point")} to it");
            ulong want = tp->PtCowChecksum;
            if (want != 0 && PgTable.TableChecksum(m, table) != want)
                a.Errors.Add($"shared PTE table {table:x}: its entries changed since it was shared (a walker did not break it)");
        }

        // Every huge PMD has exactly one PTE table deposited under its PMD table.
        foreach (ulong table in a.PmdTables)
        {
            Pmd* pmd = PgTable.PmdTable(a.Mem, table);
            int leaves = 0;
            for (int i = 0; i < Geometry.PtrsPerPmd; i++) if (PgTable.Get(pmd + i).Leaf) leaves++;
            int deposited = HugeMemory.DepositedCount(m, table);
            if (deposited != leaves) a.Errors.Add($"PMD table {table:x}: {leaves} huge PMDs but {deposited} deposited page tables");
        }

        // Per large folio: folio_mapcount against every mapping, _entire_mapcount against the PMDs, refcount.
        foreach ((ulong headPfn, int ptes) in folios)
        {
            Page* head = m.Vmemmap.PfnToPage(headPfn);
            int pmds = a.Entire.TryGetValue(headPfn, out Seen? e) ? e.Maps : 0;
            int mapcount = Folio.Mapcount(head), pins = Folio.Pincount(head);
            if (mapcount != ptes + pmds)
                a.Errors.Add(pmds == 0
                    ? $"folio {headPfn:x} (order {Folio.Order(head)}): large_mapcount {mapcount} but {ptes} {(ptes == 1 ? "PTE maps" : "PTEs map")} it"
                    : $"folio {headPfn:x} (order {Folio.Order(head)}): large_mapcount {mapcount} but {ptes} PTEs and {pmds} PMDs map it");
            if (pmds != 0 && Folio.EntireMapcount(head) + 1 != pmds)
                a.Errors.Add($"folio {headPfn:x}: entire_mapcount {Folio.EntireMapcount(head) + 1} but {pmds} {(pmds == 1 ? "PMD maps" : "PMDs map")} it");
            if (head->RefCount < mapcount + pins)
                a.Errors.Add($"folio {headPfn:x}: refcount {head->RefCount} below mapcount {mapcount} + pincount {pins}");
        }
        return a.Errors;
    }

    /// <summary>The audit's walk: every PMD table seen, every huge PMD and every present PTE counted. mmap_lock held for write.</summary>
    private struct AuditWalk(Audit a, MmStruct mm) : IPageWalkOps
    {
        private readonly Audit a = a;
        private readonly MmStruct mm = mm;

        public readonly PteWalk PteWalk => PteWalk.Held;
        public readonly MmuGather? Tlb => null;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>A PMD table: kept for the deposit check (no PUD leaves are made).</summary>
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next)
        {
            if (!pudval.Leaf) a.PmdTables.Add(pudval.Pfn);
            return WalkAction.Subtree;
        }

        /// <summary>A PMD-mapped THP: the folio's entire mapping counted once.</summary>
        public readonly WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (PgTable.IsCowTable(pmdval))
            {
                CountCowTable(a, mm, pmd, pmdval, addr);
                return WalkAction.Continue;
            }
            if (!pmdval.Leaf) return WalkAction.Subtree;
            CountPmd(a, mm, pmdval, addr);
            return WalkAction.Continue;
        }

        public readonly int PteEntry(ref PteMapping map, Pte* pte, Pte e, ulong addr, ulong end)
        {
            if (!e.Present || e.Special || e.Pfn == a.M.ZeroPfn) return 1; // vm_normal_page
            if (!a.Pages.TryGetValue(e.Pfn, out Seen? s)) a.Pages[e.Pfn] = s = new Seen();
            s.Maps++;
            if (e.Write) CheckWritable(a, mm, e.Pfn, s, addr, "PTE");
            return 1;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }
    }

    /// <summary>
    /// A shared PTE table met through one of mm's PMDs: the holder recorded, its whole table's entries
    /// counted once (Lazy) or once for this mm (Eager), none of them writable (the PMD is not).
    /// </summary>
    private static void CountCowTable(Audit a, MmStruct mm, Pmd* pmd, Pmd v, ulong addr)
    {
        ulong table = v.Pfn;
        if (!a.CowHolders.TryGetValue(table, out HashSet<ulong>? holders)) a.CowHolders[table] = holders = [];
        holders.Add((ulong)((byte*)pmd - a.Mem.Base));
        uint who = a.M.Config.CowPte == CowPteMode.Eager ? mm.MmId : 0;
        if (!a.CowCounted.Add((table, who))) return;
        Pte* t = PgTable.PteTable(a.Mem, table);
        for (int i = 0; i < Geometry.PtrsPerPte; i++)
        {
            Pte e = PgTable.Get(t + i);
            if (!e.Present || e.Special || e.Pfn == a.M.ZeroPfn) continue;
            if (!a.Pages.TryGetValue(e.Pfn, out Seen? s)) a.Pages[e.Pfn] = s = new Seen();
            s.Maps++;
        }
    }

    private static void CountPmd(Audit a, MmStruct mm, Pmd v, ulong addr)
    {
        if (HugeMemory.IsHugeZeroPmd(a.M, v))
        {
            if (v.Write) a.Errors.Add($"the huge zero page mapped writable at {addr:x} (mm id {mm.MmId})");
            return; // vm_normal_page_pmd: no rmap to check
        }
        ulong headPfn = Folio.HeadPfn(a.M, v.Pfn);
        if (!a.Entire.TryGetValue(headPfn, out Seen? s)) a.Entire[headPfn] = s = new Seen();
        s.Maps++;
        if (v.Write) CheckWritable(a, mm, v.Pfn, s, addr, "PMD");
    }

    /// <summary>
    /// page_table_check's rule for anonymous memory: a writable mapping is the only mapping of the
    /// page (one mm), and the page is PageAnonExclusive.
    /// </summary>
    private static void CheckWritable(Audit a, MmStruct mm, ulong pfn, Seen s, ulong addr, string level)
    {
        Page* page = a.M.Vmemmap.PfnToPage(pfn);
        Page* head = a.M.Vmemmap.PfnToPage(Folio.HeadPfn(a.M, pfn));
        if ((head->Mapping & PageTypes.MappingAnon) == 0) return;
        if (s.WritableBy is { } other && !ReferenceEquals(other, mm))
            a.Errors.Add($"pfn {pfn:x}: anonymous page mapped writable by two mms (mm ids {other.MmId} and {mm.MmId}), {level} at {addr:x}");
        s.WritableBy = mm;
        if (!page->TestFlag(PG.AnonExclusive))
            a.Errors.Add($"pfn {pfn:x}: anonymous page mapped writable by {level} at {addr:x} (mm id {mm.MmId}) without PageAnonExclusive");
    }
}
