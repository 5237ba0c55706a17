using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Diagnostics;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Unmapping (mm/memory.c): zap_page_range_single and unmap_vmas down to zap_pte_range, and
/// free_pgtables, which releases the page-table pages no VMA covers any more. The walker idiom is the
/// kernel's at every level: next = pXd_addr_end(addr, end); skip none; descend.
/// </summary>
internal static unsafe class Zap
{
    /// <summary>zap_page_range_single (MADV_DONTNEED): one VMA, one gather. Caller holds mmap_lock.</summary>
    public static void ZapPageRangeSingle(Cpu cpu, Vma vma, ulong address, ulong size, bool reclaimPt = false)
    {
        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(vma.Mm, fullmm: false);
        tlb.ReclaimPt = reclaimPt && vma.Mm.Machine.Config.PtReclaim == PtReclaimMode.Sync;
        vma.Mm.UpdateHiwaterRss();
        UnmapSingleVma(cpu, tlb, vma, address, address + size);
        long zapped = tlb.ZappedPages;
        tlb.Finish();
#if !NATIVEMMU_NO_EVENTS
        if (NativeMmuEventSource.Log.ZapEventsEnabled) NativeMmuEventSource.Log.Zap(address, address + size, zapped, cpu.Id);
#endif
    }

    /// <summary>unmap_vmas: every VMA from <paramref name="first"/> that starts below end.</summary>
    public static void UnmapVmas(Cpu cpu, MmuGather tlb, Vma? first, ulong start, ulong end)
    {
        for (Vma? v = first; v is not null && v.VmStart < end; v = v.Next)
            UnmapSingleVma(cpu, tlb, v, start, end);
    }

    /// <summary>unmap_single_vma: clamp to the VMA and zap.</summary>
    public static void UnmapSingleVma(Cpu cpu, MmuGather tlb, Vma vma, ulong startAddr, ulong endAddr)
    {
        ulong start = Math.Max(vma.VmStart, startAddr);
        if (start >= vma.VmEnd) return;
        ulong end = Math.Min(vma.VmEnd, endAddr);
        if (end <= vma.VmStart) return;
        if (start != end) UnmapPageRange(cpu, tlb, vma, start, end);
    }

    /// <summary>unmap_page_range: the PGD loop.</summary>
    private static void UnmapPageRange(Cpu cpu, MmuGather tlb, Vma vma, ulong addr, ulong end)
    {
        MmStruct mm = vma.Mm;
        ulong* pgd = PgTable.PgdOffset(mm, addr);
        do
        {
            ulong next = mm.Paging.PgdAddrEnd(addr, end);
            if (!new Pgd(PgTable.Get(pgd)).IsNone(mm.Paging))
                ZapP4dRange(cpu, tlb, vma, pgd, addr, next);
            pgd++;
            addr = next;
        }
        while (addr != end);
    }

    private static void ZapP4dRange(Cpu cpu, MmuGather tlb, Vma vma, ulong* pgd, ulong addr, ulong end)
    {
        MmStruct mm = vma.Mm;
        ulong* p4d = PgTable.P4dOffset(mm, pgd, addr);
        do
        {
            ulong next = mm.Paging.P4dAddrEnd(addr, end);
            if (!new P4d(PgTable.Get(p4d)).None) ZapPudRange(cpu, tlb, vma, p4d, addr, next);
            p4d++;
            addr = next;
        }
        while (addr != end);
    }

    private static void ZapPudRange(Cpu cpu, MmuGather tlb, Vma vma, ulong* p4d, ulong addr, ulong end)
    {
        PhysicalMemory mem = vma.Mm.Machine.Memory;
        ulong* pud = PgTable.PudOffset(mem, PgTable.Get(p4d), addr);
        do
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            if (!new Pud(PgTable.Get(pud)).None) ZapPmdRange(cpu, tlb, vma, pud, addr, next);
            pud++;
            addr = next;
        }
        while (addr != end);
    }

    private static void ZapPmdRange(Cpu cpu, MmuGather tlb, Vma vma, ulong* pud, ulong addr, ulong end)
    {
        PhysicalMemory mem = vma.Mm.Machine.Memory;
        ulong* pmd = PgTable.PmdOffset(mem, PgTable.Get(pud), addr);
        do
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            cpu.ServiceInterrupts(); // cond_resched()'s spot: interrupts are on between tables
            if (new Pmd(PgTable.Get(pmd)).Leaf)
            {
                // A huge PMD: zapped whole when the range covers it, else split and zapped by PTEs.
                if (next - addr != Geometry.PmdSize) HugeMemory.SplitHugePmd(cpu, vma, pmd, addr);
                else if (HugeMemory.ZapHugePmd(cpu, tlb, vma, pmd, addr))
                {
                    addr = next;
                    pmd++;
                    continue;
                }
            }
            if (new Pmd(PgTable.Get(pmd)).None)
            {
                addr = next;
                pmd++;
                continue;
            }
            if (vma.Mm.Machine.Config.PtReclaim == PtReclaimMode.Refcount)
            {
                // The zap is a walker: it holds a pte_refcount while it works and drops it with the
                // references of the entries it cleared; the last put frees the table.
                ulong table = PgTable.PteTryGet(cpu, vma.Mm.Machine, pmd);
                if (table == 0)
                {
                    addr = next;
                    pmd++;
                    continue;
                }
                ulong from = addr;
                addr = ZapPteRange(cpu, tlb, vma, pmd, addr, next, out int cleared);
                PgTable.PtePut(cpu, vma.Mm, pmd, table, cleared + 1, from, tlb);
            }
            else
            {
                addr = ZapPteRange(cpu, tlb, vma, pmd, addr, next, out _);
            }
            if (addr == next) pmd++; // otherwise the table went away under us: look at the PMD again
        }
        while (addr != end);
    }

    /// <summary>
    /// zap_pte_range (6.14): clear every present entry under the PTE lock, hand the pages to the gather,
    /// flush before dropping the lock when the batch filled (force_flush), and go round again until the
    /// range is done. With reclaim_pt and the whole table zapped, the PMD is cleared too: directly while
    /// the PTE lock is held when the PMD lock can be trylocked (the reverse of the usual order), else by
    /// try_to_free_pte, which takes both locks in order and rescans the 512 entries.
    /// </summary>
    private static ulong ZapPteRange(Cpu cpu, MmuGather tlb, Vma vma, ulong* pmd, ulong addr, ulong end, out int cleared)
    {
        cleared = 0;
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        ulong zeroPfn = m.ZeroPfn;
        ulong start = addr;
        bool canReclaimPt = tlb.ReclaimPt && end - addr >= Geometry.PmdSize; // reclaim_pt_is_enabled
        bool directReclaim = true;
        ulong pmdval = 0;
    retry:
        bool forceFlush = false;
        long rssAnon = 0;
        ulong* pte = PgTable.PteOffsetMapLock(cpu, m, pmd, addr, out int* ptl);
        if (pte == null) return addr;
        for (; addr != end; pte++, addr += Geometry.PageSize)
        {
            ulong ptent = PgTable.Get(pte);
            if (new Pte(ptent).None) continue;
            Bug.On(!new Pte(ptent).Present, "zap_nonpresent_ptes: entry {0:x16} at {1:x}, and this kernel has no swap", ptent, addr);
            // ptep_get_and_clear_full: a dying mm has no walkers left, so a plain clear will do.
            if (tlb.FullMm) PgTable.Set(pte, 0);
            else ptent = PgTable.GetAndClear(pte);
            cleared++;
            tlb.AdjustRange(addr, Geometry.PageSize);
            var entry = new Pte(ptent);
            ulong pfn = entry.Pfn;
            if (entry.Special || pfn == zeroPfn) continue; // vm_normal_page() == NULL: nothing to release
            Page* page = m.Vmemmap.PfnToPage(pfn);
            bool full;
            if (!page->IsCompound)
            {
                rssAnon--;
                Rmap.FolioRemoveRmapPte(cpu, m, pfn, mm);
                full = tlb.RemovePage(pfn);
            }
            else
            {
                // zap_present_folio_ptes: the run of entries mapping this large folio goes in one batch,
                // so a folio unmapped whole never looks partially mapped on the way.
                int nr = 1 + ZapFolioPteBatch(m, tlb, pte, addr, end, pfn);
                pte += nr - 1;
                addr += (ulong)(nr - 1) * Geometry.PageSize;
                cleared += nr - 1;
                rssAnon -= nr;
                ulong head = Folio.HeadPfn(m, pfn);
                Folio.RemoveRmapPtes(cpu, m, head, pfn, nr, mm);
                full = tlb.RemoveFolioPages(head, nr);
            }
            if (full)
            {
                forceFlush = true;
                directReclaim = false;
                addr += Geometry.PageSize;
                break;
            }
        }
        if (canReclaimPt && directReclaim && addr == end) directReclaim = TryGetAndClearPmd(tlb, pmd, start, out pmdval);
        mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, rssAnon);
        m.Counters.Add(cpu.Id, VmEvent.ZapPages, -rssAnon);
        tlb.ZappedPages -= rssAnon;
        if (forceFlush) tlb.FlushMmuTlbOnly(); // the TLB must be clean before the lock goes
        Spin.Unlock(ptl);
        if (forceFlush) tlb.FlushMmuFree();
        if (addr != end) goto retry;
        if (canReclaimPt)
        {
            if (directReclaim) FreePte(cpu, tlb, start, pmdval);
            else TryToFreePte(cpu, tlb, pmd, start);
        }
        return addr;
    }

    /// <summary>
    /// folio_pte_batch + clear_full_ptes for the entries after <paramref name="pte"/>: how many more
    /// consecutive present entries map the next pages of the same folio (dirty, young and write ignored);
    /// those are cleared too.
    /// </summary>
    private static int ZapFolioPteBatch(Machine m, MmuGather tlb, ulong* pte, ulong addr, ulong end, ulong pfn)
    {
        ulong head = Folio.HeadPfn(m, pfn);
        ulong folioEnd = head + (ulong)Folio.NrPages(m.Vmemmap.PfnToPage(head));
        int more = 0;
        ulong a = addr + Geometry.PageSize;
        for (ulong next = pfn + 1; a < end && next < folioEnd; a += Geometry.PageSize, next++)
        {
            var e = new Pte(PgTable.Get(pte + 1 + more));
            if (!e.Present || e.Special || e.Pfn != next) break;
            if (tlb.FullMm) PgTable.Set(pte + 1 + more, 0);
            else PgTable.GetAndClear(pte + 1 + more);
            more++;
        }
        if (more > 0) tlb.AdjustRange(addr, (ulong)(more + 1) * Geometry.PageSize);
        return more;
    }

    /// <summary>try_get_and_clear_pmd (mm/pt_reclaim.c): PTE lock held, so the PMD lock may only be tried.</summary>
    private static bool TryGetAndClearPmd(MmuGather tlb, ulong* pmd, ulong start, out ulong pmdval)
    {
        int* pml = PgTable.PmdLockptr(tlb.Mm.Machine, pmd);
        pmdval = 0;
        if (!Spin.TryLock(pml)) return false;
        pmdval = PgTable.Get(pmd);
        PgTable.Set(pmd, 0); // pmd_clear
        tlb.NoteReclaimedPmd(start & Geometry.PmdMask);
        Spin.Unlock(pml);
        return true;
    }

    /// <summary>free_pte: the table goes to the gather (freed after the flush and a grace period).</summary>
    private static void FreePte(Cpu cpu, MmuGather tlb, ulong addr, ulong pmdval)
    {
        ulong table = new Pmd(pmdval).Pfn;
        tlb.RemoveTable(table, addr);                                      // pte_free_tlb
        tlb.Mm.AddPgtablesBytes(-Geometry.PtrsPerPte * sizeof(ulong));      // mm_dec_nr_ptes
        tlb.Mm.Machine.Counters.Add(cpu.Id, VmEvent.PtReclaim);
        TestHooks.AfterPmdCleared?.Invoke(cpu, tlb.Mm, addr);
        if (NativeMmuEventSource.Log.ReclaimEventsEnabled) NativeMmuEventSource.Log.TableReclaim(addr, table, cpu.Id);
    }

    /// <summary>try_to_free_pte: PMD lock, then the PTE lock nested; free only if all 512 entries are none.</summary>
    private static void TryToFreePte(Cpu cpu, MmuGather tlb, ulong* pmd, ulong addr)
    {
        Machine m = tlb.Mm.Machine;
        int* pml = PgTable.PmdLockptr(m, pmd);
        Spin.Lock(pml);
        ulong pmdval = PgTable.Get(pmd);
        if (new Pmd(pmdval).None || new Pmd(pmdval).Leaf)
        {
            Spin.Unlock(pml);
            return;
        }
        int* ptl = PgTable.PteLockptr(m, pmdval);
        if (ptl != pml) Spin.Lock(ptl);
        ulong* start = PgTable.PteOffset(m.Memory, pmdval, addr & Geometry.PmdMask);
        bool empty = true;
        for (int i = 0; i < Geometry.PtrsPerPte && empty; i++) empty = new Pte(PgTable.Get(start + i)).None;
        if (empty)
        {
            PgTable.Set(pmd, 0);
            tlb.NoteReclaimedPmd(addr & Geometry.PmdMask);
        }
        if (ptl != pml) Spin.Unlock(ptl);
        Spin.Unlock(pml);
        if (empty) FreePte(cpu, tlb, addr, pmdval);
    }

    // ---------------------------------------------------------------------------------------------
    // free_pgtables
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// free_pgtables: for the VMAs first..last (already unmapped), free the page tables in their range
    /// that no remaining VMA in [floor, ceiling) needs. Nearby VMAs are freed in one call down.
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

        ulong* pgd = PgTable.PgdOffset(mm, addr);
        do
        {
            ulong next = mm.Paging.PgdAddrEnd(addr, end);
            if (!new Pgd(PgTable.Get(pgd)).IsNone(mm.Paging)) FreeP4dRange(cpu, tlb, pgd, addr, next, floor, ceiling);
            pgd++;
            addr = next;
        }
        while (addr != end);
    }

    private static void FreeP4dRange(Cpu cpu, MmuGather tlb, ulong* pgd, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        ulong start = addr;
        ulong* p4d = PgTable.P4dOffset(mm, pgd, addr);
        do
        {
            ulong next = mm.Paging.P4dAddrEnd(addr, end);
            if (!new P4d(PgTable.Get(p4d)).None) FreePudRange(cpu, tlb, p4d, addr, next, floor, ceiling);
            p4d++;
            addr = next;
        }
        while (addr != end);

        if (!mm.Paging.L5Enabled) return; // a folded P4D has no table of its own (p4d_free_tlb is a no-op)
        ulong pgdirMask = ~(mm.Paging.PgdirSize - 1);
        start &= pgdirMask;
        if (start < floor) return;
        if (ceiling != 0)
        {
            ceiling &= pgdirMask;
            if (ceiling == 0) return;
        }
        if (end - 1 > ceiling - 1) return;
        ulong p4dTable = new Pgd(PgTable.Get(pgd)).Pfn;
        PgTable.Set(pgd, 0); // pgd_clear
        tlb.RemoveTable(p4dTable, start);
    }

    private static void FreePudRange(Cpu cpu, MmuGather tlb, ulong* p4d, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        ulong start = addr;
        ulong* pud = PgTable.PudOffset(mm.Machine.Memory, PgTable.Get(p4d), addr);
        do
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            if (!new Pud(PgTable.Get(pud)).None) FreePmdRange(cpu, tlb, pud, addr, next, floor, ceiling);
            pud++;
            addr = next;
        }
        while (addr != end);

        start &= Geometry.P4dMask;
        if (start < floor) return;
        if (ceiling != 0)
        {
            ceiling &= Geometry.P4dMask;
            if (ceiling == 0) return;
        }
        if (end - 1 > ceiling - 1) return;
        ulong pudTable = new P4d(PgTable.Get(p4d)).Pfn;
        PgTable.Set(p4d, 0); // p4d_clear
        tlb.RemoveTable(pudTable, start);
        mm.AddPgtablesBytes(-Geometry.PtrsPerPud * sizeof(ulong)); // mm_dec_nr_puds
    }

    private static void FreePmdRange(Cpu cpu, MmuGather tlb, ulong* pud, ulong addr, ulong end, ulong floor, ulong ceiling)
    {
        MmStruct mm = tlb.Mm;
        ulong start = addr;
        ulong* pmd = PgTable.PmdOffset(mm.Machine.Memory, PgTable.Get(pud), addr);
        do
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            if (!new Pmd(PgTable.Get(pmd)).None) FreePteRange(tlb, pmd, addr);
            pmd++;
            addr = next;
        }
        while (addr != end);

        start &= Geometry.PudMask;
        if (start < floor) return;
        if (ceiling != 0)
        {
            ceiling &= Geometry.PudMask;
            if (ceiling == 0) return;
        }
        if (end - 1 > ceiling - 1) return;
        ulong pmdTable = new Pud(PgTable.Get(pud)).Pfn;
        PgTable.Set(pud, 0); // pud_clear
        tlb.RemoveTable(pmdTable, start);
        mm.AddPgtablesBytes(-Geometry.PtrsPerPmd * sizeof(ulong)); // mm_dec_nr_pmds
    }

    /// <summary>free_pte_range: pmd_clear, pte_free_tlb, mm_dec_nr_ptes.</summary>
    private static void FreePteRange(MmuGather tlb, ulong* pmd, ulong addr)
    {
        Bug.On(new Pmd(PgTable.Get(pmd)).Leaf, "free_pgtables: a huge PMD at {0:x} outlived the zap of its VMA", addr);
        ulong table = new Pmd(PgTable.Get(pmd)).Pfn;
        PgTable.Set(pmd, 0);
        tlb.RemoveTable(table, addr);
        tlb.Mm.AddPgtablesBytes(-Geometry.PtrsPerPte * sizeof(ulong));
    }
}
