using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>fork for small anonymous pages: copy-on-write in both directions.</summary>
public class ForkTests
{
    [TestCase(PtReclaimMode.Off, CowPteMode.Off)]
    [TestCase(PtReclaimMode.Refcount, CowPteMode.Off)]
    [TestCase(PtReclaimMode.Sync, CowPteMode.Off)]
    [TestCase(PtReclaimMode.Sync, CowPteMode.Lazy)]
    [TestCase(PtReclaimMode.Sync, CowPteMode.Eager)]
    [TestCase(PtReclaimMode.Refcount, CowPteMode.Lazy)]
    [TestCase(PtReclaimMode.Refcount, CowPteMode.Eager)]
    public void Parent_and_child_never_see_each_others_writes_after_fork(PtReclaimMode mode, CowPteMode cowPte)
    {
        using var kernel = new Kernel(new KernelConfig
        {
            MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = mode, CowPte = cowPte, CowPteAllProcesses = cowPte != CowPteMode.Off,
        });
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process parent = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        parent.Enter(cpu);
        // 1 MiB at the start of a 2 MiB-aligned 4 MiB mapping: its table lies wholly inside the VMA, so
        // Lazy shares it too.
        ulong a = parent.Mmap(4UL << 20);
        a = (a + TestSupport.PmdSize - 1) & ~(TestSupport.PmdSize - 1);
        for (ulong off = 0; off < (1UL << 20); off += 4096) cpu.Store<long>(a + off, (long)off + 1);
        long pgreuse0 = kernel.VmstatValue("pgreuse");

        Process child = parent.Fork();
        // A shared table is charged to the parent alone, as the COW PTE series reports the child's VmRSS.
        Assert.That(child.Mm.GetMmCounter(MmCounter.AnonPages), Is.EqualTo(cowPte == CowPteMode.Off ? 256 : 0), "the child maps the same 256 pages");
        Assert.That(kernel.VmstatValue("cow_pte_share"), Is.EqualTo(cowPte == CowPteMode.Off ? 0 : 1), "the table is shared with copy-on-write PTE tables");
        Assert.That(kernel.CheckInvariants(), Is.Empty, "the audit after fork");

        child.Enter(cpu);
        Assert.That(cpu.Load<long>(a + 4096), Is.EqualTo(4097), "the child reads the parent's data");
        cpu.Store<long>(a + 4096, -1);                       // COW in the child
        parent.Enter(cpu);
        Assert.That(cpu.Load<long>(a + 4096), Is.EqualTo(4097), "the parent does not see the child's write");
        cpu.Store<long>(a + 8192, -2);                       // COW in the parent: the page is still shared
        child.Enter(cpu);
        Assert.That(cpu.Load<long>(a + 8192), Is.EqualTo(8193), "the child does not see the parent's write");

        parent.Enter(cpu);
        child.Exit();
        cpu.Store<long>(a + 12288, -3);                      // the child is gone: the parent reuses in place
        Assert.That(kernel.VmstatValue("pgreuse") - pgreuse0, Is.EqualTo(1), "one write after the child exited was a reuse (wp_page_reuse)");
        Assert.That(cpu.Load<long>(a + 12288), Is.EqualTo(-3));
        parent.Exit();
        Assert.That(kernel.InvariantViolations, Is.Empty);
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame came back after both exits");
    }

    [Test]
    public void The_zero_page_stays_shared_and_wipeonfork_and_dontfork_apply_to_the_child()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true });
        Process parent = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        parent.Enter(cpu);
        ulong read = parent.Mmap(64 << 10);
        ulong wipe = parent.Mmap(64 << 10);
        ulong gone = parent.Mmap(64 << 10);
        Assert.That(cpu.Load<long>(read), Is.Zero);          // zero page
        cpu.Store<long>(wipe, 5);
        cpu.Store<long>(gone, 6);
        Assert.That(parent.Madvise(wipe, 64 << 10, Advice.WipeOnFork), Is.EqualTo(Errno.Success));
        Assert.That(parent.Madvise(gone, 64 << 10, Advice.DontFork), Is.EqualTo(Errno.Success));
        Process child = parent.Fork();
        child.Enter(cpu);
        Assert.That(TestSupport.PteOf(child, read)!.Value & 0x000F_FFFF_FFFF_F000, Is.EqualTo(kernel.Machine.ZeroPfn << 12), "the child maps the same zero page");
        Assert.That(cpu.Load<long>(wipe), Is.Zero, "MADV_WIPEONFORK: the child gets zero memory");
        var segv = Assert.Throws<global::NativeMmu.Cpus.SegmentationFault>(() => cpu.Load<long>(gone));
        Assert.That(segv!.Code, Is.EqualTo(global::NativeMmu.Cpus.SegvCode.MapErr), "MADV_DONTFORK: the child has no mapping");
        cpu.Store<long>(read, 9);                            // wp_page_copy from the zero page
        parent.Enter(cpu);
        Assert.That(cpu.Load<long>(read), Is.Zero);
        Assert.That(cpu.Load<long>(wipe), Is.EqualTo(5));
        child.Exit();
        parent.Exit();
    }
}

public class ExitedProcessTests
{
    [Test]
    public void Status_of_an_exited_process_is_refused_rather_than_read_from_freed_counters()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 2 });
        Process p = kernel.CreateProcess();
        p.Exit();
        Assert.Throws<InvalidOperationException>(() => p.ProcStatus());
        Assert.Throws<ObjectDisposedException>(() => p.Mm.GetMmRss());
    }
}
