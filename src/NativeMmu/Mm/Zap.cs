using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Diagnostics;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Unmapping (mm/memory.c): zap_page_range_single and unmap_vmas down to zap_pte_range, over the generic
/// walker; and free_pgtables, which releases the page-table pages no VMA covers any more.
/// </summary>
internal static unsafe partial class Memory
{
    /// <summary>
    /// zap_page_range_single (MADV_DONTNEED): one VMA, one gather. mmap_lock held (for read, by madvise),
    /// no page-table lock; returns with none held and the range flushed.
    /// </summary>
    public static void ZapPageRangeSingle(Cpu cpu, Vma vma, ulong address, ulong size, bool reclaimPt = false)
    {
        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(vma.Mm, fullmm: false);
        tlb.ReclaimPt = reclaimPt; // zap_details.reclaim_pt; whether it applies is the page-table layer's call
        vma.Mm.UpdateHiwaterRss();
        UnmapSingleVma(cpu, tlb, vma, address, address + size);
        long zapped = tlb.ZappedPages;
        tlb.Finish();
#if !NATIVEMMU_NO_EVENTS
        if (NativeMmuEventSource.Log.ZapEventsEnabled) NativeMmuEventSource.Log.Zap(address, address + size, zapped, cpu.Id);
#endif
    }

    /// <summary>unmap_vmas: every VMA from <paramref name="first"/> that starts below end. mmap_lock held; the caller's gather flushes.</summary>
    public static void UnmapVmas(Cpu cpu, MmuGather tlb, Vma? first, ulong start, ulong end)
    {
        for (Vma? v = first; v is not null && v.VmStart < end; v = v.Next)
            UnmapSingleVma(cpu, tlb, v, start, end);
    }

    /// <summary>unmap_single_vma: clamp to the VMA and zap. mmap_lock held, no page-table lock.</summary>
    public static void UnmapSingleVma(Cpu cpu, MmuGather tlb, Vma vma, ulong startAddr, ulong endAddr)
    {
        ulong start = Math.Max(vma.VmStart, startAddr);
        if (start >= vma.VmEnd) return;
        ulong end = Math.Min(vma.VmEnd, endAddr);
        if (end <= vma.VmStart) return;
        if (start == end) return;
        if ((vma.VmFlags & VmFlags.HugeTlb) != 0) Huge.HugetlbMapping.UnmapHugepageRange(cpu, tlb, vma, start, end);
        else UnmapPageRange(cpu, tlb, vma, start, end);
    }

    /// <summary>unmap_page_range: the walk from the PGD down, zap_pmd_range and zap_pte_range as its callbacks.</summary>
    private static void UnmapPageRange(Cpu cpu, MmuGather tlb, Vma vma, ulong addr, ulong end)
    {
        var zap = new ZapWalk(cpu, tlb, vma);
        PageWalk.WalkRange(cpu, vma.Mm, addr, end, ref zap);
    }

    /// <summary>
    /// zap_pmd_range and zap_pte_range (6.14) as walk callbacks. Each PTE table is mapped for writing and
    /// locked; every present entry is cleared and its page handed to the gather; when the batch fills, the
    /// TLB is flushed before the lock goes (force_flush) and the pages freed after, and the walk maps the
    /// table again from there. With reclaim_pt and the whole table zapped, the PMD is cleared too:
    /// directly while the PTE lock is held when the PMD lock can be trylocked, else by try_to_free_pte,
    /// which takes both locks in order and rescans the 512 entries.
    /// </summary>
    private struct ZapWalk(Cpu cpu, MmuGather tlb, Vma vma) : IPageWalkOps
    {
        private readonly Machine _m = vma.Mm.Machine;
        private readonly Cpu cpu = cpu;
        private readonly MmuGather tlb = tlb;
        private readonly Vma vma = vma;
        /// <summary>reclaim_pt_is_enabled for the table being zapped, and whether it can still be reclaimed directly.</summary>
        private bool _reclaim, _direct;
        /// <summary>The PMD try_get_and_clear_pmd took out (direct reclaim).</summary>
        private Pmd _pmdval;
        /// <summary>This pass over the table: the batch filled, and the anonymous RSS it released.</summary>
        private bool _forceFlush;
        private long _rssAnon;

        public readonly PteWalk PteWalk => PteWalk.Write;
        public readonly MmuGather? Tlb => tlb;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>zap_pmd_range's body: a huge PMD is zapped whole when the range covers it, else split and zapped by PTEs.</summary>
        public WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            cpu.ServiceInterrupts(); // cond_resched()'s spot: interrupts are on between tables
            if (pmdval.Leaf)
            {
                if (next - addr != Geometry.PmdSize)
                {
                    HugeMemory.SplitHugePmd(cpu, vma, pmd, addr);
                    return WalkAction.Again;
                }
                return HugeMemory.ZapHugePmd(cpu, tlb, vma, pmd, addr) ? WalkAction.Continue : WalkAction.Again;
            }
            // A shared PTE table: a zap over all of it (or of a dying mm) only drops this mm's reference
            // while others hold it; the last holder takes it over and zaps as usual. Callers break the
            // tables they cover in part before zapping (BreakCowPteBoundaries), so this copy is rare.
            if (PgTable.IsCowTable(pmdval))
            {
                if ((tlb.FullMm || next - addr == Geometry.PmdSize) && PgTable.ZapCowPte(cpu, tlb, vma.Mm, pmd, addr)) return WalkAction.Continue;
                if (!PgTable.BreakSharedTable(cpu, vma.Mm, pmd, addr, nameof(ZapWalk)))
                    Bug.Throw($"zap of part of a shared PTE table at {addr:x} could not break it: its caller must break the boundaries first");
            }
            _reclaim = PgTable.ReclaimPtIsEnabled(tlb, addr, next);
            _direct = true;
            return WalkAction.Subtree;
        }

        /// <summary>do_zap_pte_range → zap_present_ptes for one present entry (and the rest of its folio's run).</summary>
        [MethodImpl(MethodImplOptions.AggressiveInlining)]
        public int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end)
        {
            Bug.On(!ptent.Present, "zap_nonpresent_ptes: entry {0:x16} at {1:x}, and this kernel has no swap", ptent.Value, addr);
            // ptep_get_and_clear_full: a dying mm has no walkers left, so a plain clear will do.
            if (tlb.FullMm) PgTable.Set(pte, default);
            else ptent = PgTable.GetAndClear(pte);
            tlb.AdjustRange(addr, Geometry.PageSize);
            ulong pfn = ptent.Pfn;
            int nr = 1;
            bool full;
            if (ptent.Special || pfn == _m.ZeroPfn)
            {
                full = false; // vm_normal_page() == NULL: nothing to release
            }
            else if (_m.Vmemmap.PfnToPage(pfn) is var page && !page->IsCompound)
            {
                _rssAnon--;
                Rmap.SmallFolioRemoveRmapPte(cpu, _m, page, pfn);
                full = tlb.RemovePage(pfn);
            }
            else
            {
                // zap_present_folio_ptes: the run of entries mapping this large folio goes in one batch,
                // so a folio unmapped whole never looks partially mapped on the way.
                ulong head = Folio.HeadPfn(_m, pfn);
                ulong folioEnd = head + (ulong)Folio.NrPages(_m.Vmemmap.PfnToPage(head));
                nr = FolioPteBatch(pte, ptent, folioEnd, (int)((end - addr) >> Geometry.PageShift), FpbFlags.PfnRunOnly);
                for (int i = 1; i < nr; i++) // clear_full_ptes
                {
                    if (tlb.FullMm) PgTable.Set(pte + i, default);
                    else PgTable.GetAndClear(pte + i);
                }
                if (nr > 1) tlb.AdjustRange(addr, (ulong)nr * Geometry.PageSize);
                _rssAnon -= nr;
                Folio.RemoveRmapPtes(cpu, _m, head, pfn, nr, vma.Mm);
                full = tlb.RemoveFolioPages(head, nr);
            }
            map.Entries -= nr;
            if (full)
            {
                _forceFlush = true;
                _direct = false;
                map.Break = true;
            }
            return nr;
        }

        /// <summary>zap_pte_range's end of a pass, PTE lock still held: the direct reclaim's PMD clear, the RSS, the TLB flush a full batch needs.</summary>
        public void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end)
        {
            if (_reclaim && _direct && addr == end) _direct = PgTable.TryGetAndClearPmd(tlb, pmd, start, out _pmdval);
            vma.Mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, _rssAnon);
            _m.Counters.Add(cpu.Id, VmEvent.ZapPages, -_rssAnon);
            tlb.ZappedPages -= _rssAnon;
            if (_forceFlush) tlb.FlushMmuTlbOnly(); // the TLB must be clean before the lock goes
        }

        /// <summary>After the unlock: free the flushed batch; once the table is done, free it (free_pte / try_to_free_pte).</summary>
        public void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end)
        {
            if (_forceFlush) tlb.FlushMmuFree();
            _forceFlush = false;
            _rssAnon = 0;
            if (addr != end || !_reclaim) return;
            if (_direct) PgTable.FreePte(cpu, tlb, start, _pmdval);
            else PgTable.TryToFreePte(cpu, tlb, pmd, start);
        }
    }

    // ---------------------------------------------------------------------------------------------
    // free_pgtables
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// free_pgtables: for the VMAs first..last (already unmapped), free the page tables in their range
    /// that no remaining VMA in [floor, ceiling) needs. Nearby VMAs are freed in one call down.
    /// mmap_lock held for write (no walker can be inside these tables); the gather frees them after its flush.
    /// </summary>
    public static void FreePgtables(Cpu cpu, MmuGather tlb, Vma first, Vma last, ulong floor, ulong ceiling)
    {
        Vma? vma = first;
        while (vma is not null)
        {
            ulong addr = vma.VmStart;
            Vma? next = ReferenceEquals(vma, last) ? null : vma.Next;
            while (next is not null && next.VmStart <= vma.VmEnd + Geometry.PmdSize)
            {
                vma = next;
                next = ReferenceEquals(vma, last) ? null : vma.Next;
            }
            FreePgdRange(cpu, tlb, addr, vma.VmEnd, floor, next is not null ? next.VmStart : ceiling);
            vma = next;
        }
    }

    /// <summary>free_pgd_range: the floor/ceiling arithmetic decides which tables are wholly unused.</summary>
    public static void FreePgdRange(Cpu cpu, MmuGather tlb, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        addr &= Geometry.PmdMask;
        if (addr < floor)
        {
            addr += Geometry.PmdSize;
            if (addr == 0) return;
        }
        if (ceiling != 0)
        {
            ceiling &= Geometry.PmdMask;
            if (ceiling == 0) return;
        }
        if (end - 1 > ceiling - 1) end -= Geometry.PmdSize;
        if (addr > end - 1) return;

        Pgd* pgd = PgTable.PgdOffset(mm, addr);
        do
        {
            ulong next = mm.Paging.PgdAddrEnd(addr, end);
            if (!PgTable.Get(pgd).IsNone(mm.Paging)) FreeP4dRange(tlb, pgd, addr, next, floor, ceiling);
            pgd++;
            addr = next;
        }
        while (addr != end);
    }

    /// <summary>
    /// Whether the table covering [start &amp; mask, ...) lies wholly inside [floor, ceiling) and below end:
    /// free_p4d_range / free_pud_range / free_pmd_range's test before they free the table above them.
    /// </summary>
    private static bool TableUnused(ulong start, ulong end, ulong floor, ulong ceiling, ulong mask)
    {
        start &= mask;
        if (start < floor) return false;
        if (ceiling != 0)
        {
            ceiling &= mask;
            if (ceiling == 0) return false;
        }
        return end - 1 <= ceiling - 1;
    }

    private static void FreeP4dRange(MmuGather tlb, Pgd* pgd, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        ulong start = addr;
        P4d* p4d = PgTable.P4dOffset(mm, pgd, addr);
        do
        {
            ulong next = mm.Paging.P4dAddrEnd(addr, end);
            if (!PgTable.Get(p4d).None) FreePudRange(tlb, p4d, addr, next, floor, ceiling);
            p4d++;
            addr = next;
        }
        while (addr != end);

        if (!mm.Paging.L5Enabled) return; // a folded P4D has no table of its own (p4d_free_tlb is a no-op)
        ulong pgdirMask = ~(mm.Paging.PgdirSize - 1);
        if (!TableUnused(start, end, floor, ceiling, pgdirMask)) return;
        ulong p4dTable = PgTable.Get(pgd).Pfn;
        PgTable.Set(pgd, default); // pgd_clear
        tlb.RemoveTable(p4dTable, start & pgdirMask);
    }

    private static void FreePudRange(MmuGather tlb, P4d* p4d, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        ulong start = addr;
        Pud* pud = PgTable.PudOffset(mm.Machine.Memory, PgTable.Get(p4d), addr);
        do
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            if (!PgTable.Get(pud).None) FreePmdRange(tlb, pud, addr, next, floor, ceiling);
            pud++;
            addr = next;
        }
        while (addr != end);

        if (!TableUnused(start, end, floor, ceiling, Geometry.P4dMask)) return;
        ulong pudTable = PgTable.Get(p4d).Pfn;
        PgTable.Set(p4d, default); // p4d_clear
        tlb.RemoveTable(pudTable, start & Geometry.P4dMask);
        mm.AddPgtablesBytes(-PgTable.TableBytes); // mm_dec_nr_puds
    }

    private static void FreePmdRange(MmuGather tlb, Pud* pud, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        ulong start = addr;
        Pmd* pmd = PgTable.PmdOffset(mm.Machine.Memory, PgTable.Get(pud), addr);
        do
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            if (!PgTable.Get(pmd).None) FreePteRange(tlb, pmd, addr);
            pmd++;
            addr = next;
        }
        while (addr != end);

        if (!TableUnused(start, end, floor, ceiling, Geometry.PudMask)) return;
        ulong pmdTable = PgTable.Get(pud).Pfn;
        PgTable.Set(pud, default); // pud_clear
        tlb.RemoveTable(pmdTable, start & Geometry.PudMask);
        mm.AddPgtablesBytes(-PgTable.TableBytes); // mm_dec_nr_pmds
    }

    /// <summary>free_pte_range: pmd_clear, then pte_free_tlb and mm_dec_nr_ptes.</summary>
    private static void FreePteRange(MmuGather tlb, Pmd* pmd, ulong addr)
    {
        Pmd pmdval = PgTable.Get(pmd);
        Bug.On(pmdval.Leaf, "free_pgtables: a huge PMD at {0:x} outlived the zap of its VMA", addr);
        Bug.On(PgTable.IsCowTable(pmdval), "free_pgtables: the shared PTE table at {0:x} outlived the zap of its VMA", addr);
        PgTable.Set(pmd, default);
        PgTable.PteFreeTlb(tlb, pmdval.Pfn, addr);
    }
}
