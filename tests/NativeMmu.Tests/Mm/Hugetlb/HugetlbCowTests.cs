using NativeMmu.Mm;
using static NativeMmu.Tests.Mm.Hugetlb.HugetlbSupport;

namespace NativeMmu.Tests.Mm.Hugetlb;

/// <summary>
/// The hugetlb rows of tools/testing/selftests/mm/cow.c (run_with_hugetlb for each detected size): the
/// anonymous test cases on one MAP_HUGETLB page populated with memset(1), with a second free huge page
/// ensured (the dummy mapping), so that COW and unsharing never run out. vmsplice is a FOLL_GET
/// reference (GetUserPages), the gup_test R/O long-term pin a FOLL_PIN|FOLL_LONGTERM one, an io_uring
/// fixed buffer a FOLL_WRITE|FOLL_PIN|FOLL_LONGTERM one; GUP-fast takes the same path here. The four
/// vmsplice rows are cow.c's expected failures for hugetlb ("harder to fix and nobody really cares"):
/// hugetlb_wp reuses a page whose only mapping is the writer's, whatever references GUP holds, so the
/// leak is asserted as Linux has it. The invariant checks run after each step and must report nothing.
/// </summary>
public abstract class HugetlbCowRows(ulong size, HvoMode hvo)
{
    private Kernel _k = null!;
    private Process _parent = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;
    private ulong _mem;
    private int _words;

    /// <summary>One kernel per fixture: a 1 GiB pool's memory is touched once, not once per test.</summary>
    [OneTimeSetUp]
    public void Boot() => _k = HugetlbSupport.Boot(size, 2, hvo);

    [OneTimeTearDown]
    public void ShutDown() => _k.Dispose();

    [SetUp]
    public void SetUp()
    {
        _parent = _k.CreateProcess("cow");
        _cpu = _k.AttachCpu();
        _parent.Enter(_cpu);
        _mem = MapHugetlb(_parent, size, size);
        Fill(_parent, 1); // memset(mem, 1, hugetlbsize)
        // "We need a total of two hugetlb pages to handle COW/unsharing properly."
        Assert.That(MmapHugetlb(_parent, size, size, out ulong dummy), Is.EqualTo(Errno.Success), "need more free huge pages");
        Assert.That(_parent.Munmap(dummy, size), Is.EqualTo(Errno.Success));
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            if (!_parent.Exited) _parent.Exit();
            Assert.That(_k.InvariantViolations, Is.Empty, "the invariant checks reported nothing");
            Assert.That(FreeHugepages(_k, size), Is.EqualTo(2), "both huge pages are back in the pool");
            Assert.That(HugetlbSupport.Hstate(_k, size).ResvHugepages, Is.Zero, "no reservation is left");
        }
        finally
        {
            _cpu.Dispose();
        }
    }

    /// <summary>One word per 4 KiB page stands for the page's bytes (a memset of the whole huge page would only be slower).</summary>
    private ulong Stride => 4096;
    private int Words => _words = (int)(size / Stride);

    private void Fill(Process p, long value)
    {
        p.Enter(_cpu);
        for (ulong off = 0; off < size; off += Stride) _cpu.Store<long>(_mem + off, value);
    }

    private bool Holds(Process p, long value)
    {
        p.Enter(_cpu);
        for (ulong off = 0; off < size; off += Stride) if (_cpu.Load<long>(_mem + off) != value) return false;
        return true;
    }

    private static bool RefsHold(UserPages refs, int words, long value)
    {
        for (int i = 0; i < words; i++) if (refs.Read<long>(i) != value) return false;
        return true;
    }

    private void AssertNoViolations() => Assert.That(_k.CheckInvariants(), Is.Empty, "invariant checks");

    private void CowInParent(bool doMprotect)
    {
        Process child = _parent.Fork();
        AssertNoViolations();
        if (doMprotect)
        {
            // "mprotect() optimizations might try avoiding write-faults by directly mapping pages writable."
            Assert.That(_parent.Mprotect(_mem, size, Prot.Read), Is.EqualTo(Errno.Success));
            Assert.That(_parent.Mprotect(_mem, size, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        }
        Fill(_parent, 0xff);
        Assert.That(Holds(child, 1), Is.True, "No leak from parent into child");
        AssertNoViolations();
        child.Exit();
    }

    protected void BasicCowAfterFork() => CowInParent(doMprotect: false);
    protected void BasicCowAfterForkWithMprotect() => CowInParent(doMprotect: true);

    private void VmspliceInChild(bool doMprotect)
    {
        Process child = _parent.Fork();
        Assert.That(child.GetUserPages(_mem, Words, Foll.None, out UserPages? refs), Is.EqualTo(Errno.Success), "vmsplice: a R/O GUP reference");
        using (refs)
        {
            Assert.That(child.Munmap(_mem, size), Is.EqualTo(Errno.Success), "unmap it from the child's page tables");
            if (doMprotect)
            {
                Assert.That(_parent.Mprotect(_mem, size, Prot.Read), Is.EqualTo(Errno.Success));
                Assert.That(_parent.Mprotect(_mem, size, Prot.ReadWrite), Is.EqualTo(Errno.Success));
            }
            Fill(_parent, 0xff);
            AssertNoViolations();
            // cow.c: ksft_test_result_xfail("Leak from parent into child") for hugetlb.
            Assert.That(RefsHold(refs!, Words, 0xff), Is.True,
                "expected failure, as in Linux: the parent's write reused the page (its only mapping), which the child's pipe still reads");
        }
        child.Exit();
    }

    protected void VmspliceInChild() => VmspliceInChild(doMprotect: false);
    protected void VmspliceInChildWithMprotect() => VmspliceInChild(doMprotect: true);

    protected void VmspliceInParent(bool beforeFork)
    {
        UserPages? refs = null;
        if (beforeFork) Assert.That(_parent.GetUserPages(_mem, Words, Foll.None, out refs), Is.EqualTo(Errno.Success));
        Process child = _parent.Fork();
        if (!beforeFork) Assert.That(_parent.GetUserPages(_mem, Words, Foll.None, out refs), Is.EqualTo(Errno.Success));
        using (refs)
        {
            Assert.That(_parent.Munmap(_mem, size), Is.EqualTo(Errno.Success));
            Fill(child, 0xff); // modify page content in the child
            AssertNoViolations();
            Assert.That(RefsHold(refs!, Words, 0xff), Is.True,
                "expected failure, as in Linux: the child's write reused the page its only mapping maps, which the parent's pipe reads");
        }
        child.Exit();
    }

    protected enum RoPin { Shared, PreviouslyShared, RoExclusive }

    protected void RoPinTest(RoPin test)
    {
        Process? child = null;
        if (test is RoPin.Shared or RoPin.PreviouslyShared)
        {
            child = _parent.Fork();
            if (test == RoPin.PreviouslyShared)
            {
                child.Exit(); // mapped R/O in the parent, no longer shared
                child = null;
            }
        }
        else
        {
            Assert.That(_parent.Mprotect(_mem, size, Prot.Read), Is.EqualTo(Errno.Success));
            Assert.That(_parent.Mprotect(_mem, size, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        }
        // "Take a R/O pin. This should trigger unsharing."
        Assert.That(_parent.PinUserPages(_mem, Words, Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success), "PIN_LONGTERM_TEST_START");
        using (pin)
        {
            Fill(_parent, 0xff);
            Assert.That(RefsHold(pin!, Words, 0xff), Is.True, "Longterm R/O pin is reliable");
            AssertNoViolations();
        }
        if (child is not null)
        {
            Assert.That(Holds(child, 1), Is.True, "the child kept the data of fork time");
            child.Exit();
        }
    }

    protected void RoMappingAnIouringFixedBuffer()
    {
        Assert.That(_parent.PinUserPages(_mem, Words, Foll.Write | Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success), "io_uring_register_buffers");
        using (pin)
        {
            Assert.That(_parent.Mprotect(_mem, size, Prot.Read), Is.EqualTo(Errno.Success));
            Assert.That(_parent.Mprotect(_mem, size, Prot.ReadWrite), Is.EqualTo(Errno.Success));
            Fill(_parent, 0xff);
            Assert.That(RefsHold(pin!, Words, 0xff), Is.True, "Longterm R/W pin is reliable");
            AssertNoViolations();
        }
    }

    protected void ForkWithAnIouringFixedBuffer()
    {
        Assert.That(_parent.PinUserPages(_mem, Words, Foll.Write | Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success), "io_uring_register_buffers");
        using (pin)
        {
            // "we expect the pinned page to not get shared with the child": copy_hugetlb_page_range copies it.
            Process child = _parent.Fork();
            Assert.That(FreeHugepages(_k, size), Is.Zero, "the child got its own copy of the pinned page at fork");
            Fill(_parent, 0xff);
            Assert.That(RefsHold(pin!, Words, 0xff), Is.True, "Longterm R/W pin is reliable");
            Assert.That(Holds(child, 1), Is.True, "the child has the data of fork time");
            AssertNoViolations();
            child.Exit();
        }
    }
}

/// <summary>Every hugetlb row of cow.c with 2 MiB pages (see <see cref="HugetlbCowRows"/>).</summary>
[TestFixtureSource(typeof(HugetlbSupport), nameof(Modes))]
public class HugetlbCowTests(HvoMode hvo) : HugetlbCowRows(Size2M, hvo)
{
    [Test] public void Basic_COW_after_fork() => BasicCowAfterFork();
    [Test] public void Basic_COW_after_fork_with_mprotect_optimization() => BasicCowAfterForkWithMprotect();
    [Test] public void Vmsplice_and_unmap_in_child_leaks_the_parents_write_as_linux_does() => VmspliceInChild();
    [Test] public void Vmsplice_and_unmap_in_child_with_mprotect_optimization_leaks_as_linux_does() => VmspliceInChildWithMprotect();
    [Test] public void Vmsplice_before_fork_unmap_in_parent_after_fork_leaks_the_childs_write_as_linux_does() => VmspliceInParent(beforeFork: true);
    [Test] public void Vmsplice_and_unmap_in_parent_after_fork_leaks_the_childs_write_as_linux_does() => VmspliceInParent(beforeFork: false);
    [Test] public void RO_GUP_pin_on_RO_mapped_shared_page() => RoPinTest(RoPin.Shared);
    [Test] public void RO_GUP_pin_on_RO_mapped_previously_shared_page() => RoPinTest(RoPin.PreviouslyShared);
    [Test] public void RO_GUP_pin_on_RO_mapped_exclusive_page() => RoPinTest(RoPin.RoExclusive);
    [Test] public void RO_mapping_a_page_registered_as_iouring_fixed_buffer() => RoMappingAnIouringFixedBuffer();
    [Test] public void Fork_with_an_iouring_fixed_buffer() => ForkWithAnIouringFixedBuffer();
}

/// <summary>
/// The 1 GiB rows: one of each kind (COW, the GUP-reference leak, the R/O pin's unshare, the pinned
/// page copied at fork), as every byte of a 1 GiB page zeroed or copied costs the host real memory.
/// </summary>
[TestFixtureSource(typeof(HugetlbSupport), nameof(Modes))]
public class HugetlbCowGiganticTests(HvoMode hvo) : HugetlbCowRows(Size1G, hvo)
{
    [Test] public void Basic_COW_after_fork() => BasicCowAfterFork();
    [Test] public void Vmsplice_and_unmap_in_child_leaks_the_parents_write_as_linux_does() => VmspliceInChild();
    [Test] public void RO_GUP_pin_on_RO_mapped_shared_page() => RoPinTest(RoPin.Shared);
    [Test] public void Fork_with_an_iouring_fixed_buffer() => ForkWithAnIouringFixedBuffer();
}
