using NativeMmu.Cpus;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>madvise(2): the order of Linux's checks, holes, and the advice that changes VMAs or frees pages.</summary>
public class MadviseTests : OneProcessFixture
{
    private const ulong X = 0x2000_0000;


    [TestCase(99)]
    [TestCase(-1)]
    [TestCase(12, TestName = "MADV_MERGEABLE without KSM is an invalid advice")]
    public void An_invalid_advice_is_einval_before_anything_else_is_checked(int advice)
    {
        Assert.Multiple(() =>
        {
            Assert.That(_p.Madvise(X + 1, PageSize, (Advice)advice), Is.EqualTo(Errno.EINVAL), "unaligned and unmapped");
            Assert.That(_p.Madvise(X, 0, (Advice)advice), Is.EqualTo(Errno.EINVAL), "even with zero length");
            Assert.That(_p.Madvise(X, PageSize, (Advice)advice), Is.EqualTo(Errno.EINVAL), "unmapped");
        });
    }

    [Test]
    public void Madvise_of_an_unaligned_address_is_einval()
    {
        ulong a = _p.Mmap(2 * PageSize);
        Assert.That(_p.Madvise(a + 1, PageSize, Advice.DontNeed), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Madvise(a + 1, 0, Advice.Normal), Is.EqualTo(Errno.EINVAL), "alignment is checked before the length");
    }

    [Test]
    public void Madvise_of_zero_length_succeeds_even_where_nothing_is_mapped()
    {
        Assert.That(_p.Madvise(X, 0, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(_p.Madvise(X, 0, Advice.HugePage), Is.EqualTo(Errno.Success));
    }

    [Test]
    public void Madvise_of_a_length_that_wraps_is_einval()
    {
        Assert.That(_p.Madvise(X, ulong.MaxValue - 10, Advice.Normal), Is.EqualTo(Errno.EINVAL), "PAGE_ALIGN rounded a huge length to zero");
        Assert.That(_p.Madvise(X, unchecked(0UL - X + PageSize), Advice.Normal), Is.EqualTo(Errno.EINVAL), "start + len wraps");
    }

    [Test]
    public void Madvise_of_an_unmapped_range_is_enomem()
    {
        Assert.That(_p.Madvise(X, PageSize, Advice.DontNeed), Is.EqualTo(Errno.ENOMEM));
        Assert.That(_p.Madvise(X, PageSize, Advice.Random), Is.EqualTo(Errno.ENOMEM));
    }

    [Test]
    public void Dontneed_across_holes_frees_the_mapped_parts_and_returns_enomem()
    {
        MapAt(_p, X, 2 * PageSize);
        MapAt(_p, X + 3 * PageSize, 2 * PageSize, Prot.Read | Prot.Write | Prot.Exec);
        foreach (ulong off in new ulong[] { 0, 1, 3, 4 }) _cpu.Store<long>(X + off * PageSize, 40 + (long)off);
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(4));

        Assert.That(_p.Madvise(X + PageSize, 5 * PageSize, Advice.DontNeed), Is.EqualTo(Errno.ENOMEM),
            "a hole in the middle and the range runs past the last VMA");
        Assert.Multiple(() =>
        {
            Assert.That(_cpu.Load<long>(X), Is.EqualTo(40), "before the range: untouched");
            Assert.That(_cpu.Load<long>(X + PageSize), Is.Zero, "mapped part before the hole was zapped");
            Assert.That(_cpu.Load<long>(X + 3 * PageSize), Is.Zero, "mapped part after the hole was zapped");
            Assert.That(_cpu.Load<long>(X + 4 * PageSize), Is.Zero);
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(1));
        });
    }

    [Test]
    public void Dontneed_starting_in_a_hole_still_applies_to_what_follows()
    {
        MapAt(_p, X + PageSize, PageSize);
        _cpu.Store<long>(X + PageSize, 1);
        Assert.That(_p.Madvise(X, 2 * PageSize, Advice.DontNeed), Is.EqualTo(Errno.ENOMEM));
        Assert.That(_cpu.Load<long>(X + PageSize), Is.Zero);
    }

    [Test]
    public void Dontneed_keeps_the_page_tables_but_frees_the_pages()
    {
        ulong a = _p.Mmap(64 * PageSize);
        for (ulong i = 0; i < 64; i++) _cpu.Store<long>(a + i * PageSize, 1);
        long pte = StatusKb(_p, "VmPTE");
        long free = TestSupport.SettledFreeFrames(_kernel);
        Assert.That(_p.Madvise(a, 64 * PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.Multiple(() =>
        {
            Assert.That(StatusKb(_p, "VmPTE"), Is.EqualTo(pte), "zap_page_range_single does not free page tables");
            Assert.That(_p.Mm.GetMmRss(), Is.Zero);
            Assert.That(StatusKb(_p, "VmRSS"), Is.Zero);
            Assert.That(StatusKb(_p, "VmHWM"), Is.EqualTo(64 * 4), "the high-water mark remembers");
            Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(free + 64), "every page went back to the allocator");
            Assert.That(_kernel.VmstatValue("nr_anon_pages"), Is.Zero);
            Assert.That(_cpu.TlbHolds(a, out _, out _), Is.False, "the zapped translations were flushed");
            Assert.That(_cpu.Load<long>(a), Is.Zero, "the memory reads as fresh zero-fill");
        });
    }

    [Test]
    public void Dontneed_on_a_locked_vma_is_einval_but_dontneed_locked_works()
    {
        ulong a = _p.Mmap(2 * PageSize, Prot.ReadWrite, MapFlags.Locked);
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(2), "MAP_LOCKED populates");
        Assert.That(_p.Madvise(a, 2 * PageSize, Advice.DontNeed), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(2));
        Assert.That(_p.Madvise(a, 2 * PageSize, Advice.DontNeedLocked), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.GetMmRss(), Is.Zero);
    }

    [Test]
    public void Nohugepage_and_hugepage_are_recorded_on_the_vma_and_split_it()
    {
        ulong a = MapAt(_p, X, 8 * PageSize);
        Assert.That(_p.Madvise(a + 2 * PageSize, 2 * PageSize, Advice.NoHugePage), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(3), "the advice applies to its range only");
        Vma mid = _p.Mm.Vmas.FindVma(a + 2 * PageSize)!;
        Assert.Multiple(() =>
        {
            Assert.That(mid.VmStart, Is.EqualTo(a + 2 * PageSize));
            Assert.That(mid.VmEnd, Is.EqualTo(a + 4 * PageSize));
            Assert.That(mid.VmFlags & VmFlags.NoHugePage, Is.EqualTo(VmFlags.NoHugePage));
            Assert.That(_p.Mm.Vmas.First!.VmFlags & (VmFlags.NoHugePage | VmFlags.HugePage), Is.EqualTo(VmFlags.None));
        });

        Assert.That(_p.Madvise(a + 2 * PageSize, 2 * PageSize, Advice.HugePage), Is.EqualTo(Errno.Success));
        mid = _p.Mm.Vmas.FindVma(a + 2 * PageSize)!;
        Assert.That(mid.VmFlags & (VmFlags.NoHugePage | VmFlags.HugePage), Is.EqualTo(VmFlags.HugePage), "MADV_HUGEPAGE replaces MADV_NOHUGEPAGE");
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(3));

        Assert.That(_p.Madvise(a, 8 * PageSize, Advice.HugePage), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "once all three agree they merge");
        Assert.That(_p.Mm.Vmas.First!.VmFlags & VmFlags.HugePage, Is.EqualTo(VmFlags.HugePage));
    }

    [Test]
    public void Advice_that_needs_a_file_is_einval_on_anonymous_memory()
    {
        ulong a = _p.Mmap(PageSize);
        Assert.That(_p.Madvise(a, PageSize, Advice.Remove), Is.EqualTo(Errno.EINVAL));
    }

    [Test]
    public void Populate_write_faults_the_range_in_and_is_einval_on_a_read_only_mapping()
    {
        ulong a = _p.Mmap(8 * PageSize);
        Assert.That(_p.Madvise(a, 8 * PageSize, Advice.PopulateWrite), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(8));
        ulong r = _p.Mmap(PageSize, Prot.Read);
        Assert.That(_p.Madvise(r, PageSize, Advice.PopulateWrite), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Madvise(r, PageSize, Advice.PopulateRead), Is.EqualTo(Errno.Success));
    }
}
