using System.Text;
using NativeMmu.Arch.X86;
using NativeMmu.Cpu;
using NativeMmu.Physical;

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
        yield return new("nr_page_table_pages", c.Sum(VmStat.NrPageTablePages));
        yield return new("pgalloc_normal", c.Sum(VmEvent.PgallocNormal));
        yield return new("pgfree", c.Sum(VmEvent.Pgfree));
        yield return new("pgfault", c.Sum(VmEvent.Pgfault));
        yield return new("pgmajfault", c.Sum(VmEvent.Pgmajfault));
        yield return new("pgreuse", c.Sum(VmEvent.Pgreuse));
        yield return new("thp_fault_alloc", c.Sum(VmEvent.ThpFaultAlloc));
        yield return new("thp_fault_fallback", c.Sum(VmEvent.ThpFaultFallback));
        yield return new("thp_split_pmd", c.Sum(VmEvent.ThpSplitPmd));
        yield return new("thp_deferred_split_page", c.Sum(VmEvent.ThpDeferredSplitPage));
        yield return new("nr_tlb_remote_flush", c.Sum(VmEvent.NrTlbRemoteFlush));
        yield return new("nr_tlb_remote_flush_received", c.Sum(VmEvent.NrTlbRemoteFlushReceived));
        yield return new("nr_tlb_local_flush_all", c.Sum(VmEvent.NrTlbLocalFlushAll));
        yield return new("nr_tlb_local_flush_one", c.Sum(VmEvent.NrTlbLocalFlushOne));
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
    public static string RenderStatus(Process p)
    {
        MmStruct mm = p.Mm;
        long anon = mm.GetMmCounter(MmCounter.AnonPages), file = mm.GetMmCounter(MmCounter.FilePages), shmem = mm.GetMmCounter(MmCounter.ShmemPages);
        long rss = anon + file + shmem;
        long hiwaterRss = Math.Max(mm.HiwaterRss, rss);
        long totalVm = mm.TotalVm, hiwaterVm = Math.Max(mm.HiwaterVm, totalVm);
        const int kbPerPage = (int)(Geometry.PageSize >> 10);
        var sb = new StringBuilder();
        sb.Append("Name:\t").Append(p.Name).Append('\n');
        sb.Append("Pid:\t").Append(p.Pid).Append('\n');
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
