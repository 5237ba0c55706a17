using NativeMmu.Arch.X86;
using NativeMmu.Mm;
using NativeMmu.Physical;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// Anonymous mTHP: do_anonymous_page maps a whole large folio in one fault, zap unmaps it in one batch,
/// fork shares it page by page, and do_wp_page treats it as the configured kernel does (before 6.15,
/// 6.15+, or the whole-folio-reuse RFC). Partially mapped folios go on the deferred-split queue.
/// </summary>
[TestFixture(HvoMode.Off)]
[TestFixture(HvoMode.SharedTails)] // mTHP tails carrying compound_info masks of every order
public class MthpTests(HvoMode hvo)
{
    private const ulong K64 = 64 << 10;
    private const ulong M1 = 1 << 20;
    private const int Order64K = 4;

    private Kernel Boot(LargeFolioWp wp = LargeFolioWp.ReuseSubpage, PtReclaimMode pt = PtReclaimMode.Sync)
    {
        var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, WpLargeFolio = wp, PtReclaim = pt, Hvo = hvo });
        kernel.Machine.Thp.Enabled = ThpMode.Never;
        kernel.Machine.Thp.SetSize(K64, ThpMode.Always);
        return kernel;
    }

    /// <summary>1 MiB of private anonymous memory aligned to 64 KiB.</summary>
    private static ulong MapAligned(Process p, ulong size)
    {
        ulong raw = p.Mmap(size + K64);
        ulong a = (raw + K64 - 1) & ~(K64 - 1);
        if (a > raw) Assert.That(p.Munmap(raw, a - raw), Is.EqualTo(Errno.Success));
        ulong tail = raw + size + K64 - (a + size);
        if (tail > 0) Assert.That(p.Munmap(a + size, tail), Is.EqualTo(Errno.Success));
        return a;
    }

    private static long Sum(Kernel k, VmEvent e) => k.Machine.Counters.Sum(e);

    [Test]
    public void One_write_fault_maps_a_whole_64K_folio_with_sixteen_ptes()
    {
        using Kernel kernel = Boot();
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, M1);
        long faults0 = kernel.VmstatValue("pgfault");
        for (ulong off = 0; off < M1; off += PageSize) cpu.Store<byte>(a + off, 1);
        Assert.That(kernel.VmstatValue("pgfault") - faults0, Is.EqualTo(16), "one fault per 64 KiB folio");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.AnonFaultAlloc), Is.EqualTo(16));
        Assert.That(kernel.Machine.Thp.Read("hugepages-64kB/stats/nr_anon"), Is.EqualTo("16\n"));
        Assert.That(p.Mm.GetMmCounter(MmCounter.AnonPages), Is.EqualTo(256));
        ulong pfn0 = (TestSupport.PteOf(p, a)!.Value & PageTableBits.PtePfnMask) >> 12;
        for (int i = 0; i < 16; i++)
            Assert.That((TestSupport.PteOf(p, a + (ulong)i * PageSize)!.Value & PageTableBits.PtePfnMask) >> 12, Is.EqualTo(pfn0 + (ulong)i), "consecutive pages of one folio");

        Assert.That(p.Munmap(a, M1), Is.EqualTo(Errno.Success));
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.SplitDeferred), Is.Zero, "a folio unmapped whole is never partially mapped");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.NrAnon), Is.Zero);
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every folio came back");
    }

    [Test]
    public void A_range_that_is_not_all_none_falls_back_to_a_smaller_order()
    {
        using Kernel kernel = Boot();
        kernel.Machine.Thp.SetSize(16 << 10, ThpMode.Always);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, K64);
        Assert.That(cpu.Load<byte>(a + 5 * PageSize), Is.Zero); // the zero page in the second 16 KiB block
        cpu.Store<byte>(a, 1);
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.AnonFaultAlloc), Is.Zero, "64 KiB range is not all none");
        Assert.That(kernel.Machine.Thp.Stat(2, MthpStat.AnonFaultAlloc), Is.EqualTo(1), "the first 16 KiB block is");
        Assert.That(p.Mm.GetMmCounter(MmCounter.AnonPages), Is.EqualTo(4));
        p.Exit();
    }

    /// <summary>The seed's scenario: fill 1 MiB of 64 KiB folios, fork, child exits, write one int, then a byte per page.</summary>
    [TestCase(LargeFolioWp.ReuseWholeFolio, 1, 16, 0, 0)]
    [TestCase(LargeFolioWp.ReuseSubpage, 1, 256, 0, 0)]
    [TestCase(LargeFolioWp.Copy, 1, 256, 256, 16)]
    public void Write_faults_after_fork_and_child_exit_follow_the_configured_kernel(LargeFolioWp wp, int firstFaults, int faults, int copies, int splitDeferred)
    {
        using Kernel kernel = Boot(wp);
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, M1);
        for (ulong off = 0; off < M1; off += PageSize) cpu.Store<byte>(a + off, 7);
        Process child = p.Fork();
        child.Exit();
        p.Enter(cpu);
        long wp0 = Sum(kernel, VmEvent.FaultWpReuse) + Sum(kernel, VmEvent.FaultWpCopy);
        long copy0 = Sum(kernel, VmEvent.FaultWpCopy);
        cpu.Store<int>(a + 10, 42);
        Assert.That(Sum(kernel, VmEvent.FaultWpReuse) + Sum(kernel, VmEvent.FaultWpCopy) - wp0, Is.EqualTo(firstFaults));
        for (ulong off = 0; off < M1; off += PageSize) cpu.Store<byte>(a + off, 9);
        Assert.That(Sum(kernel, VmEvent.FaultWpReuse) + Sum(kernel, VmEvent.FaultWpCopy) - wp0, Is.EqualTo(faults), "wp faults");
        Assert.That(Sum(kernel, VmEvent.FaultWpCopy) - copy0, Is.EqualTo(copies), "copies");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.SplitDeferred), Is.EqualTo(splitDeferred), "split_deferred");
        Assert.That(cpu.Load<byte>(a + 5 * PageSize), Is.EqualTo(9), "the last byte written");
        Assert.That(cpu.Load<int>(a + 10), Is.EqualTo(42), "the int written first survived the copy or reuse");
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame came back");
    }

    [TestCase(LargeFolioWp.Copy)]
    [TestCase(LargeFolioWp.ReuseSubpage)]
    [TestCase(LargeFolioWp.ReuseWholeFolio)]
    public void Parent_and_child_never_see_each_others_writes_to_a_large_folio(LargeFolioWp wp)
    {
        using Kernel kernel = Boot(wp);
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, K64);
        for (ulong off = 0; off < K64; off += PageSize) cpu.Store<long>(a + off, (long)off + 1);
        Process child = p.Fork();
        cpu.Store<long>(a + PageSize, -1);                 // parent writes while the folio is shared
        child.Enter(cpu);
        Assert.That(cpu.Load<long>(a + PageSize), Is.EqualTo((long)PageSize + 1), "the child keeps the old data");
        cpu.Store<long>(a + 2 * PageSize, -2);
        p.Enter(cpu);
        Assert.That(cpu.Load<long>(a + 2 * PageSize), Is.EqualTo(2 * (long)PageSize + 1), "the parent does not see the child's write");
        Assert.That(cpu.Load<long>(a + PageSize), Is.EqualTo(-1));
        child.Exit();
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame came back");
    }

    [Test]
    public void A_large_folio_with_a_single_mapped_pte_is_copied_not_reused()
    {
        using Kernel kernel = Boot(LargeFolioWp.ReuseSubpage);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, K64);
        cpu.Store<byte>(a, 1);
        Assert.That(p.Madvise(a + PageSize, K64 - PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.SplitDeferred), Is.EqualTo(1), "15 of 16 pages unmapped: queued for split");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.NrAnonPartiallyMapped), Is.EqualTo(1));
        Process child = p.Fork();
        child.Exit();
        p.Enter(cpu);
        long copy0 = Sum(kernel, VmEvent.FaultWpCopy);
        cpu.Store<byte>(a, 2);
        Assert.That(Sum(kernel, VmEvent.FaultWpCopy) - copy0, Is.EqualTo(1), "folio_large_mapcount <= 1: copy so the folio can be freed");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.NrAnon), Is.Zero, "the old folio was freed");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.NrAnonPartiallyMapped), Is.Zero, "and left the queue");
        p.Exit();
    }

    [Test]
    public void SplitDeferred_splits_a_partially_mapped_folio_and_frees_its_unmapped_pages()
    {
        using Kernel kernel = Boot();
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, K64);
        for (ulong off = 0; off < K64; off += PageSize) cpu.Store<long>(a + off, (long)off + 3);
        Assert.That(p.Munmap(a + 4 * PageSize, 8 * PageSize), Is.EqualTo(Errno.Success));
        Assert.That(kernel.Machine.SplitQueue.Length, Is.EqualTo(1));
        long freeBefore = kernel.FreeFrames;
        Assert.That(kernel.SplitDeferred(), Is.EqualTo(1));
        Assert.That(kernel.FreeFrames - freeBefore, Is.EqualTo(8), "the 8 unmapped pages went back");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.Split), Is.EqualTo(1));
        Assert.That(kernel.Machine.SplitQueue.Length, Is.Zero);
        Assert.That(cpu.Load<long>(a + 2 * PageSize), Is.EqualTo(2 * (long)PageSize + 3), "the mapped pages keep their data");
        Assert.That(cpu.Load<long>(a + 13 * PageSize), Is.EqualTo(13 * (long)PageSize + 3));
        cpu.Store<long>(a + 13 * PageSize, 5);                 // now an order-0 exclusive page: written in place
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame came back");
    }

    [Test]
    public void Allocation_pressure_runs_the_deferred_split_shrinker_before_giving_up()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 2, DebugVm = true, Hvo = hvo });
        kernel.Machine.Thp.Enabled = ThpMode.Never;
        kernel.Machine.Thp.SetSize(K64, ThpMode.Always);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        const ulong stranded = 20UL << 20;
        ulong a = MapAligned(p, stranded);
        for (ulong off = 0; off < stranded; off += PageSize) cpu.Store<byte>(a + off, 1);
        for (ulong f = a; f < a + stranded; f += K64)      // keep one page of each folio mapped
            Assert.That(p.Madvise(f + PageSize, K64 - PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(kernel.Machine.SplitQueue.Length, Is.EqualTo(320));

        ulong more = p.Mmap(16UL << 20);
        Assert.That(p.Madvise(more, 16UL << 20, Advice.NoHugePage), Is.EqualTo(Errno.Success));
        for (ulong off = 0; off < (16UL << 20); off += PageSize)
            Assert.That(cpu.TryStore<byte>(more + off, 1), Is.EqualTo(NativeMmu.Cpus.FaultResult.Retry), $"write at +{off >> 10} KiB");
        Assert.That(kernel.Machine.Thp.Stat(Order64K, MthpStat.Split), Is.GreaterThan(0), "the shrinker split folios to make room");
        Assert.That(cpu.Load<byte>(a), Is.EqualTo(1), "the kept pages keep their data");
        p.Exit();
    }

    [TestCase(PtReclaimMode.Off)]
    [TestCase(PtReclaimMode.Refcount)]
    public void Large_folios_work_in_every_page_table_reclaim_mode(PtReclaimMode pt)
    {
        using Kernel kernel = Boot(LargeFolioWp.ReuseSubpage, pt);
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p, M1);
        for (ulong off = 0; off < M1; off += PageSize) cpu.Store<byte>(a + off, 1);
        Assert.That(p.Madvise(a, M1, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(p.Mm.GetMmCounter(MmCounter.AnonPages), Is.Zero);
        for (ulong off = 0; off < M1; off += PageSize) Assert.That(cpu.Load<byte>(a + off), Is.Zero);
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "every frame and table came back");
    }
}
