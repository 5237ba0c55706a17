using System.Text.RegularExpressions;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// /proc/PID/smaps_rollup walks the page tables under mmap_lock for read, and so does MADV_DONTNEED:
/// while one thread renders it, others fault whole 2 MiB windows in and zap them again. With 6.14's
/// synchronous reclaim the zap frees every PTE table it empties, and with THP it zaps (or splits, then
/// zaps) the huge PMDs whose struct pages the walk reads. The walk must hold what it reads, as
/// smaps_pte_range does: a PTE table under its lock (pte_offset_map_lock), a huge PMD under the PMD
/// lock (pmd_trans_huge_lock).
/// </summary>
/// <remarks>
/// How a wrong walk shows: the invariant mode poisons a freed table, and a software walker that reads a
/// poisoned entry BUGs (debug builds); a huge PMD read without its lock while it is split shows its
/// pages mapped twice at once (by the PMD and by the new PTEs), so a single mm that never forked would
/// report Shared_* memory. RCU is set to end a grace period at every freed table, so a table freed
/// under the walk is poisoned while the walk may still be inside it.
/// </remarks>
[NonParallelizable]
public class SmapsRollupRaceTests
{
    private const ulong Window = 2UL << 20;
    private const int Windows = 4;
    private const ulong Region = Windows * Window;
    private const int Faulters = 2;

    [TestCase(false, TestName = "Smaps_rollup_never_reads_a_pte_table_that_a_concurrent_dontneed_reclaims")]
    [TestCase(true, TestName = "Smaps_rollup_never_reads_a_thp_that_a_concurrent_dontneed_splits_or_zaps")]
    [CancelAfter(60_000)]
    public void Smaps_rollup_races_faults_and_dontneed_of_whole_windows(bool thp)
    {
        double seconds = Environment.GetEnvironmentVariable("CI") is null ? 3 : 4;
        using var lease = new KernelLease(new Kernel(new KernelConfig
        {
            MemoryBytes = 64UL << 20,
            Cpus = Faulters + 2,
            DebugVm = true,
            PtReclaim = PtReclaimMode.Sync,
        }));
        Kernel kernel = lease.Kernel;
        kernel.Machine.Rcu.BatchThreshold = 1;
        Process p = kernel.CreateProcess();
        ulong r = p.Mmap(Region);
        Assert.That(r % Window, Is.Zero, "a 2 MiB multiple is mapped 2 MiB aligned (thp_get_unmapped_area)");
        if (thp) Assert.That(p.Madvise(r, Region, Advice.HugePage), Is.EqualTo(Errno.Success));

        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long renders = 0, cycles = 0;
        bool Running() => DateTime.UtcNow < deadline && errors.IsEmpty;

        // multi-fault's loop: one byte to each of the 512 pages of a window, then MADV_DONTNEED of the
        // window. With THP the window is first zapped all but its first page (the huge PMD is split),
        // then whole.
        void Faulter(global::NativeMmu.Cpus.Cpu cpu, int id)
        {
            while (Running())
            {
                for (int w = id; w < Windows && Running(); w += Faulters)
                {
                    ulong window = r + (ulong)w * Window;
                    for (ulong a = window; a < window + Window; a += TestSupport.PageSize) cpu.Store<byte>(a, 1);
                    if (thp && p.Madvise(window + TestSupport.PageSize, Window - TestSupport.PageSize, Advice.DontNeed) != Errno.Success)
                        errors.Enqueue("MADV_DONTNEED of all but the first page failed");
                    if (p.Madvise(window, Window, Advice.DontNeed) != Errno.Success) errors.Enqueue("MADV_DONTNEED failed");
                    Interlocked.Increment(ref cycles);
                }
            }
        }

        void Reader(global::NativeMmu.Cpus.Cpu cpu)
        {
            cpu.SwitchMm(null); // a reader of /proc/PID is another task: the walk runs on no CPU of the mm
            try
            {
                while (Running())
                {
                    string text = p.ProcSmapsRollup();
                    long rss = Kb(text, "Rss"), shared = Kb(text, "Shared_Clean") + Kb(text, "Shared_Dirty"), huge = Kb(text, "AnonHugePages");
                    if (rss > (long)(Region >> 10)) errors.Enqueue($"Rss {rss} kB in a {Region >> 10} kB mapping");
                    if (shared != 0) errors.Enqueue($"Shared {shared} kB in an mm that never forked:\n{text}");
                    if (huge > rss) errors.Enqueue($"AnonHugePages {huge} kB above Rss {rss} kB");
                    Interlocked.Increment(ref renders);
                }
            }
            catch (Exception ex)
            {
                errors.Enqueue($"smaps_rollup threw: {ex.Message}");
                throw;
            }
        }

        var bodies = new List<Action<global::NativeMmu.Cpus.Cpu>> { Reader };
        for (int i = 0; i < Faulters; i++)
        {
            int id = i;
            bodies.Add(c => Faulter(c, id));
        }
        Exception? thrown = null;
        try
        {
            lease.RunOnCpus(p, [.. bodies]);
        }
        catch (Exception ex) when (ex is not AssertionException)
        {
            thrown = ex;
        }
        Assert.That(errors, Is.Empty, () => string.Join("\n", errors.Take(3)) + (thrown is null ? "" : "\n" + thrown));
        Assert.That(thrown, Is.Null, "no thread threw");
        Assert.That(kernel.Machine.TlbConflicts, Is.Empty, () => string.Join("\n", kernel.Machine.TlbConflicts.Take(5)));
        Assert.That(renders, Is.GreaterThan(10), "smaps_rollup was rendered throughout");
        Assert.That(cycles, Is.GreaterThan(10), "the faulters faulted and zapped windows throughout");
        Assert.That(kernel.VmstatValue(thp ? "thp_split_pmd" : "pgfault"), Is.GreaterThan(0), thp ? "huge PMDs were split under the walk" : "pages were faulted in");
        TestContext.Out.WriteLine($"{(thp ? "thp" : "pte")}: {renders} renders, {cycles} window cycles, {kernel.VmstatValue("thp_fault_alloc")} THPs, {kernel.VmstatValue("thp_split_pmd")} PMD splits");
    }

    private static long Kb(string smaps, string field)
    {
        Match m = Regex.Match(smaps, $@"^{field}:\s+(\d+) kB$", RegexOptions.Multiline);
        return m.Success ? long.Parse(m.Groups[1].Value) : throw new FormatException($"smaps_rollup has no {field} line:\n{smaps}");
    }
}
