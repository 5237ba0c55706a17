using System.Text;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>Counters under the kernel's names, rendered as /proc/vmstat, /proc/PID/status and /proc/PID/maps.</summary>
public static class Stats
{
    /// <summary>The /proc/vmstat lines this kernel keeps, in the kernel's order and spelling.</summary>
    public static IEnumerable<KeyValuePair<string, long>> Vmstat(Machine m)
    {
        PerCpuCounters c = m.Counters;
        yield return new("nr_free_pages", m.Allocator.BuddyFreePages);
        yield return new("nr_anon_pages", c.Sum(VmStat.NrAnonPages));
        yield return new("nr_anon_transparent_hugepages", c.Sum(VmStat.NrAnonThps) / HugeMemory.HpagePmdNr);
        yield return new("nr_page_table_pages", c.Sum(VmStat.NrPageTablePages));
        yield return new("pgalloc_normal", c.Sum(VmEvent.PgallocNormal));
        yield return new("pgfree", c.Sum(VmEvent.Pgfree));
        yield return new("pgfault", c.Sum(VmEvent.Pgfault));
        yield return new("pgmajfault", c.Sum(VmEvent.Pgmajfault));
        yield return new("pgreuse", c.Sum(VmEvent.Pgreuse));
        yield return new("thp_fault_alloc", c.Sum(VmEvent.ThpFaultAlloc));
        yield return new("thp_fault_fallback", c.Sum(VmEvent.ThpFaultFallback));
        yield return new("thp_split_page", c.Sum(VmEvent.ThpSplitPage));
        yield return new("thp_deferred_split_page", c.Sum(VmEvent.ThpDeferredSplitPage));
        yield return new("thp_split_pmd", c.Sum(VmEvent.ThpSplitPmd));
        yield return new("thp_zero_page_alloc", c.Sum(VmEvent.ThpZeroPageAlloc));
        yield return new("nr_tlb_remote_flush", c.Sum(VmEvent.NrTlbRemoteFlush));
        yield return new("nr_tlb_remote_flush_received", c.Sum(VmEvent.NrTlbRemoteFlushReceived));
        yield return new("nr_tlb_local_flush_all", c.Sum(VmEvent.NrTlbLocalFlushAll));
        yield return new("nr_tlb_local_flush_one", c.Sum(VmEvent.NrTlbLocalFlushOne));
        // Copy-on-write PTE tables (the COW PTE series adds no vmstat lines; these follow its naming).
        yield return new("cow_pte_share", c.Sum(VmEvent.CowPteShare));
        yield return new("cow_pte_fallback", c.Sum(VmEvent.CowPteFallback));
        yield return new("cow_pte_break_copy", c.Sum(VmEvent.CowPteBreakCopy));
        yield return new("cow_pte_break_reuse", c.Sum(VmEvent.CowPteBreakReuse));
        yield return new("cow_pte_drop", c.Sum(VmEvent.CowPteDrop));
        // Emulator-only: shootdowns that a non-answering CPU pushed onto the membarrier path.
        yield return new("nativemmu_tlb_flush_barrier_fallback", c.Sum(VmEvent.TlbFlushBarrierFallback));
    }

    public static string RenderVmstat(Machine m)
    {
        var sb = new StringBuilder();
        foreach (var kv in Vmstat(m)) sb.Append(kv.Key).Append(' ').Append(kv.Value).Append('\n');
        return sb.ToString();
    }

    /// <summary>task_mem (fs/proc/task_mmu.c): the Vm* and Rss* lines of /proc/PID/status, "%8lu kB".</summary>
    /// <remarks>proc_pid_status prints the task's Name and Pid before task_mem's lines; the caller passes them, as the task is not mm's.</remarks>
    public static string RenderStatus(string name, int pid, MmStruct mm)
    {
        long anon = mm.GetMmCounter(MmCounter.AnonPages), file = mm.GetMmCounter(MmCounter.FilePages), shmem = mm.GetMmCounter(MmCounter.ShmemPages);
        long rss = anon + file + shmem;
        long hiwaterRss = Math.Max(mm.HiwaterRss, rss);
        long totalVm = mm.TotalVm, hiwaterVm = Math.Max(mm.HiwaterVm, totalVm);
        const int kbPerPage = (int)(Geometry.PageSize >> 10);
        var sb = new StringBuilder();
        sb.Append("Name:\t").Append(name).Append('\n');
        sb.Append("Pid:\t").Append(pid).Append('\n');
        Line(sb, "VmPeak", hiwaterVm * kbPerPage);
        Line(sb, "VmSize", totalVm * kbPerPage);
        Line(sb, "VmLck", 0);
        Line(sb, "VmPin", 0);
        Line(sb, "VmHWM", hiwaterRss * kbPerPage);
        Line(sb, "VmRSS", rss * kbPerPage);
        Line(sb, "RssAnon", anon * kbPerPage);
        Line(sb, "RssFile", file * kbPerPage);
        Line(sb, "RssShmem", shmem * kbPerPage);
        Line(sb, "VmData", totalVm * kbPerPage);
        Line(sb, "VmStk", 0);
        Line(sb, "VmExe", 0);
        Line(sb, "VmLib", 0);
        Line(sb, "VmPTE", mm.PgtablesBytes >> 10);
        Line(sb, "VmSwap", mm.GetMmCounter(MmCounter.SwapEnts) * kbPerPage);
        sb.Append("HugetlbPages:\t").Append($"{0,8}").Append(" kB\n");
        return sb.ToString();
    }

    /// <summary>
    /// /proc/PID/smaps_rollup (show_smaps_rollup): the page tables walked under mmap_lock for read, as
    /// smaps_pte_range walks them: a huge PMD under pmd_trans_huge_lock, a PTE table under its lock
    /// (pte_offset_map_lock), so a concurrent MADV_DONTNEED can neither free the table nor zap or split
    /// the THP under the walk. Each mapped page is accounted by its precise mapcount (Pss divides it
    /// among the mappers); a PMD-mapped THP counts in AnonHugePages. The huge and small zero pages count
    /// nowhere, as vm_normal_page says.
    /// </summary>
    public static unsafe string RenderSmapsRollup(MmStruct mm)
    {
        Machine m = mm.Machine;
        ulong lo = ulong.MaxValue, hi = 0;
        using CpuScope scope = m.EnterCpu();
        var walk = new SmapsWalk(m);
        mm.MmapLock.ReadLock(scope.Cpu.Id);
        try
        {
            foreach (Vma vma in mm.Vmas)
            {
                lo = Math.Min(lo, vma.VmStart);
                hi = Math.Max(hi, vma.VmEnd);
                if (vma.VmStart < vma.VmEnd) PageWalk.WalkRange(scope.Cpu, mm, vma.VmStart, vma.VmEnd, ref walk);
            }
        }
        finally
        {
            mm.MmapLock.ReadUnlock(scope.Cpu.Id);
        }
        long rss = walk.Rss, anon = walk.Anon, anonHuge = walk.AnonHuge, sharedClean = walk.SharedClean, sharedDirty = walk.SharedDirty;
        long privateClean = walk.PrivateClean, privateDirty = walk.PrivateDirty, referenced = walk.Referenced;
        double pss = walk.Pss, pssDirty = walk.PssDirty;
        var sb = new StringBuilder();
        sb.Append($"{(lo == ulong.MaxValue ? 0 : lo):x8}-{hi:x8} ---p 00000000 00:00 0                          [rollup]\n");
        void Field(string name, long bytes) => sb.Append((name + ":").PadRight(16)).Append($"{bytes >> 10,8}").Append(" kB\n");
        Field("Rss", rss);
        Field("Pss", (long)pss);
        Field("Pss_Dirty", (long)pssDirty);
        Field("Pss_Anon", (long)pss);
        Field("Pss_File", 0);
        Field("Pss_Shmem", 0);
        Field("Shared_Clean", sharedClean);
        Field("Shared_Dirty", sharedDirty);
        Field("Private_Clean", privateClean);
        Field("Private_Dirty", privateDirty);
        Field("Referenced", referenced);
        Field("Anonymous", anon);
        Field("KSM", 0);
        Field("LazyFree", 0);
        Field("AnonHugePages", anonHuge);
        Field("ShmemPmdMapped", 0);
        Field("FilePmdMapped", 0);
        Field("Shared_Hugetlb", 0);
        Field("Private_Hugetlb", 0);
        Field("Swap", 0);
        Field("SwapPss", 0);
        Field("Locked", 0);
        return sb.ToString();
    }

    /// <summary>smaps_pte_range (smaps_pmd_entry, smaps_pte_entry) as walk callbacks, with struct mem_size_stats.</summary>
    private unsafe struct SmapsWalk(Machine m) : IPageWalkOps
    {
        private readonly Machine m = m;
        public long Rss, Anon, AnonHuge, SharedClean, SharedDirty, PrivateClean, PrivateDirty, Referenced;
        public double Pss, PssDirty;

        public readonly PteWalk PteWalk => PteWalk.Read;
        public readonly MmuGather? Tlb => null;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>smaps_pte_range's huge case: smaps_pmd_entry under pmd_trans_huge_lock; a PMD split meanwhile is read again as a table.</summary>
        public WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (!pmdval.Leaf) return WalkAction.Subtree;
            int* ptl = PgTable.PmdTransHugeLock(m, pmd);
            if (ptl == null) return WalkAction.Again;
            Pmd v = PgTable.Get(pmd);
            if (!HugeMemory.IsHugeZeroPmd(m, v))
            {
                Page* head = m.Vmemmap.PfnToPage(v.Pfn);
                AnonHuge += (long)Geometry.PmdSize;
                for (int i = 0; i < HugeMemory.HpagePmdNr; i++) // folio_precise_page_mapcount
                    Account(head[i].MapCount + 1 + Folio.EntireMapcount(head) + 1, v.Dirty, v.Young, (long)Geometry.PageSize);
            }
            Spin.Unlock(ptl);
            return WalkAction.Continue;
        }

        /// <summary>smaps_pte_entry, under the PTL.</summary>
        public int PteEntry(ref PteMapping map, Pte* pte, Pte e, ulong addr, ulong end)
        {
            if (!e.Present || e.Special || e.Pfn == m.ZeroPfn) return 1;
            Page* page = m.Vmemmap.PfnToPage(e.Pfn);
            Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, e.Pfn));
            int mapcount = page->MapCount + 1 + (Folio.IsLarge(head) ? Folio.EntireMapcount(head) + 1 : 0);
            Account(mapcount, e.Dirty, e.Young, (long)Geometry.PageSize);
            return 1;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }

        /// <summary>smaps_account for one page.</summary>
        private void Account(int mapcount, bool dirty, bool young, long bytes)
        {
            Rss += bytes;
            Anon += bytes;
            if (young) Referenced += bytes;
            double share = mapcount >= 2 ? (double)bytes / mapcount : bytes;
            Pss += share;
            if (dirty) PssDirty += share;
            if (mapcount >= 2)
            {
                if (dirty) SharedDirty += bytes; else SharedClean += bytes;
            }
            else
            {
                if (dirty) PrivateDirty += bytes; else PrivateClean += bytes;
            }
        }
    }

    private static void Line(StringBuilder sb, string name, long kb) => sb.Append(name).Append(":\t").Append($"{kb,8}").Append(" kB\n");

    /// <summary>/proc/PID/maps lines for the anonymous VMAs.</summary>
    public static string RenderMaps(MmStruct mm)
    {
        var sb = new StringBuilder();
        foreach (Vma v in mm.Vmas)
            sb.Append($"{v.VmStart:x8}-{v.VmEnd:x8} {v.FlagsString()} 00000000 00:00 0 \n");
        return sb.ToString();
    }
}
