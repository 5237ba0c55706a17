using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// Faulting writers, a MADV_DONTNEED thread and a fork-and-exit thread on one mm, with the invariant
/// checks on (freed tables poisoned, the walker checking, the TLB checker) and a checker that recounts
/// the page tables under mmap_lock. Bounded in time; fixed seeds. With THP the region is MADV_HUGEPAGE:
/// writes fault in whole PMDs, and the zapper alternates whole-PMD zaps with partial ones that split.
/// </summary>
[NonParallelizable]
public class PtReclaimStressTests
{
    private const ulong Window = 2UL << 20;
    private const ulong Region = 8 * Window;
    private const int Pages = (int)(Region / 4096);

    [TestCase(PtReclaimMode.Off, false)]
    [TestCase(PtReclaimMode.Refcount, false)]
    [TestCase(PtReclaimMode.Sync, false)]
    [TestCase(PtReclaimMode.Off, true)]
    [TestCase(PtReclaimMode.Refcount, true)]
    [TestCase(PtReclaimMode.Sync, true)]
    [TestCase(PtReclaimMode.Sync, false, CowPteMode.Lazy)]
    [TestCase(PtReclaimMode.Sync, false, CowPteMode.Eager)]
    [TestCase(PtReclaimMode.Refcount, false, CowPteMode.Eager)]
    [TestCase(PtReclaimMode.Sync, true, CowPteMode.Eager)]
    [CancelAfter(60_000)]
    public void Writers_dontneed_and_fork_race_without_a_violation(PtReclaimMode mode, bool thp, CowPteMode cowPte = CowPteMode.Off)
    {
        double seconds = Environment.GetEnvironmentVariable("CI") is null ? 3 : 4;
        using var kernel = new Kernel(new KernelConfig
        {
            MemoryBytes = 128UL << 20, Cpus = 8, DebugVm = true, PtReclaim = mode, CowPte = cowPte, CowPteAllProcesses = cowPte != CowPteMode.Off,
        });
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        ulong r = p.Mmap(Region);
        if (thp) Assert.That(p.Madvise(r, Region, Advice.HugePage), Is.EqualTo(Errno.Success));
        var deadline = DateTime.UtcNow.AddSeconds(seconds);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        long reads = 0, zaps = 0, forks = 0, recounts = 0;

        void Writer(global::NativeMmu.Cpus.Cpu cpu, int id)
        {
            var rng = new Random(1000 + id);
            var last = new long[Pages];
            long next = ((long)id << 40) + 1;
            while (DateTime.UtcNow < deadline && errors.IsEmpty)
            {
                int page = rng.Next(Pages / 2) * 2 + id; // writers own alternate pages
                ulong va = r + (ulong)page * 4096;
                long seen = cpu.Load<long>(va);
                if (seen != last[page] && seen != 0) errors.Enqueue($"writer {id}: page {page} read {seen:x}, last written {last[page]:x}");
                long v = next++;
                cpu.Store(va, v);
                last[page] = v;
                seen = cpu.Load<long>(va);
                if (seen != v && seen != 0) errors.Enqueue($"writer {id}: page {page} read {seen:x} right after writing {v:x}");
                if (seen == 0) last[page] = 0;
                Interlocked.Increment(ref reads);
            }
        }

        void Zapper(global::NativeMmu.Cpus.Cpu cpu)
        {
            var rng = new Random(7);
            while (DateTime.UtcNow < deadline && errors.IsEmpty)
            {
                ulong w = r + (ulong)rng.Next((int)(Region / Window)) * Window;
                ulong len = Window;
                if (thp && rng.Next(2) == 0)
                {
                    // A partial zap: the huge PMD (if any) is split, the folio queued for deferred split.
                    int first = rng.Next(512), n = 1 + rng.Next(512 - first);
                    w += (ulong)first * 4096;
                    len = (ulong)n * 4096;
                }
                if (p.Madvise(w, len, Advice.DontNeed) != Errno.Success) errors.Enqueue("madvise failed");
                Interlocked.Increment(ref zaps);
            }
        }

        void Forker(global::NativeMmu.Cpus.Cpu cpu)
        {
            var rng = new Random(11);
            while (DateTime.UtcNow < deadline && errors.IsEmpty)
            {
                Process child = p.Fork();
                child.Enter(cpu);
                for (int i = 0; i < 8; i++)
                {
                    ulong va = r + (ulong)rng.Next(Pages) * 4096;
                    cpu.Store(va, cpu.Load<long>(va) + 1); // COW in the child; the parent must not see it
                }
                p.Enter(cpu);
                child.Exit();
                Interlocked.Increment(ref forks);
            }
        }

        void Recounter(global::NativeMmu.Cpus.Cpu cpu)
        {
            while (DateTime.UtcNow < deadline && errors.IsEmpty)
            {
                p.Mm.MmapLock.WriteLock();
                try
                {
                    long counted = PgTable.RecountPgtablesBytes(p.Mm), accounted = p.Mm.PgtablesBytes;
                    if (counted != accounted) errors.Enqueue($"VmPTE {accounted >> 10} kB, but the tables add up to {counted >> 10} kB");
                }
                finally
                {
                    p.Mm.MmapLock.WriteUnlock();
                }
                Interlocked.Increment(ref recounts);
                Thread.Yield();
            }
        }

        bool finished = TestSupport.RunOnCpus(kernel, p, c => Writer(c, 0), c => Writer(c, 1), Zapper, Forker, Recounter);
        Assert.That(finished, Is.True, "every thread finished in time");
        Assert.That(errors, Is.Empty, () => string.Join("\n", errors.Take(5)));
        Assert.That(kernel.Machine.TlbConflicts, Is.Empty, () => string.Join("\n", kernel.Machine.TlbConflicts.Take(5)));
        Assert.That(reads, Is.GreaterThan(1000), "the writers ran");
        Assert.That(zaps, Is.GreaterThan(10), "the zapper ran");
        Assert.That(forks, Is.GreaterThan(2), "the forker ran");
        Assert.That(recounts, Is.GreaterThan(2), "the recounter ran");
        TestContext.Out.WriteLine($"{mode}{(thp ? " thp" : "")} cow_pte {cowPte} (shared {kernel.VmstatValue("cow_pte_share")}, copied {kernel.VmstatValue("cow_pte_break_copy")}, reused {kernel.VmstatValue("cow_pte_break_reuse")}, dropped {kernel.VmstatValue("cow_pte_drop")}): {reads} checked writes, {zaps} zaps, {forks} forks, {recounts} recounts, {kernel.VmstatValue("pgfault")} faults, {kernel.VmstatValue("thp_fault_alloc")} THPs, {kernel.VmstatValue("thp_split_pmd")} PMD splits");
        if (thp) Assert.That(kernel.VmstatValue("thp_fault_alloc"), Is.GreaterThan(0), "THPs were faulted in");

        Assert.That(p.Munmap(r, Region), Is.EqualTo(Errno.Success));
        p.Exit();
        Assert.That(kernel.InvariantViolations, Is.Empty);
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame returned after munmap and exit");
    }
}
