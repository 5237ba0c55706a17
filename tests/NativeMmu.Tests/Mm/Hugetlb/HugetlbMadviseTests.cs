using NativeMmu.Mm;
using static NativeMmu.Tests.Mm.Hugetlb.HugetlbSupport;

namespace NativeMmu.Tests.Mm.Hugetlb;

/// <summary>
/// tools/testing/selftests/mm/hugetlb-madvise.c, its anonymous private part (the hugetlbfs memfd parts -
/// fallocate, MAP_SHARED, MADV_REMOVE on a file - need a hugetlbfs this kernel does not have), with the
/// default huge page size, MIN_FREE_PAGES 20 and NR_HUGE_PAGES 10, validate_free_pages after each step;
/// and the other advices' answers on a hugetlb VMA (mm/madvise.c). Invariant mode on and silent.
/// </summary>
[TestFixtureSource(typeof(HugetlbSupport), nameof(Modes))]
public class HugetlbMadviseTests(HvoMode hvo)
{
    private const int MinFreePages = 20, NrHugePages = 10;
    private const ulong HugePageSize = Size2M, BasePageSize = 4096;
    private Kernel _k = null!;
    private Process _p = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;
    private long _freeHugepages;

    [SetUp]
    public void SetUp()
    {
        _k = Boot(Size2M, MinFreePages, hvo);
        _p = _k.CreateProcess("hugetlb-madvise");
        _cpu = _k.AttachCpu();
        _p.Enter(_cpu);
        _freeHugepages = FreeHugepages(_k, Size2M);
        Assert.That(_freeHugepages, Is.GreaterThanOrEqualTo(MinFreePages), "Not enough free huge pages to test");
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            _p.Exit();
            Assert.That(_k.InvariantViolations, Is.Empty, "the invariant checks reported nothing");
            Assert.That(FreeHugepages(_k, Size2M), Is.EqualTo(_freeHugepages));
            Assert.That(HugetlbSupport.Hstate(_k, Size2M).ResvHugepages, Is.Zero, "no reservation outlives its mapping");
        }
        finally
        {
            _cpu.Dispose();
            _k.Dispose();
        }
    }

    private void ValidateFreePages(long expFree, string step)
        => Assert.That(FreeHugepages(_k, Size2M), Is.EqualTo(expFree), $"Unexpected number of free huge pages: {step}");

    private void WriteFaultPages(ulong addr, int nrPages)
    {
        for (int i = 0; i < nrPages; i++) _cpu.Store<ulong>(addr + (ulong)i * HugePageSize, (ulong)i);
    }

    private ulong Map(ulong len)
    {
        Errno e = MmapHugetlb(_p, len, Size2M, out ulong addr);
        Assert.That(e, Is.EqualTo(Errno.Success), "mmap");
        return addr;
    }

    [Test]
    public void Madvise_dontneed_outside_the_mapping_fails()
    {
        // mmap size is NR_HUGE_PAGES + 2; one page at each end is unmapped so nothing is mapped there.
        ulong addr = Map((NrHugePages + 2) * HugePageSize);
        Assert.That(_p.Munmap(addr, HugePageSize), Is.EqualTo(Errno.Success));
        Assert.That(_p.Munmap(addr + (NrHugePages + 1) * HugePageSize, HugePageSize), Is.EqualTo(Errno.Success));
        addr += HugePageSize;
        WriteFaultPages(addr, NrHugePages);
        ValidateFreePages(_freeHugepages - NrHugePages, "after faulting the mapping in");

        Assert.That(_p.Madvise(addr - BasePageSize, NrHugePages * HugePageSize, Advice.DontNeed), Is.Not.EqualTo(Errno.Success),
            "Unexpected success of madvise call with invalid addr");
        Assert.That(_p.Madvise(addr, NrHugePages * HugePageSize + BasePageSize, Advice.DontNeed), Is.Not.EqualTo(Errno.Success),
            "Unexpected success of madvise call with invalid length");
        Assert.That(_k.CheckInvariants(), Is.Empty);
        _p.Munmap(addr, NrHugePages * HugePageSize);
        ValidateFreePages(_freeHugepages, "after munmap");
    }

    [Test]
    public void Madvise_dontneed_needs_an_aligned_start_and_rounds_the_length_down()
    {
        ulong addr = Map(NrHugePages * HugePageSize);
        WriteFaultPages(addr, NrHugePages);
        ValidateFreePages(_freeHugepages - NrHugePages, "after faulting the mapping in");

        Assert.That(_p.Madvise(addr + BasePageSize, NrHugePages * HugePageSize - BasePageSize, Advice.DontNeed), Is.EqualTo(Errno.EINVAL),
            "Unexpected success of madvise call with unaligned start address");
        // addr + length should be aligned down to huge page size
        Assert.That(_p.Madvise(addr, (NrHugePages - 1) * HugePageSize + BasePageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
        ValidateFreePages(_freeHugepages - 1, "should free all but last page in mapping");
        Assert.That(_cpu.Load<ulong>(addr + (NrHugePages - 1) * HugePageSize), Is.EqualTo(NrHugePages - 1), "the last page kept its data");
        Assert.That(_cpu.Load<ulong>(addr), Is.Zero, "a zapped page faults back in zeroed");
        Assert.That(_k.CheckInvariants(), Is.Empty);
        _p.Munmap(addr, NrHugePages * HugePageSize);
        ValidateFreePages(_freeHugepages, "after munmap");
    }

    [Test]
    public void Madvise_dontneed_on_an_anonymous_private_mapping_frees_every_page()
    {
        ulong addr = Map(NrHugePages * HugePageSize);
        WriteFaultPages(addr, NrHugePages);
        ValidateFreePages(_freeHugepages - NrHugePages, "after faulting the mapping in");
        Assert.That(_p.Madvise(addr, NrHugePages * HugePageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
        ValidateFreePages(_freeHugepages, "should free all pages in mapping");
        Assert.That(TestSupport.StatusKb(_p, "HugetlbPages"), Is.Zero);
        _p.Munmap(addr, NrHugePages * HugePageSize);
    }

    [Test]
    public void A_zapped_page_faults_back_in_within_the_pool_even_with_its_reservation_consumed()
    {
        // The reservation of a private mapping is consumed by the first fault of each index; a fault after
        // MADV_DONTNEED takes a page no reservation holds. With 20 free and 10 reserved, that works.
        ulong addr = Map(NrHugePages * HugePageSize);
        WriteFaultPages(addr, NrHugePages);
        Assert.That(HugetlbSupport.Hstate(_k, Size2M).ResvHugepages, Is.Zero, "every reservation was consumed");
        Assert.That(_p.Madvise(addr, NrHugePages * HugePageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
        WriteFaultPages(addr, NrHugePages);
        ValidateFreePages(_freeHugepages - NrHugePages, "faulted in again");
        _p.Munmap(addr, NrHugePages * HugePageSize);
    }

    [TestCase(Advice.Free, Errno.EINVAL, TestName = "MADV_FREE on hugetlb is EINVAL (madvise_dontneed_free_valid_vma)")]
    [TestCase(Advice.Cold, Errno.EINVAL, TestName = "MADV_COLD on hugetlb is EINVAL (can_madv_lru_vma)")]
    [TestCase(Advice.PageOut, Errno.EINVAL, TestName = "MADV_PAGEOUT on hugetlb is EINVAL (can_madv_lru_vma)")]
    [TestCase(Advice.WipeOnFork, Errno.EINVAL, TestName = "MADV_WIPEONFORK on hugetlb is EINVAL (a file VMA)")]
    [TestCase(Advice.Collapse, Errno.EINVAL, TestName = "MADV_COLLAPSE on hugetlb is EINVAL")]
    [TestCase(Advice.Remove, Errno.EACCES, TestName = "MADV_REMOVE on a private hugetlb mapping is EACCES (not shared and writable)")]
    [TestCase(Advice.WillNeed, Errno.Success, TestName = "MADV_WILLNEED on hugetlb succeeds (fadvise of hugetlbfs)")]
    [TestCase(Advice.DontFork, Errno.Success, TestName = "MADV_DONTFORK on a whole hugetlb VMA succeeds")]
    [TestCase(Advice.DontNeedLocked, Errno.Success, TestName = "MADV_DONTNEED_LOCKED on hugetlb zaps like MADV_DONTNEED")]
    public void The_advices_on_a_hugetlb_vma(Advice advice, Errno expected)
    {
        ulong addr = Map(2 * HugePageSize);
        WriteFaultPages(addr, 2);
        Assert.That(_p.Madvise(addr, 2 * HugePageSize, advice), Is.EqualTo(expected));
        bool zaps = advice == Advice.DontNeedLocked;
        ValidateFreePages(_freeHugepages - (zaps ? 0 : 2), "only a DONTNEED frees the pages");
        Assert.That(_k.CheckInvariants(), Is.Empty);
    }

    [Test]
    public void A_flag_change_inside_a_huge_page_is_refused_and_one_on_its_boundary_splits_the_vma()
    {
        ulong addr = Map(2 * HugePageSize);
        Assert.That(_p.Madvise(addr, BasePageSize, Advice.DontFork), Is.EqualTo(Errno.EINVAL), "hugetlb_vm_op_split: EINVAL inside a huge page");
        Assert.That(_p.Madvise(addr, HugePageSize, Advice.DontFork), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2), "split at the huge-page boundary");
    }
}
