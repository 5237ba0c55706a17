using NativeMmu.Arch.X86;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>Empty PTE-table reclaim: the window between the PMD clear and the flush, RCU, and pte_refcount.</summary>
[NonParallelizable] // TestHooks are process-wide
public unsafe class PtReclaimTests
{
    private const ulong Window = 2UL << 20;

    [TearDown]
    public void ClearHooks() => TestHooks.AfterPmdCleared = null;

    /// <summary>
    /// CPU B holds a translation through PTE table T1. CPU A's MADV_DONTNEED reclaims T1 and is held between
    /// the PMD clear and its batched flush, while B faults on another page of the same 2 MiB: the fault
    /// installs table T2. Unless the kernel flushes before setting the PMD, B now has one address cached
    /// through T1 and the region mapped through T2 - the second situation the 2024 synchronous PT-reclaim series forbids.
    /// </summary>
    [TestCase(true, ExpectedResult = 0)]
    [TestCase(false, ExpectedResult = 1)]
    [CancelAfter(20_000)]
    public int A_fault_that_repopulates_a_reclaimed_PMD_before_the_flush_leaves_two_tables_in_one_TLB_unless_flushed_first(bool flushBeforeSet)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = PtReclaimMode.Sync, FlushTlbBeforeSetPmd = flushBeforeSet });
        Process p = kernel.CreateProcess();
        ulong w = p.Mmap(2 * Window);
        using var bReady = new ManualResetEventSlim();
        using var go = new ManualResetEventSlim();
        using var bDone = new ManualResetEventSlim();
        Exception? bFailure = null;
        var b = new Thread(() =>
        {
            try
            {
                using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
                p.Enter(cpu);
                cpu.Store<long>(w, 1);                      // table T1, and a TLB entry for w through it
                Assert.That(cpu.Load<long>(w), Is.EqualTo(1));
                bReady.Set();
                go.Wait();
                cpu.Store<long>(w + 8 * 4096, 2);           // faults: the PMD is clear, a new table goes in
                bDone.Set();
                go.Reset();
            }
            catch (Exception e)
            {
                bFailure = e;
                bDone.Set();
            }
        });
        b.Start();
        bReady.Wait();
        using (global::NativeMmu.Cpus.Cpu a = kernel.AttachCpu())
        {
            p.Enter(a);
            TestHooks.AfterPmdCleared = (cpu, mm, addr) =>
            {
                if (!ReferenceEquals(mm, p.Mm) || cpu != a) return;
                go.Set();        // let B fault while A's flush is still pending
                bDone.Wait();
            };
            Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
            TestHooks.AfterPmdCleared = null;
        }
        b.Join();
        Assert.That(bFailure, Is.Null, () => $"thread B failed: {bFailure}");
        return kernel.Machine.TlbConflicts.Count > 0 ? 1 : 0;
    }

    /// <summary>
    /// The flush before setting a PMD is owed only to the range whose reclaim has not flushed yet: while
    /// CPU A is held between the PMD clear and its flush, CPU B installing a table in the same 2 MiB
    /// flushes first, and installing one in another 2 MiB does not.
    /// </summary>
    [TestCase(0UL, ExpectedResult = true)]
    [TestCase(Window, ExpectedResult = false)]
    [CancelAfter(20_000)]
    public bool Only_a_fault_in_the_reclaimed_range_flushes_before_setting_its_PMD(ulong offset)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = PtReclaimMode.Sync });
        Process p = kernel.CreateProcess();
        ulong w = p.Mmap(2 * Window);
        using var go = new ManualResetEventSlim();
        using var bDone = new ManualResetEventSlim();
        long flushes = -1;
        Exception? bFailure = null;
        var b = new Thread(() =>
        {
            try
            {
                using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
                p.Enter(cpu);
                go.Wait();
                long before = kernel.VmstatValue("nr_tlb_remote_flush");
                cpu.Store<long>(w + offset + 8 * 4096, 2); // a PMD with no table: one is installed
                flushes = kernel.VmstatValue("nr_tlb_remote_flush") - before;
            }
            catch (Exception e)
            {
                bFailure = e;
            }
            finally
            {
                bDone.Set();
            }
        });
        b.Start();
        using (global::NativeMmu.Cpus.Cpu a = kernel.AttachCpu())
        {
            p.Enter(a);
            a.Store<long>(w, 1);
            TestHooks.AfterPmdCleared = (cpu, mm, addr) =>
            {
                if (!ReferenceEquals(mm, p.Mm) || cpu != a) return;
                go.Set();
                TestSupport.Await(bDone, "B's fault");
            };
            Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
            TestHooks.AfterPmdCleared = null;
        }
        b.Join();
        Assert.That(bFailure, Is.Null, () => $"thread B failed: {bFailure}");
        Assert.That(kernel.Machine.TlbConflicts, Is.Empty);
        return flushes > 0;
    }

    [Test]
    [CancelAfter(20_000)]
    public void A_table_reclaimed_while_a_lockless_walker_holds_it_is_freed_only_after_the_walker_leaves()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = PtReclaimMode.Sync });
        Process p = kernel.CreateProcess();
        ulong w = p.Mmap(2 * Window);
        ulong table;
        using var inside = new ManualResetEventSlim();
        using var leave = new ManualResetEventSlim();
        ulong seenDuring = 0;
        using global::NativeMmu.Cpus.Cpu a = kernel.AttachCpu();
        p.Enter(a);
        a.Store<long>(w, 7);
        table = PgTable.Get(PmdOf(p.Mm, w)).Pfn;
        var walker = new Thread(() =>
        {
            using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
            cpu.RcuReadLock();                                // pte_offset_map: a lockless look at T
            Pte* pte = PgTable.PteTable(kernel.Machine.Memory, table);
            inside.Set();
            leave.Wait();
            seenDuring = PgTable.Get(pte).Value;                    // still T's (zapped) entry, never poison
            cpu.RcuReadUnlock();
        });
        walker.Start();
        inside.Wait();
        Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(PgTable.Get(PmdOf(p.Mm, w)).None, Is.True, "the emptied table was reclaimed");
        var sync = Task.Run(() =>
        {
            using global::NativeMmu.Cpus.Cpu c = kernel.AttachCpu();
            kernel.Machine.Rcu.Barrier(c);
        });
        Assert.That(sync.Wait(300), Is.False, "the grace period cannot end while the walker is inside its read-side section");
        Assert.That(kernel.Machine.Rcu.Pending, Is.GreaterThan(0), "the table waits for the grace period");
        leave.Set();
        walker.Join();
        Assert.That(sync.Wait(10_000), Is.True, "the grace period ends once the walker leaves");
        Assert.That(seenDuring, Is.EqualTo(0UL), "inside its section the walker read the table's own (cleared) entry");
        Assert.That(*(ulong*)kernel.Machine.Memory.FrameAddress(table), Is.EqualTo(global::NativeMmu.Cpus.Cpu.FreedTablePoison).Or.EqualTo(0UL),
            "after the grace period the frame was freed (poisoned, or already handed out again zeroed)");
    }

    [Test]
    [CancelAfter(20_000)]
    public void A_freed_table_returns_to_the_cpu_that_queued_it_unless_it_stays_unclaimed_past_a_grace_period()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, PtReclaim = PtReclaimMode.Sync });
        var rcu = kernel.Machine.Rcu;
        Process p = kernel.CreateProcess();
        using global::NativeMmu.Cpus.Cpu a = kernel.AttachCpu();
        p.Enter(a);
        ulong w = p.Mmap(2 * Window);
        a.Store<long>(w, 1);
        Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(rcu.Pending, Is.EqualTo(1), "the reclaimed table waits for a grace period");

        void OnOtherCpu(Action<global::NativeMmu.Cpus.Cpu> body) => Task.Run(() =>
        {
            using global::NativeMmu.Cpus.Cpu b = kernel.AttachCpu();
            body(b);
        }).Wait();

        OnOtherCpu(b => rcu.Synchronize(b));
        Assert.That(rcu.Pending, Is.EqualTo(1), "the grace period is over, but the callback is A's to run");
        long pcp = kernel.Machine.Allocator.PcpPages(a.Id);
        rcu.Poll(a);
        Assert.That(rcu.Pending, Is.Zero);
        Assert.That(kernel.Machine.Allocator.PcpPages(a.Id), Is.EqualTo(pcp + 1), "the frame went to A's per-CPU list");

        a.Store<long>(w, 2);
        Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
        OnOtherCpu(b =>
        {
            rcu.Synchronize(b);
            Assert.That(rcu.Pending, Is.EqualTo(1));
            rcu.Synchronize(b); // a second grace period: A never came for it, so B runs it
            Assert.That(rcu.Pending, Is.Zero);
        });
        p.Exit();
    }

    /// <summary>
    /// Each grace period costs a process-wide barrier, so a CPU drives them only once it has a batch of
    /// callbacks queued: below the batch nothing starts, at the batch one grace period covers them all,
    /// and with no reader about they all run on that CPU at its next call_rcu.
    /// </summary>
    [Test]
    [CancelAfter(20_000)]
    public void A_cpu_starts_a_grace_period_only_for_a_batch_of_callbacks_and_one_covers_the_batch()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 2, PtReclaim = PtReclaimMode.Sync });
        var rcu = kernel.Machine.Rcu;
        using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
        long gps = rcu.CompletedGracePeriods;
        long free = kernel.Machine.Allocator.FreeFrames;
        void FreeOneTable()
        {
            ulong t = PgTable.AllocTable(cpu, kernel.Machine);
            PgTable.TableDtor(cpu, kernel.Machine, t); // as a reclaim does when it unlinks the table
            rcu.CallRcuFreeTable(cpu, t);
        }
        for (int i = 0; i < rcu.BatchThreshold - 1; i++) FreeOneTable();
        Assert.That(rcu.Pending, Is.EqualTo(rcu.BatchThreshold - 1), "below a batch, nothing is freed");
        Assert.That(rcu.CompletedGracePeriods, Is.EqualTo(gps), "and no grace period was started for them");
        FreeOneTable();   // the batch is full: a grace period starts
        FreeOneTable();   // nobody was inside a section: it has ended, and the batch runs
        Assert.That(rcu.CompletedGracePeriods, Is.EqualTo(gps + 1), "one grace period for the whole batch");
        Assert.That(rcu.Pending, Is.EqualTo(1), "only the callback queued after the start still waits");
        Assert.That(kernel.Machine.Allocator.FreeFrames, Is.EqualTo(free - 1), "every other frame is back");
        kernel.RcuBarrier();
        Assert.That(rcu.Pending, Is.Zero);
    }

    [Test]
    public void In_refcount_mode_a_table_is_freed_exactly_when_its_last_entry_or_walker_goes()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = PtReclaimMode.Refcount });
        Process p = kernel.CreateProcess();
        using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong w = p.Mmap(2 * Window);
        cpu.Store<long>(w, 1);
        cpu.Store<long>(w + 4096, 2);
        Pmd* pmd = PmdOf(p.Mm, w);
        ulong table = PgTable.Get(pmd).Pfn;
        Assert.That(Refcount(kernel, table), Is.EqualTo(2), "two present entries, no walker");

        ulong held = PgTable.PteTryGet(cpu, kernel.Machine, pmd);
        Assert.That(held, Is.EqualTo(table));
        long vmpte = p.Mm.PgtablesBytes;
        Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(Refcount(kernel, table), Is.EqualTo(1), "the entries are gone; our walker reference remains");
        Assert.That(PgTable.Get(pmd).Pfn, Is.EqualTo(table), "a table with a walker is not freed");
        Assert.That(p.Mm.PgtablesBytes, Is.EqualTo(vmpte));

        PgTable.PtePut(cpu, p.Mm, pmd, table, 1, w, null);
        Assert.That(PgTable.Get(pmd).None, Is.True, "the last put cleared the PMD");
        Assert.That(p.Mm.PgtablesBytes, Is.EqualTo(vmpte - 4096), "and VmPTE lost the table");

        cpu.Store<long>(w + 8192, 3);
        Assert.That(Refcount(kernel, PgTable.Get(pmd).Pfn), Is.EqualTo(1), "a new table for the next fault, one entry");
    }

    /// <summary>
    /// A table whose count reached zero stays in the PMD until its freer gets the PMD lock. A fault that
    /// reads that PMD must not take the table (pte_try_get fails from zero) nor install beside it: it waits
    /// for the PMD to clear and maps its page in a new table. The test holds the PMD lock to keep the freer
    /// in that window.
    /// </summary>
    [Test]
    [CancelAfter(20_000)]
    public void In_refcount_mode_a_fault_on_a_table_at_zero_waits_for_its_freer_and_maps_into_a_new_table()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = PtReclaimMode.Refcount });
        Process p = kernel.CreateProcess();
        ulong w = p.Mmap(2 * Window);
        Pmd* pmd;
        ulong table;
        using (global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            cpu.Store<long>(w, 1); // the upper tables exist from here on
            pmd = PmdOf(p.Mm, w);
            table = PgTable.PteTryGet(cpu, kernel.Machine, pmd);
            Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
            Assert.That(Refcount(kernel, table), Is.EqualTo(1), "only the walker reference is left");
        }
        long reclaimed = kernel.Machine.Counters.Sum(global::NativeMmu.Physical.VmEvent.PtReclaim);

        int* pml = PgTable.PmdLockptr(kernel.Machine, pmd);
        global::NativeMmu.Sync.Spin.Lock(pml);
        var freer = new Thread(() =>
        {
            using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
            p.Enter(cpu);
            PgTable.PtePut(cpu, p.Mm, pmd, table, 1, w, null); // reaches zero, then waits for the PMD lock
        });
        freer.Start();
        SpinWait.SpinUntil(() => Refcount(kernel, table) == 0, 10_000);
        Assert.That(Refcount(kernel, table), Is.EqualTo(0));
        Assert.That(PgTable.Get(pmd).Pfn, Is.EqualTo(table), "the dying table is still in the PMD");

        var faulter = new Thread(() =>
        {
            using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
            p.Enter(cpu);
            cpu.Store<long>(w + 8, 42);
        });
        faulter.Start();
        Assert.That(faulter.Join(200), Is.False, "the fault cannot complete while the table at zero is still installed");
        Assert.That(Refcount(kernel, table), Is.EqualTo(0), "and took no reference on it");
        global::NativeMmu.Sync.Spin.Unlock(pml);
        Assert.That(freer.Join(10_000) && faulter.Join(10_000), Is.True);

        Assert.That(kernel.Machine.Counters.Sum(global::NativeMmu.Physical.VmEvent.PtReclaim) - reclaimed, Is.EqualTo(1), "the freer reclaimed the old table");
        ulong now = PgTable.Get(pmd).Pfn;
        Assert.That(now, Is.Not.EqualTo(table), "the fault installed a new table");
        Assert.That(Refcount(kernel, now), Is.EqualTo(1), "holding one reference: the entry just mapped");
        using (global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            Assert.That(cpu.Load<long>(w + 8), Is.EqualTo(42));
            Assert.That(cpu.Load<long>(w), Is.EqualTo(0), "the page zapped before stays zero");
        }
    }

    [TestCase(PtReclaimMode.Off, 0)]
    [TestCase(PtReclaimMode.Sync, 1)]
    [TestCase(PtReclaimMode.Refcount, 1)]
    public void Madvise_dontneed_of_a_whole_table_reclaims_it_only_in_the_reclaim_modes(PtReclaimMode mode, int reclaimed)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 2, DebugVm = true, PtReclaim = mode });
        Process p = kernel.CreateProcess();
        using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong w = p.Mmap(4 * Window);
        for (ulong off = 0; off < 2 * Window; off += 4096) cpu.Store<byte>(w + off, 1);
        long before = p.Mm.PgtablesBytes;
        // One whole table plus half of the next: a partially zapped table is never reclaimed.
        Assert.That(p.Madvise(w, Window + Window / 2, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(before - p.Mm.PgtablesBytes, Is.EqualTo(reclaimed * 4096L));
        Assert.That(cpu.Load<byte>(w + Window + Window / 2), Is.EqualTo(1), "the untouched half keeps its data");
        p.Mm.MmapLock.WriteLock();
        try
        {
            Assert.That(PgTable.RecountPgtablesBytes(p.Mm), Is.EqualTo(p.Mm.PgtablesBytes), "VmPTE equals a recount of the tables");
        }
        finally
        {
            p.Mm.MmapLock.WriteUnlock();
        }
    }

    [Test]
    public void The_pt_reclaim_layout_accounts_every_table_with_reclaim_off()
    {
        // 50 GiB, THP-aligned, 25,600 windows touched: 25,600 PTE tables + one PMD table per GiB started
        // + the PUD table. The mapping starts 2 MiB-aligned, so 50 GiB spans 51 PUD entries unless
        // it is also 1 GiB-aligned: each spanned GiB has a PMD table.
        using var kernel = new Kernel(new KernelConfig { PtReclaim = PtReclaimMode.Off });
        Process p = kernel.CreateProcess();
        using global::NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        const ulong virt = 50UL << 30;
        Assert.That(p.Mmap(0, virt, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve, out ulong a), Is.EqualTo(Errno.Success));
        for (int i = 0; i < 25_600; i++)
        {
            ulong w = a + (ulong)i * Window;
            cpu.Store<byte>(w, 1);
            Assert.That(p.Madvise(w, Window, Advice.DontNeed), Is.EqualTo(Errno.Success));
        }
        ulong pmdTables = ((a + virt - 1) >> 30) - (a >> 30) + 1;
        ulong pudTables = ((a + virt - 1) >> 39) - (a >> 39) + 1;
        long expectedKb = (long)(25_600 + pmdTables + pudTables) * 4;
        Assert.That(p.Mm.PgtablesBytes >> 10, Is.EqualTo(expectedKb), $"VmPTE for {pmdTables} PMD and {pudTables} PUD tables");
        Assert.That(expectedKb, Is.EqualTo(102_400 + 4 * 51 + 4).Or.EqualTo(102_400 + 4 * 50 + 4),
            "102,604 kB (or 102,608 kB across a 512 GiB boundary): the seed's 102,640 kB less the rest of a real process");
    }

    private static Pmd* PmdOf(MmStruct mm, ulong addr)
    {
        Pgd* pgd = PgTable.PgdOffset(mm, addr);
        P4d* p4d = PgTable.P4dOffset(mm, pgd, addr);
        Pud* pud = PgTable.PudOffset(mm.Machine.Memory, PgTable.Get(p4d), addr);
        return PgTable.PmdOffset(mm.Machine.Memory, PgTable.Get(pud), addr);
    }

    private static int Refcount(Kernel k, ulong table) => k.Machine.Vmemmap.PfnToPage(table)->PteRefcount;
}
