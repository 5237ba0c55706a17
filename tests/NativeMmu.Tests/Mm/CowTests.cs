using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Mm;

/// <summary>The anonymous-memory backings of tools/testing/selftests/mm/cow.c that this kernel has.</summary>
public enum CowBacking
{
    BasePage,
    Mthp16K,
    Mthp32K,
    Mthp64K,
    Mthp128K,
    Mthp256K,
    Mthp512K,
    Mthp1M,
    /// <summary>A single PTE of a 64 KiB mTHP (the other 15 zapped with MADV_DONTNEED).</summary>
    SinglePteOfMthp,
    /// <summary>A 64 KiB mTHP of which only the first page is shared with the child (MADV_DONTFORK on the rest).</summary>
    PartiallySharedMthp,
    /// <summary>A PMD-mapped 2 MiB THP.</summary>
    PmdThp,
    /// <summary>A 2 MiB THP mapped by PTEs (one page mprotected read-only and back splits the PMD).</summary>
    PteMappedThp,
    /// <summary>A single PTE of a PTE-mapped THP (the rest zapped with MADV_DONTNEED).</summary>
    SinglePteOfThp,
    /// <summary>A 2 MiB THP of which only the first page is shared with the child (MADV_DONTFORK on the rest splits the PMD).</summary>
    PartiallySharedThp,
}

/// <summary>
/// The anonymous tests of tools/testing/selftests/mm/cow.c, one fixture per backing and write-fault
/// behaviour: after fork, neither side sees the other's writes, whatever GUP holds; mprotect does not
/// make a shared page writable; a read-only long-term pin follows what the process writes. The
/// invariant checks run after every step (fork and exit) and must report nothing.
/// </summary>
[TestFixtureSource(nameof(Fixtures))]
/// <remarks>
/// With copy-on-write PTE tables (Lazy and Eager, every process sharing at fork) each backing runs
/// again with the default write-fault behaviour, in a region whose 2 MiB table lies wholly inside the
/// VMA so that Lazy shares it too.
/// </remarks>
public class CowTests(CowBacking backing, LargeFolioWp wp, CowPteMode cowPte)
{
    private const ulong K64 = 64 << 10;

    public static IEnumerable<TestFixtureData> Fixtures()
    {
        foreach (CowBacking b in Enum.GetValues<CowBacking>())
        {
            foreach (CowPteMode c in new[] { CowPteMode.Lazy, CowPteMode.Eager })
                yield return new TestFixtureData(b, LargeFolioWp.ReuseSubpage, c);
            if (b == CowBacking.BasePage) { yield return new TestFixtureData(b, LargeFolioWp.ReuseSubpage, CowPteMode.Off); continue; }
            foreach (LargeFolioWp w in Enum.GetValues<LargeFolioWp>()) yield return new TestFixtureData(b, w, CowPteMode.Off);
        }
    }

    private Kernel _kernel = null!;
    private Process _parent = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;
    private long _free0;
    /// <summary>The region the test works on, and the size cow.c would use for it.</summary>
    private ulong _mem, _size;

    private static ulong FolioBytes(CowBacking b) => b switch
    {
        CowBacking.Mthp16K => 16 << 10,
        CowBacking.Mthp32K => 32 << 10,
        CowBacking.Mthp64K or CowBacking.SinglePteOfMthp or CowBacking.PartiallySharedMthp => K64,
        CowBacking.Mthp128K => 128 << 10,
        CowBacking.Mthp256K => 256 << 10,
        CowBacking.Mthp512K => 512 << 10,
        CowBacking.Mthp1M => 1 << 20,
        CowBacking.PmdThp or CowBacking.PteMappedThp or CowBacking.SinglePteOfThp or CowBacking.PartiallySharedThp => 2 << 20,
        _ => TestSupport.PageSize,
    };

    [SetUp]
    public void SetUp()
    {
        _kernel = new Kernel(new KernelConfig
        {
            MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, WpLargeFolio = wp, CowPte = cowPte, CowPteAllProcesses = cowPte != CowPteMode.Off,
        });
        _kernel.Machine.Thp.Enabled = ThpMode.Never;
        ulong folio = FolioBytes(backing);
        if (backing != CowBacking.BasePage) _kernel.Machine.Thp.SetSize(folio, ThpMode.Always); // hugepages-<size>kB/enabled
        _free0 = TestSupport.SettledFreeFrames(_kernel);
        _parent = _kernel.CreateProcess("cow");
        _cpu = _kernel.AttachCpu();
        _parent.Enter(_cpu);

        ulong align = cowPte == CowPteMode.Off ? folio : Math.Max(folio, TestSupport.PmdSize);
        ulong raw = _parent.Mmap(2 * align);
        _mem = (raw + align - 1) & ~(align - 1);
        _size = folio;
        for (ulong off = 0; off < _size; off += TestSupport.PageSize) _cpu.Store<long>(_mem + off, (long)off + 1);
        if (backing != CowBacking.BasePage)
            Assert.That(_kernel.Machine.Thp.Stat(Thp.OrderOfSize(folio), MthpStat.AnonFaultAlloc), Is.EqualTo(1), "one folio backs the region");
        if (backing is CowBacking.PteMappedThp or CowBacking.SinglePteOfThp)
        {
            // cow.c's THP_RUN_PTE: mapping one subpage read-only for a moment PTE-maps the THP.
            Assert.That(_parent.Mprotect(_mem + TestSupport.PageSize, TestSupport.PageSize, Prot.Read), Is.EqualTo(Errno.Success));
            Assert.That(_parent.Mprotect(_mem + TestSupport.PageSize, TestSupport.PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
            Assert.That(_kernel.VmstatValue("thp_split_pmd"), Is.EqualTo(1), "the PMD was split");
        }
        switch (backing)
        {
            case CowBacking.PmdThp:
                Assert.That(_kernel.VmstatValue("nr_anon_transparent_hugepages"), Is.EqualTo(1), "a PMD maps the THP");
                break;
            case CowBacking.SinglePteOfThp:
                Assert.That(_parent.Madvise(_mem + TestSupport.PageSize, _size - TestSupport.PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
                _size = TestSupport.PageSize;
                break;
            case CowBacking.PartiallySharedThp:
                Assert.That(_parent.Madvise(_mem + TestSupport.PageSize, _size - TestSupport.PageSize, Advice.DontFork), Is.EqualTo(Errno.Success));
                Assert.That(_kernel.VmstatValue("thp_split_pmd"), Is.EqualTo(1), "the VMA split split the PMD");
                _size = TestSupport.PageSize;
                break;
            case CowBacking.SinglePteOfMthp:
                Assert.That(_parent.Madvise(_mem + TestSupport.PageSize, _size - TestSupport.PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
                _size = TestSupport.PageSize;
                break;
            case CowBacking.PartiallySharedMthp:
                Assert.That(_parent.Madvise(_mem + TestSupport.PageSize, _size - TestSupport.PageSize, Advice.DontFork), Is.EqualTo(Errno.Success));
                _size = TestSupport.PageSize;
                break;
        }
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            if (!_parent.Exited)
            {
                _parent.Exit();
                Assert.That(_kernel.InvariantViolations, Is.Empty, "the invariant checks reported nothing");
                Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(_free0), "every frame came back");
            }
        }
        finally
        {
            _cpu.Dispose();
            _kernel.Dispose();
        }
    }

    private void Fill(Process p, long value)
    {
        p.Enter(_cpu);
        for (ulong off = 0; off < _size; off += TestSupport.PageSize) _cpu.Store<long>(_mem + off, value);
    }

    private bool Holds(Process p, Func<ulong, long> expected)
    {
        p.Enter(_cpu);
        for (ulong off = 0; off < _size; off += TestSupport.PageSize)
            if (_cpu.Load<long>(_mem + off) != expected(off)) return false;
        return true;
    }

    private void AssertNoViolations() => Assert.That(_kernel.CheckInvariants(), Is.Empty, "invariant checks");

    [Test]
    public void The_child_does_not_see_the_parents_writes()
    {
        Process child = _parent.Fork();
        AssertNoViolations();
        // A PMD-mapped THP is shared by its PMD; Eager copies a table across a VM_DONTCOPY VMA, Lazy one
        // mapping a large folio.
        bool tableShared = cowPte == CowPteMode.Eager
            ? backing is not (CowBacking.PmdThp or CowBacking.PartiallySharedMthp or CowBacking.PartiallySharedThp)
            : cowPte == CowPteMode.Lazy && backing == CowBacking.BasePage;
        Assert.That(_kernel.VmstatValue("cow_pte_share") > 0, Is.EqualTo(tableShared), "whether fork shared the PTE table");
        Fill(_parent, -1);
        Assert.That(Holds(child, off => (long)off + 1), Is.True, "the child still reads the data of fork time");
        AssertNoViolations();
        child.Exit();
        Assert.That(Holds(_parent, _ => -1), Is.True);
    }

    [Test]
    public void The_parent_does_not_see_the_childs_writes()
    {
        Process child = _parent.Fork();
        Fill(child, -2);
        Assert.That(Holds(_parent, off => (long)off + 1), Is.True, "the parent keeps its data");
        AssertNoViolations();
        child.Exit();
        Fill(_parent, -3);
        Assert.That(Holds(_parent, _ => -3), Is.True);
    }

    [Test]
    public void Mprotect_read_only_then_read_write_in_the_parent_does_not_make_a_shared_page_writable()
    {
        Process child = _parent.Fork();
        _parent.Enter(_cpu);
        Assert.That(_parent.Mprotect(_mem, _size, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(_parent.Mprotect(_mem, _size, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Fill(_parent, -4);
        Assert.That(Holds(child, off => (long)off + 1), Is.True, "the child never sees the parent's write");
        AssertNoViolations();
        child.Exit();
    }

    [Test]
    public void A_gup_reference_taken_in_the_child_before_the_parent_writes_still_reads_the_old_data()
    {
        // cow.c's vmsplice tests: the child takes a plain reference (FOLL_GET, as vmsplice does) and unmaps.
        Process child = _parent.Fork();
        int pages = (int)(_size / TestSupport.PageSize);
        Assert.That(child.GetUserPages(_mem, pages, Foll.None, out UserPages? refs), Is.EqualTo(Errno.Success));
        using (refs)
        {
            Assert.That(child.Munmap(_mem, _size), Is.EqualTo(Errno.Success));
            Fill(_parent, -5);
            for (int i = 0; i < pages; i++)
                Assert.That(refs!.Read<long>(i), Is.EqualTo((long)i * (long)TestSupport.PageSize + 1), $"page {i} through the child's reference");
            AssertNoViolations();
        }
        child.Exit();
    }

    [Test]
    public void A_read_only_longterm_pin_keeps_reading_what_the_process_writes_afterwards()
    {
        // cow.c's "R/O longterm GUP pin" after fork: the pin must unshare first, or the parent's next
        // write would COW away from the pinned page.
        Process child = _parent.Fork();
        int pages = (int)(_size / TestSupport.PageSize);
        Assert.That(_parent.PinUserPages(_mem, pages, Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            Fill(_parent, -6);
            for (int i = 0; i < pages; i++) Assert.That(pin!.Read<long>(i), Is.EqualTo(-6L), $"page {i} through the pin");
            Assert.That(Holds(child, off => (long)off + 1), Is.True, "the child is unaffected");
            AssertNoViolations();
        }
        child.Exit();
    }

    [Test]
    public void A_page_pinned_before_fork_is_copied_for_the_child_and_the_pin_stays_the_parents()
    {
        int pages = (int)(_size / TestSupport.PageSize);
        Assert.That(_parent.PinUserPages(_mem, pages, Foll.Longterm | Foll.Write, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            Process child = _parent.Fork();
            Fill(_parent, -7);
            for (int i = 0; i < pages; i++) Assert.That(pin!.Read<long>(i), Is.EqualTo(-7L), "the parent writes into its pinned pages");
            Assert.That(Holds(child, off => (long)off + 1), Is.True, "the child got copies at fork");
            AssertNoViolations();
            child.Exit();
        }
    }
}

/// <summary>cow.c's zero-page and reuse-rule tests that do not depend on the backing.</summary>
public class CowZeroPageAndReuseTests
{
    [Test]
    public void The_zero_page_stays_shared_across_a_write_to_another_mapping_of_it()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true });
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize), b = p.Mmap(TestSupport.PageSize);
        Assert.That(cpu.Load<long>(a) + cpu.Load<long>(b), Is.Zero);
        Process child = p.Fork();
        cpu.Store<long>(a, 9);
        ulong zero = kernel.Machine.ZeroPfn << 12;
        Assert.That(TestSupport.PteOf(p, b)!.Value & 0x000F_FFFF_FFFF_F000, Is.EqualTo(zero), "b still maps the zero page");
        child.Enter(cpu);
        Assert.That(cpu.Load<long>(a), Is.Zero, "the child reads zeroes (a VMA without anon_vma is not copied: vma_needs_copy)");
        Assert.That(TestSupport.PteOf(child, a)!.Value & 0x000F_FFFF_FFFF_F000, Is.EqualTo(zero), "the child maps the zero page too");
        Assert.That(kernel.CheckInvariants(), Is.Empty);
        child.Exit();
        p.Exit();
    }

    [Test]
    public void A_read_only_longterm_pin_of_the_zero_page_unshares_it_first()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true });
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        Assert.That(cpu.Load<long>(a), Is.Zero);
        Assert.That(p.PinUserPages(a, 1, Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            Assert.That(pin!.Pfn(0), Is.Not.EqualTo(kernel.Machine.ZeroPfn), "FAULT_FLAG_UNSHARE replaced the zero page with a private one");
            cpu.Store<long>(a, 11);
            Assert.That(pin.Read<long>(0), Is.EqualTo(11), "the pin follows the write");
        }
        p.Exit();
    }

    [Test]
    public void An_extra_gup_reference_on_one_subpage_prevents_reuse_of_the_large_folio()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, WpLargeFolio = LargeFolioWp.ReuseSubpage });
        kernel.Machine.Thp.Enabled = ThpMode.Never;
        kernel.Machine.Thp.SetSize(64 << 10, ThpMode.Always);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong raw = p.Mmap(128 << 10), a = (raw + (64 << 10) - 1) & ~((64UL << 10) - 1);
        for (ulong off = 0; off < (64 << 10); off += TestSupport.PageSize) cpu.Store<byte>(a + off, 1);
        p.Fork().Exit();
        p.Enter(cpu);
        Assert.That(p.GetUserPages(a + 5 * TestSupport.PageSize, 1, Foll.None, out UserPages? refs), Is.EqualTo(Errno.Success));
        using (refs)
        {
            long copies = kernel.Machine.Counters.Sum(VmEvent.FaultWpCopy);
            cpu.Store<byte>(a, 2);
            Assert.That(kernel.Machine.Counters.Sum(VmEvent.FaultWpCopy) - copies, Is.EqualTo(1), "refcount > mapcount: copied, not reused");
            Assert.That(refs!.Read<byte>(0), Is.EqualTo(1));
        }
        long reuse = kernel.VmstatValue("pgreuse");
        cpu.Store<byte>(a + TestSupport.PageSize, 2);
        Assert.That(kernel.VmstatValue("pgreuse") - reuse, Is.EqualTo(1), "with the reference gone the folio is reused again");
        p.Exit();
    }
}
