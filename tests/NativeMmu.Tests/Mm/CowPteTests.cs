using NativeMmu.Cpus;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// Copy-on-write PTE tables at fork, in both accounting designs: what fork shares, what the break does,
/// how VmRSS and VmPTE are charged, and the invariant mode's rules, with the invariant checks on.
/// </summary>
[TestFixture(CowPteMode.Lazy)]
[TestFixture(CowPteMode.Eager)]
public class CowPteTests(CowPteMode mode)
{
    private const ulong Pmd = TestSupport.PmdSize, Page = TestSupport.PageSize;
    /// <summary>A 2 MiB aligned address in the middle of the user half, clear of mmap's own placements.</summary>
    private const ulong Base = 0x4000_0000;

    private Kernel _kernel = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;
    private long _free0;

    private Kernel Boot(bool allProcesses = true) => new(new KernelConfig
    {
        MemoryBytes = 64UL << 20,
        Cpus = 4,
        DebugVm = true,
        CowPte = mode,
        CowPteAllProcesses = allProcesses,
    });

    [SetUp]
    public void SetUp()
    {
        _kernel = Boot();
        _free0 = TestSupport.SettledFreeFrames(_kernel);
        _cpu = _kernel.AttachCpu();
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            _cpu.SwitchMm(null);
            foreach (string v in _kernel.InvariantViolations) TestContext.Out.WriteLine(v);
            Assert.That(_kernel.CheckInvariants(), Is.Empty, "the audit finds nothing at the end");
        }
        finally
        {
            _cpu.Dispose();
            _kernel.Dispose();
        }
    }

    /// <summary>A parent with [Base, Base + size) mapped and every page written with its offset + seed.</summary>
    private Process Populated(ulong size, long seed = 1)
    {
        Process p = _kernel.CreateProcess("parent");
        TestSupport.MapAt(p, Base, size);
        p.Enter(_cpu);
        for (ulong off = 0; off < size; off += Page) _cpu.Store<long>(Base + off, (long)off + seed);
        return p;
    }

    private bool Holds(Process p, ulong size, Func<ulong, long> expected)
    {
        p.Enter(_cpu);
        for (ulong off = 0; off < size; off += Page)
            if (_cpu.Load<long>(Base + off) != expected(off)) return false;
        return true;
    }

    private static unsafe bool Shared(Process p, ulong address)
    {
        NativeMmu.Arch.X86.Pmd* pmd = PgTable.WalkToPmd(p.Mm, address);
        return pmd != null && PgTable.IsCowTable(PgTable.Get(pmd));
    }

    private long Vmstat(string name) => _kernel.VmstatValue(name);

    private void AssertClean(string when)
    {
        Assert.That(_kernel.CheckInvariants(), Is.Empty, $"invariant audit {when}");
        Assert.That(_kernel.InvariantViolations, Is.Empty, $"no violation recorded {when}");
    }

    private void ExitAllAndCheckFrames(params Process[] ps)
    {
        _cpu.SwitchMm(null);
        foreach (Process p in ps) p.Exit();
        Assert.That(_kernel.InvariantViolations, Is.Empty, "no violation at exit");
        Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(_free0), "every frame came back");
    }

    [Test]
    public void Fork_shares_the_tables_and_neither_side_sees_the_others_writes()
    {
        Process parent = Populated(4 * Pmd);
        Process child = parent.Fork("child");
        Assert.That(Vmstat("cow_pte_share"), Is.EqualTo(4), "the four tables are shared");
        Assert.That(Shared(parent, Base) && Shared(child, Base), Is.True, "both PMDs write-protected");
        AssertClean("after fork");
        Assert.That(Holds(child, 4 * Pmd, off => (long)off + 1), Is.True, "the child reads the parent's data");

        child.Enter(_cpu);
        for (ulong off = 0; off < 4 * Pmd; off += Page) _cpu.Store<long>(Base + off, -(long)off);
        AssertClean("after the child's writes");
        Assert.That(Holds(parent, 4 * Pmd, off => (long)off + 1), Is.True, "the parent does not see the child's writes");
        parent.Enter(_cpu);
        for (ulong off = 0; off < 4 * Pmd; off += Page) _cpu.Store<long>(Base + off, 7);
        Assert.That(Holds(child, 4 * Pmd, off => -(long)off), Is.True, "the child does not see the parent's writes");
        Assert.That(Vmstat("cow_pte_break_copy"), Is.EqualTo(4), "the child's first write copied each table");
        Assert.That(Vmstat("cow_pte_break_reuse"), Is.EqualTo(4), "the parent, last holder, reused each");
        AssertClean("after both wrote");
        ExitAllAndCheckFrames(child, parent);
    }

    [Test]
    public void Prctl_fails_with_einval_without_the_feature_and_arms_the_next_fork_with_it()
    {
        using (var off = new Kernel(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 2 }))
            Assert.That(off.CreateProcess().Prctl(Prctl.PR_SET_COW_PTE), Is.EqualTo(Errno.EINVAL), "CONFIG_COW_PTE off");
        _cpu.Dispose();
        _kernel.Dispose();
        _kernel = Boot(allProcesses: false);
        _free0 = TestSupport.SettledFreeFrames(_kernel);
        _cpu = _kernel.AttachCpu();
        Process parent = Populated(2 * Pmd);
        Assert.That(parent.Prctl(12345), Is.EqualTo(Errno.EINVAL), "an unknown option");
        Process plain = parent.Fork("plain");
        Assert.That(Vmstat("cow_pte_share"), Is.EqualTo(0), "without the prctl fork copies");
        Assert.That(parent.Prctl(Prctl.PR_SET_COW_PTE, 1), Is.EqualTo(Errno.Success), "prctl_set_cow_pte takes the mm only: arg2 plays no part");
        Assert.That(parent.Mm.CowPteReady && !parent.Mm.CowPte, Is.True, "MMF_COW_PTE_READY, not yet MMF_COW_PTE");
        Process child = parent.Fork("child");
        Assert.That(Vmstat("cow_pte_share"), Is.EqualTo(2), "the next fork shares");
        Assert.That(parent.Mm.CowPte && !parent.Mm.CowPteReady && child.Mm.CowPte, Is.True, "READY became MMF_COW_PTE, inherited by the child");
        Assert.That(parent.Prctl(Prctl.PR_SET_COW_PTE), Is.EqualTo(Errno.EINVAL), "MMF_COW_PTE is set: prctl_set_cow_pte refuses");
        Assert.That(child.Prctl(Prctl.PR_SET_COW_PTE), Is.EqualTo(Errno.EINVAL), "inherited MMF_COW_PTE too");
        Assert.That(parent.Mm.CowPteReady || child.Mm.CowPteReady, Is.False);
        AssertClean("after the forks");
        ExitAllAndCheckFrames(plain, child, parent);
    }

    [Test]
    public void The_child_is_charged_neither_the_shared_tables_nor_their_pages_until_it_owns_one()
    {
        Process parent = Populated(4 * Pmd);
        long parentPte = TestSupport.StatusKb(parent, "VmPTE"), parentRss = TestSupport.StatusKb(parent, "VmRSS");
        Process child = parent.Fork("child");
        // One PUD table and one PMD table: the four PTE tables are the parent's.
        Assert.That(TestSupport.StatusKb(child, "VmPTE"), Is.EqualTo(8), "child VmPTE");
        Assert.That(TestSupport.StatusKb(child, "VmRSS"), Is.EqualTo(0), "child VmRSS");
        Assert.That(TestSupport.StatusKb(parent, "VmPTE"), Is.EqualTo(parentPte), "parent VmPTE unchanged");
        Assert.That(TestSupport.StatusKb(parent, "VmRSS"), Is.EqualTo(parentRss), "parent VmRSS unchanged");

        child.Enter(_cpu);
        _cpu.Store<long>(Base, 5); // one table copied for the child
        Assert.That(TestSupport.StatusKb(child, "VmPTE"), Is.EqualTo(12), "the copy is the child's");
        Assert.That(TestSupport.StatusKb(child, "VmRSS"), Is.EqualTo(2048), "its 512 pages (the write's copy replaced one of them)");

        _cpu.SwitchMm(null);
        parent.Exit(); // the owner drops its references: the three tables left are charged to nobody
        Assert.That(TestSupport.StatusKb(child, "VmPTE"), Is.EqualTo(12));
        long reused = Vmstat("cow_pte_break_reuse");
        child.Enter(_cpu);
        _cpu.Store<long>(Base + Pmd, 5); // the last holder takes a table over
        Assert.That(Vmstat("cow_pte_break_reuse"), Is.EqualTo(reused + 1));
        Assert.That(TestSupport.StatusKb(child, "VmPTE"), Is.EqualTo(16), "the reused table is charged to its new owner");
        Assert.That(TestSupport.StatusKb(child, "VmRSS"), Is.EqualTo(2 * 2048), "with its pages");
        ExitAllAndCheckFrames(child);
    }

    [Test]
    public void A_second_fork_shares_a_table_already_shared_and_every_holder_breaks_it_in_turn()
    {
        Process parent = Populated(Pmd);
        Process a = parent.Fork("a");
        Process b = parent.Fork("b");
        Process c = a.Fork("c");
        Assert.That(Vmstat("cow_pte_share"), Is.EqualTo(3));
        AssertClean("after three forks");
        Process[] all = [parent, a, b, c];
        for (int i = 0; i < all.Length; i++)
        {
            all[i].Enter(_cpu);
            _cpu.Store<long>(Base + (ulong)i * Page, 100 + i);
            AssertClean($"after holder {i} wrote");
        }
        Assert.That(Vmstat("cow_pte_break_copy"), Is.EqualTo(3));
        Assert.That(Vmstat("cow_pte_break_reuse"), Is.EqualTo(1));
        for (int i = 0; i < all.Length; i++)
        {
            int me = i;
            Assert.That(Holds(all[i], Pmd, off => off == (ulong)me * Page ? 100 + me : (long)off + 1), Is.True, $"holder {i} sees only its own write");
        }
        ExitAllAndCheckFrames(c, b, a, parent);
    }

    [Test]
    public void Munmap_and_madvise_inside_a_shared_table_break_it_and_leave_the_other_side_whole()
    {
        Process parent = Populated(2 * Pmd);
        Process child = parent.Fork("child");
        Assert.That(child.Munmap(Base + 16 * Page, 16 * Page), Is.EqualTo(Errno.Success));
        Assert.That(child.Madvise(Base + Pmd + 8 * Page, 8 * Page, Advice.DontNeed), Is.EqualTo(Errno.Success));
        AssertClean("after the child's munmap and madvise");
        Assert.That(Holds(parent, 2 * Pmd, off => (long)off + 1), Is.True, "the parent keeps all its pages");
        Assert.That(Holds(child, 16 * Page, off => (long)off + 1), Is.True);
        child.Enter(_cpu);
        Assert.That(_cpu.Load<long>(Base + Pmd + 8 * Page), Is.EqualTo(0), "the child's DONTNEED zapped its own copy");
        // A zap over a whole shared table only drops the child's reference.
        long drops = Vmstat("cow_pte_drop");
        Assert.That(parent.Fork("again") is var again && again.Madvise(Base, 2 * Pmd, Advice.DontNeed) == Errno.Success, Is.True);
        Assert.That(Vmstat("cow_pte_drop"), Is.GreaterThan(drops), "whole tables dropped, not copied");
        Assert.That(Holds(parent, 2 * Pmd, off => (long)off + 1), Is.True, "the parent's entries are untouched");
        AssertClean("after the drop");
        ExitAllAndCheckFrames(again, child, parent);
    }

    [Test]
    public void Mprotect_of_a_shared_range_breaks_it_first_and_keeps_pages_shared_copy_on_write()
    {
        Process parent = Populated(2 * Pmd);
        Process child = parent.Fork("child");
        Assert.That(child.Mprotect(Base, 2 * Pmd, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(child.Mprotect(Base, 2 * Pmd, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Assert.That(Shared(child, Base), Is.False, "mprotect made the child's tables its own");
        AssertClean("after mprotect");
        parent.Enter(_cpu);
        _cpu.Store<long>(Base, 99);
        Assert.That(Holds(child, 2 * Pmd, off => (long)off + 1), Is.True, "the page stayed copy-on-write for the child");
        ExitAllAndCheckFrames(child, parent);
    }

    [Test]
    public void A_pin_under_a_shared_table_makes_it_private_first()
    {
        Process parent = Populated(Pmd);
        Process child = parent.Fork("child");
        Assert.That(child.PinUserPages(Base, 4, Foll.Longterm, out UserPages? pins), Is.EqualTo(Errno.Success));
        Assert.That(Shared(child, Base), Is.False, "GUP faulted the table private");
        parent.Enter(_cpu);
        _cpu.Store<long>(Base, 42);
        child.Enter(_cpu);
        _cpu.Store<long>(Base + Page, 43);
        Assert.That(pins!.Read<long>(0), Is.EqualTo(1), "the parent's write is not seen through the child's pin");
        Assert.That(pins.Read<long>(1), Is.EqualTo(43), "the child's write is seen through its own pin");
        AssertClean("with the pins held");
        pins.Dispose();
        ExitAllAndCheckFrames(child, parent);
    }

    [Test]
    public void A_table_holding_a_page_that_may_be_pinned_is_copied_at_fork()
    {
        Process parent = Populated(2 * Pmd);
        Assert.That(parent.PinUserPages(Base, 1, Foll.Longterm | Foll.Write, out UserPages? pin), Is.EqualTo(Errno.Success));
        Process child = parent.Fork("child");
        Assert.That(Vmstat("cow_pte_share"), Is.EqualTo(1), "only the table without the pin is shared");
        Assert.That(Shared(child, Base), Is.False);
        Assert.That(Shared(child, Base + Pmd), Is.True);
        if (mode == CowPteMode.Eager) Assert.That(Vmstat("cow_pte_fallback"), Is.EqualTo(1), "recover_pte_range's fallback");
        pin!.Write(0, 0, 77L);
        Assert.That(Holds(child, Page, _ => 1), Is.True, "the child got its own copy of the pinned page");
        AssertClean("with the pin");
        pin.Dispose();
        ExitAllAndCheckFrames(child, parent);
    }

    [Test]
    public void A_walker_that_skips_its_break_is_reported_by_the_checksum_with_its_name()
    {
        Process parent = Populated(Pmd);
        Process child = parent.Fork("child");
        TestHooks.SkipCowPteBreak = (mm, _) => ReferenceEquals(mm, child.Mm);
        try
        {
            Assert.That(child.Mprotect(Base, Pmd, Prot.None), Is.EqualTo(Errno.Success));
        }
        finally
        {
            TestHooks.SkipCowPteBreak = null;
        }
        string[] found = [.. _kernel.InvariantViolations];
        Assert.That(found, Has.Some.Contains("ChangeProtectionWalk modified the shared PTE table"), "the walker is named");
        // The damage is real: the parent's PTEs became PROT_NONE under it. Repair for the teardown.
        Assert.That(child.Mprotect(Base, Pmd, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        _cpu.SwitchMm(null);
        child.Exit();
        parent.Exit();
        Assert.Pass($"reported: {found[0]}");
    }

    public enum BreakingOp { Mprotect, DontNeed, Munmap, WriteFault }

    [TestCase(BreakingOp.Mprotect)]
    [TestCase(BreakingOp.DontNeed)]
    [TestCase(BreakingOp.Munmap)]
    [TestCase(BreakingOp.WriteFault)]
    public void A_failed_allocation_at_every_table_allocation_of_a_break_leaves_both_sides_consistent(BreakingOp op)
    {
        Process parent = Populated(2 * Pmd);
        int failedRuns = 0;
        for (int n = 1; n <= 8; n++)
        {
            Process child = parent.Fork($"child{n}");
            string maps = child.ProcMaps();
            // A range that covers both shared tables in part: each op must copy both.
            ulong start = Base + Pmd - 4 * Page, len = 8 * Page;
            _kernel.Machine.FailPageTableAlloc(n);
            bool ok;
            child.Enter(_cpu);
            switch (op)
            {
                case BreakingOp.Mprotect: ok = child.Mprotect(start, len, Prot.Read) is var e1 && (e1 == Errno.Success || e1 == Errno.ENOMEM ? e1 == Errno.Success : throw new AssertionException($"mprotect: {e1}")); break;
                case BreakingOp.DontNeed: ok = child.Madvise(start, len, Advice.DontNeed) is var e2 && (e2 == Errno.Success || e2 == Errno.ENOMEM ? e2 == Errno.Success : throw new AssertionException($"madvise: {e2}")); break;
                case BreakingOp.Munmap: ok = child.Munmap(start, len) is var e3 && (e3 == Errno.Success || e3 == Errno.ENOMEM ? e3 == Errno.Success : throw new AssertionException($"munmap: {e3}")); break;
                default:
                    FaultResult r = _cpu.TryStore<long>(start, -1);
                    Assert.That(r, Is.EqualTo(FaultResult.Retry).Or.EqualTo(FaultResult.Oom), "the write fault completes or is VM_FAULT_OOM");
                    ok = r == FaultResult.Retry;
                    break;
            }
            bool injected = !_kernel.Machine.PageTableAllocFailurePending;
            _kernel.Machine.FailPageTableAlloc(0);
            AssertClean($"after {op} with allocation {n} failing");
            Assert.That(Holds(parent, 2 * Pmd, off => (long)off + 1), Is.True, "the parent's memory is untouched");
            if (!ok)
            {
                failedRuns++;
                Assert.That(injected, Is.True, "only the injected failure fails the call");
                Assert.That(child.ProcMaps(), Is.EqualTo(maps), "a failed call changed no VMA");
                Assert.That(Holds(child, 2 * Pmd, off => (long)off + 1), Is.True, "the child's memory is as fork left it");
            }
            _cpu.SwitchMm(null);
            child.Exit();
            if (!injected) break; // the call needed fewer than n allocations: every one has failed once
        }
        Assert.That(failedRuns, Is.EqualTo(op == BreakingOp.WriteFault ? 1 : 2), "each table allocation the call makes failed it once");
        ExitAllAndCheckFrames(parent);
    }

    [Test]
    public void Two_cpus_fault_one_shared_range_in_parent_and_child_while_a_third_breaks_it()
    {
        const ulong size = 4 * Pmd;
        const int pages = (int)(size / Page);
        Process parent = Populated(size);
        Process child = parent.Fork("child");
        _cpu.SwitchMm(null);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var go = new ManualResetEventSlim();
        void Writer(NativeMmu.Cpus.Cpu cpu, Process who, long tag)
        {
            who.Enter(cpu);
            go.Wait(TestSupport.HandshakeTimeout);
            var rng = new Random((int)tag);
            for (int i = 0; i < 3000; i++)
            {
                int page = rng.Next(pages);
                ulong va = Base + (ulong)page * Page;
                long seen = cpu.Load<long>(va);
                if (seen != (long)page * (long)Page + 1 && seen != tag + page) errors.Enqueue($"{who.Name}: page {page} read {seen:x}");
                cpu.Store(va, tag + page);
            }
        }
        void Breaker(NativeMmu.Cpus.Cpu cpu)
        {
            go.Set();
            for (int i = 0; i < 4; i++)
                if (parent.Madvise(Base + (ulong)i * Pmd, Pmd, Advice.PopulateWrite) != Errno.Success) errors.Enqueue("populate failed");
        }
        bool finished = TestSupport.RunOnCpus(_kernel, parent,
            c => Writer(c, parent, 1L << 40), c => Writer(c, child, 2L << 40), Breaker);
        Assert.That(finished, Is.True, "every thread finished in time");
        Assert.That(errors, Is.Empty, () => string.Join("\n", errors.Take(5)));
        Assert.That(_kernel.Machine.TlbConflicts, Is.Empty);
        AssertClean("after the race");
        Assert.That(Holds(parent, size, off => { long v = _cpu.Load<long>(Base + off); return v == (long)off + 1 || v == (1L << 40) + (long)(off / Page) ? v : long.MinValue; }), Is.True, "the parent holds only its own writes");
        Assert.That(Holds(child, size, off => { long v = _cpu.Load<long>(Base + off); return v == (long)off + 1 || v == (2L << 40) + (long)(off / Page) ? v : long.MinValue; }), Is.True, "the child holds only its own writes");
        ExitAllAndCheckFrames(child, parent);
    }

    /// <summary>
    /// With the invariant mode off, Lazy's fork raises a shared table's count without the table's lock
    /// (only the breakers' and zaps' decisions take it). Forks race children that break every table by
    /// writing into it and then exit: the count must still equal the PMDs pointing to each table, and
    /// every frame come back.
    /// </summary>
    [Test]
    public void Forks_race_children_breaking_and_exiting_the_tables_they_share_and_every_count_stays_exact()
    {
        const ulong size = 4 * Pmd;
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, CowPte = mode, CowPteAllProcesses = true });
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process parent = kernel.CreateProcess("parent");
        TestSupport.MapAt(parent, Base, size);
        var children = new System.Collections.Concurrent.BlockingCollection<Process>(boundedCapacity: 4);
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        const int forks = 150;
        void Forker(NativeMmu.Cpus.Cpu cpu)
        {
            for (ulong off = 0; off < size; off += Page) cpu.Store<long>(Base + off, (long)off + 1);
            for (int i = 0; i < forks; i++) children.Add(parent.Fork($"child-{i}"));
            children.CompleteAdding();
        }
        void Breaker(NativeMmu.Cpus.Cpu cpu, int parity)
        {
            foreach (Process child in children.GetConsumingEnumerable())
            {
                child.Enter(cpu);
                for (ulong t = 0; t < size / Pmd; t++)
                {
                    ulong va = Base + t * Pmd + (ulong)parity * Page;
                    if (cpu.Load<long>(va) != (long)(va - Base) + 1) errors.Enqueue($"{child.Name} read {va:x} wrong before writing it");
                    cpu.Store<long>(va, -1);
                }
                cpu.SwitchMm(null);
                child.Exit();
            }
        }
        bool finished = TestSupport.RunOnCpus(kernel, parent, Forker, c => Breaker(c, 0), c => Breaker(c, 1));
        Assert.That(finished, Is.True, "every thread finished in time");
        Assert.That(errors, Is.Empty, () => string.Join("\n", errors.Take(5)));
        Assert.That(kernel.CheckInvariants(), Is.Empty, "each shared table's count equals its holders, mapcounts equal their entries");
        using (NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu())
        {
            parent.Enter(cpu);
            for (ulong off = 0; off < size; off += Page)
                Assert.That(cpu.Load<long>(Base + off), Is.EqualTo((long)off + 1), $"the parent's page at +{off:x} is its own");
            cpu.SwitchMm(null);
        }
        parent.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame came back");
    }
}
