using NativeMmu.Fuzz.Model;
using static NativeMmu.Fuzz.Model.Linux;

namespace NativeMmu.Tests.Fuzz;

/// <summary>The reference model's own rules, checked against the kernel's without the emulator.</summary>
public class ReferenceModelTests
{
    private const int Anon = MapPrivate | MapAnonymous;
    private const int Rw = ProtRead | ProtWrite;
    private const ulong Zone = 0x1000_0000;

    private static (ReferenceModel Model, ModelProcess P) NewModel()
    {
        var m = new ReferenceModel();
        return (m, m.CreateProcess(0));
    }

    private static ulong MapFixedAt(ReferenceModel m, ulong addr, ulong len, int prot = Rw)
    {
        MmapOutcome o = m.Mmap(0, addr, len, prot, Anon | MapFixed, null);
        Assert.That(o.Errno, Is.Zero);
        return o.Address;
    }

    private static ulong Load(ReferenceModel m, ulong addr, int width, out AccessOutcome outcome)
    {
        byte[] b = new byte[8];
        outcome = m.Access(0, addr, b.AsSpan(0, width), write: false);
        return BitConverter.ToUInt64(b);
    }

    private static AccessOutcome Store(ReferenceModel m, ulong addr, int width, ulong value)
        => m.Access(0, addr, BitConverter.GetBytes(value).AsSpan(0, width), write: true);

    // ---------------------------------------------------------------------------------------------
    // mmap
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Mmap_argument_errors_in_the_kernels_order()
    {
        var (m, _) = NewModel();
        Assert.Multiple(() =>
        {
            Assert.That(m.Mmap(0, 0, 0, Rw, Anon, null).Errno, Is.EqualTo(EINVAL), "zero length");
            Assert.That(m.Mmap(0, 0x123, 0, Rw, Anon | MapFixed, null).Errno, Is.EqualTo(EINVAL), "zero length before anything about the address");
            Assert.That(m.Mmap(0, 0, ulong.MaxValue, Rw, Anon, null).Errno, Is.EqualTo(ENOMEM), "PAGE_ALIGN wraps to 0");
            Assert.That(m.Mmap(0, 0, TaskSize + PageSize, Rw, Anon, null).Errno, Is.EqualTo(ENOMEM), "longer than TASK_SIZE");
            Assert.That(m.Mmap(0, Zone + 1, PageSize, Rw, Anon | MapFixed, null).Errno, Is.EqualTo(EINVAL), "MAP_FIXED unaligned");
            Assert.That(m.Mmap(0, TaskSize - PageSize + 1, 2 * PageSize, Rw, Anon | MapFixed, null).Errno, Is.EqualTo(ENOMEM), "range checked before alignment");
            Assert.That(m.Mmap(0, TaskSize - PageSize, 2 * PageSize, Rw, Anon | MapFixed, null).Errno, Is.EqualTo(ENOMEM), "beyond TASK_SIZE");
            Assert.That(m.Mmap(0, 0, PageSize, Rw, Anon | MapFixed, null).Errno, Is.EqualTo(EPERM), "below mmap_min_addr");
            Assert.That(m.Mmap(0, MmapMinAddr - PageSize, PageSize, Rw, Anon | MapFixedNoReplace, null).Errno, Is.EqualTo(EPERM));
            Assert.That(m.Mmap(0, TaskSize - PageSize, PageSize, Rw, Anon | MapFixed, null), Is.EqualTo(new MmapOutcome(0, TaskSize - PageSize)), "the last page");
        });
    }

    [Test]
    public void Mmap_ignores_unknown_prot_bits_and_populate_makes_writable_pages_resident()
    {
        var (m, p) = NewModel();
        Assert.That(m.Mmap(0, Zone, 2 * PageSize, Rw | ProtSem | 0x100, Anon | MapFixed | MapPopulate, null).Errno, Is.Zero);
        Assert.That(p.Maps(), Is.EqualTo(new[] { new ModelMapping(Zone, Zone + 2 * PageSize, Rw, PageAttrs.None) }));
        Assert.That(m.RssBounds(0), Is.EqualTo((2L, 2L)));
        Assert.That(m.Mmap(0, Zone + 0x10000, PageSize, ProtRead, Anon | MapFixed | MapPopulate, null).Errno, Is.Zero);
        Assert.That(m.RssBounds(0), Is.EqualTo((2L, 2L)), "read-only memory populates with the zero page");
        Assert.That(m.Mmap(0, Zone + 0x20000, PageSize, Rw, Anon | MapFixed | MapPopulate | MapNonBlock, null).Errno, Is.Zero);
        Assert.That(m.RssBounds(0), Is.EqualTo((2L, 2L)), "MAP_NONBLOCK cancels MAP_POPULATE");
    }

    [Test]
    public void Map_fixed_replaces_contents_and_noreplace_refuses_an_overlap()
    {
        var (m, p) = NewModel();
        MapFixedAt(m, Zone, 4 * PageSize);
        Store(m, Zone + PageSize, 8, 0x1122);
        Assert.That(m.Mmap(0, Zone + 3 * PageSize, 2 * PageSize, ProtRead, Anon | MapFixedNoReplace, null).Errno, Is.EqualTo(EEXIST));
        Assert.That(p.MappedPages, Is.EqualTo(4));
        Assert.That(Load(m, Zone + PageSize, 8, out _), Is.EqualTo(0x1122UL));
        Assert.That(m.Mmap(0, Zone + PageSize, PageSize, ProtRead, Anon | MapFixed, null).Errno, Is.Zero);
        Assert.That(Load(m, Zone + PageSize, 8, out _), Is.Zero, "MAP_FIXED discards what was there");
        Assert.That(m.RssBounds(0), Is.EqualTo((0L, 0L)));
        Assert.That(p.Maps().Select(x => x.Prot), Is.EqualTo(new[] { Rw, ProtRead, Rw }));
    }

    [Test]
    public void Kernel_placement_is_checked_against_what_Linux_could_return()
    {
        var (m, _) = NewModel();
        ulong top = 0x7fff_f7ff_f000;
        Assert.That(m.Mmap(0, 0, PageSize, Rw, Anon, null), Is.EqualTo(new MmapOutcome(0, 0)), "success expected; nothing applied without an address");
        Assert.That(m.Mmap(0, 0, PageSize, Rw, Anon, top - PageSize), Is.EqualTo(new MmapOutcome(0, top - PageSize)));
        Assert.That(m.Mmap(0, 0, PageSize, Rw, Anon, top - PageSize).PlacementError, Does.Contain("overlaps"));
        Assert.That(m.Mmap(0, 0, PageSize, Rw, Anon, top - PageSize + 8).PlacementError, Does.Contain("page aligned"));
        Assert.That(m.Mmap(0, 0, PmdSize, Rw, Anon, top - PmdSize - PageSize).PlacementError, Does.Contain("2 MiB"));
        Assert.That(m.Mmap(0, 0, PmdSize, Rw, Anon, 0x7fff_f760_0000).PlacementError, Is.Null);
        Assert.That(m.Mmap(0, Zone, PageSize, Rw, Anon, Zone + PageSize).PlacementError, Does.Contain("hint"), "a free hint must be used");
        Assert.That(m.Mmap(0, Zone + 0x123, PageSize, Rw, Anon, Zone).PlacementError, Is.Null, "the hint loses its page offset");
        Assert.That(m.Mmap(0, Zone, PageSize, Rw, Anon, Zone + 0x8000).PlacementError, Is.Null, "a taken hint frees the kernel's choice");
        Assert.That(m.Mmap(0, 0x123, PmdSize, Rw, Anon, 0x10000).PlacementError, Does.Contain("2 MiB"), "a hint inside page 0 is no hint");
        Assert.That(m.Mmap(0, 0x1000, PageSize, Rw, Anon, 0x20000).PlacementError, Does.Contain("hint"), "a low hint is raised to mmap_min_addr");
    }

    // ---------------------------------------------------------------------------------------------
    // munmap
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Munmap_errors_and_unmapped_ranges()
    {
        var (m, p) = NewModel();
        MapFixedAt(m, Zone, 4 * PageSize);
        Assert.Multiple(() =>
        {
            Assert.That(m.Munmap(0, Zone + 1, PageSize), Is.EqualTo(EINVAL));
            Assert.That(m.Munmap(0, Zone, 0), Is.EqualTo(EINVAL));
            Assert.That(m.Munmap(0, TaskSize + PageSize, PageSize), Is.EqualTo(EINVAL));
            Assert.That(m.Munmap(0, TaskSize - PageSize, PageSize + 1), Is.EqualTo(EINVAL), "len > TASK_SIZE - start before rounding");
            Assert.That(m.Munmap(0, TaskSize - PageSize, PageSize), Is.Zero);
            Assert.That(m.Munmap(0, 0x5000_0000, 16 * PageSize), Is.Zero, "nothing mapped there: success");
            Assert.That(m.Munmap(0, Zone + PageSize, 1), Is.Zero);
        });
        Assert.That(p.Maps().Select(x => (x.Start, x.End)), Is.EqualTo(new[] { (Zone, Zone + PageSize), (Zone + 2 * PageSize, Zone + 4 * PageSize) }));
        Assert.That(p.MappedPages, Is.EqualTo(3));
    }

    // ---------------------------------------------------------------------------------------------
    // mprotect
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Mprotect_errors_in_the_kernels_order()
    {
        var (m, _) = NewModel();
        Assert.Multiple(() =>
        {
            Assert.That(m.Mprotect(0, Zone + 1, 0, ProtRead), Is.EqualTo(EINVAL), "unaligned start before the zero length");
            Assert.That(m.Mprotect(0, Zone, 0, 0x40), Is.Zero, "zero length before the prot check");
            Assert.That(m.Mprotect(0, Zone, ulong.MaxValue, 0x40), Is.EqualTo(ENOMEM), "wrap before the prot check");
            Assert.That(m.Mprotect(0, Zone, PageSize, 0x40), Is.EqualTo(EINVAL));
            Assert.That(m.Mprotect(0, Zone, PageSize, ProtRead | ProtSem), Is.EqualTo(ENOMEM), "PROT_SEM is valid; nothing is mapped");
        });
    }

    [Test]
    public void Mprotect_changes_the_run_before_a_hole_and_nothing_when_start_is_unmapped()
    {
        var (m, p) = NewModel();
        MapFixedAt(m, Zone + PageSize, 2 * PageSize);
        MapFixedAt(m, Zone + 4 * PageSize, PageSize);
        Assert.That(m.Mprotect(0, Zone, 6 * PageSize, ProtRead), Is.EqualTo(ENOMEM));
        Assert.That(p.Maps().Select(x => x.Prot), Is.EqualTo(new[] { Rw, Rw }), "a hole at the start: nothing changes");
        Assert.That(m.Mprotect(0, Zone + 2 * PageSize, 4 * PageSize, ProtNone), Is.EqualTo(ENOMEM));
        Assert.That(p.Maps(), Is.EqualTo(new[]
        {
            new ModelMapping(Zone + PageSize, Zone + 2 * PageSize, Rw, PageAttrs.None),
            new ModelMapping(Zone + 2 * PageSize, Zone + 3 * PageSize, ProtNone, PageAttrs.None),
            new ModelMapping(Zone + 4 * PageSize, Zone + 5 * PageSize, Rw, PageAttrs.None),
        }), "the part before the hole changes, the part after it does not");
        Assert.That(m.Mprotect(0, Zone + PageSize, 2 * PageSize, ProtRead | ProtSem), Is.Zero);
    }

    // ---------------------------------------------------------------------------------------------
    // madvise
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Madvise_errors_in_the_kernels_order()
    {
        var (m, _) = NewModel();
        MapFixedAt(m, Zone, PageSize);
        Assert.Multiple(() =>
        {
            Assert.That(m.Madvise(0, Zone + 1, 0, 5), Is.EqualTo(EINVAL), "invalid advice first");
            Assert.That(m.Madvise(0, Zone, 0, MadvMergeable), Is.EqualTo(EINVAL), "no KSM");
            Assert.That(m.Madvise(0, Zone + 1, PageSize, MadvDontNeed), Is.EqualTo(EINVAL));
            Assert.That(m.Madvise(0, Zone, ulong.MaxValue, MadvDontNeed), Is.EqualTo(EINVAL), "length rounds up to 0");
            Assert.That(m.Madvise(0, 0xffff_ffff_ffff_f000, 0x2000, MadvDontNeed), Is.EqualTo(EINVAL), "end wraps");
            Assert.That(m.Madvise(0, 0x5000_0000, 0, MadvDontNeed), Is.Zero, "zero length");
            Assert.That(m.Madvise(0, 0x5000_0000, PageSize, MadvDontNeed), Is.EqualTo(ENOMEM), "nothing mapped");
            Assert.That(m.Madvise(0, Zone, PageSize, MadvRemove), Is.EqualTo(EINVAL), "no file behind anonymous memory");
            Assert.That(m.Madvise(0, Zone, PageSize, MadvWillNeed), Is.Zero);
        });
    }

    [Test]
    public void Madvise_applies_to_every_mapped_part_then_reports_the_holes()
    {
        var (m, p) = NewModel();
        MapFixedAt(m, Zone, PageSize);
        MapFixedAt(m, Zone + 2 * PageSize, PageSize);
        Store(m, Zone, 4, 1);
        Store(m, Zone + 2 * PageSize, 4, 2);
        Assert.That(m.Madvise(0, Zone, 3 * PageSize, MadvDontNeed), Is.EqualTo(ENOMEM));
        Assert.That(Load(m, Zone, 4, out _), Is.Zero);
        Assert.That(Load(m, Zone + 2 * PageSize, 4, out _), Is.Zero, "the part after the hole is discarded too");
        Assert.That(m.RssBounds(0), Is.EqualTo((0L, 0L)));

        Assert.That(m.Madvise(0, Zone - PageSize, 4 * PageSize, MadvWipeOnFork), Is.EqualTo(ENOMEM));
        Assert.That(m.Madvise(0, Zone, PageSize, MadvHugePage), Is.Zero);
        Assert.That(m.Madvise(0, Zone, PageSize, MadvNoHugePage), Is.Zero);
        Assert.That(m.Madvise(0, Zone + 2 * PageSize, PageSize, MadvDontFork), Is.Zero);
        Assert.That(m.Madvise(0, Zone + 2 * PageSize, PageSize, MadvSequential), Is.Zero);
        Assert.That(m.Madvise(0, Zone + 2 * PageSize, PageSize, MadvRandom), Is.Zero);
        Assert.That(p.Maps().Select(x => x.Attrs), Is.EqualTo(new[]
        {
            PageAttrs.WipeOnFork | PageAttrs.NoHugePage,
            PageAttrs.WipeOnFork | PageAttrs.DontFork | PageAttrs.RandRead,
        }));
        Assert.That(m.Madvise(0, Zone, 3 * PageSize, MadvKeepOnFork), Is.EqualTo(ENOMEM));
        Assert.That(m.Madvise(0, Zone, 3 * PageSize, MadvNormal), Is.EqualTo(ENOMEM));
        Assert.That(p.Maps().Select(x => x.Attrs), Is.EqualTo(new[] { PageAttrs.NoHugePage, PageAttrs.DontFork }));
    }

    // ---------------------------------------------------------------------------------------------
    // Accesses
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Faults_are_maperr_for_holes_and_accerr_for_protection()
    {
        var (m, _) = NewModel();
        MapFixedAt(m, Zone, PageSize, ProtRead);
        MapFixedAt(m, Zone + PageSize, PageSize, ProtNone);
        MapFixedAt(m, Zone + 2 * PageSize, PageSize, ProtExec);
        MapFixedAt(m, Zone + 3 * PageSize, PageSize, ProtWrite);
        Load(m, Zone + 8, 8, out AccessOutcome o);
        Assert.That(o, Is.EqualTo(AccessOutcome.Ok));
        Assert.That(Store(m, Zone + 8, 8, 1), Is.EqualTo(new AccessOutcome(ModelFault.AccErr, Zone + 8)));
        Load(m, Zone + PageSize, 1, out o);
        Assert.That(o, Is.EqualTo(new AccessOutcome(ModelFault.AccErr, Zone + PageSize)), "PROT_NONE refuses reads");
        Load(m, Zone + 2 * PageSize, 1, out o);
        Assert.That(o, Is.EqualTo(AccessOutcome.Ok), "PROT_EXEC alone is readable on x86 without protection keys");
        Assert.That(Store(m, Zone + 3 * PageSize, 2, 0xbeef), Is.EqualTo(AccessOutcome.Ok));
        Assert.That(Load(m, Zone + 3 * PageSize, 2, out _), Is.EqualTo(0xbeefUL), "PROT_WRITE implies read");
        Load(m, Zone + 4 * PageSize, 1, out o);
        Assert.That(o, Is.EqualTo(new AccessOutcome(ModelFault.MapErr, Zone + 4 * PageSize)));
        Load(m, TaskSize + 8, 8, out o);
        Assert.That(o.Fault, Is.EqualTo(ModelFault.MapErr), "the page above TASK_SIZE");
    }

    [Test]
    public void A_crossing_scalar_is_all_or_nothing_and_reports_the_page_that_faults()
    {
        var (m, p) = NewModel();
        MapFixedAt(m, Zone, PageSize);
        MapFixedAt(m, Zone + PageSize, PageSize, ProtRead);
        Assert.That(Store(m, Zone + 0xffc, 8, ulong.MaxValue), Is.EqualTo(new AccessOutcome(ModelFault.AccErr, Zone + PageSize)));
        Assert.That(Load(m, Zone + 0xff8, 8, out _), Is.Zero, "nothing was written");
        Assert.That(m.RssBounds(0), Is.EqualTo((0L, 1L)), "the first page may have been faulted in");
        Assert.That(p.WrittenPages, Is.Zero);
        Assert.That(m.Mprotect(0, Zone, PageSize, ProtRead), Is.Zero);
        Assert.That(Store(m, Zone + 0xffc, 8, 1), Is.EqualTo(new AccessOutcome(ModelFault.AccErr, Zone + 0xffc)), "the first page faults first");
        Assert.That(m.Mprotect(0, Zone, 2 * PageSize, Rw), Is.Zero);
        Assert.That(Store(m, Zone + 0xffc, 8, 0x1122334455667788), Is.EqualTo(AccessOutcome.Ok));
        Assert.That(Load(m, Zone + 0xffe, 4, out _), Is.EqualTo(0x33445566UL));
        Assert.That(m.RssBounds(0), Is.EqualTo((2L, 2L)));
    }

    [Test]
    public void A_span_is_copied_page_by_page_up_to_the_page_that_faults()
    {
        var (m, _) = NewModel();
        MapFixedAt(m, Zone, 2 * PageSize);
        byte[] data = Enumerable.Range(0, 3000).Select(i => (byte)(i + 1)).ToArray();
        AccessOutcome o = m.Access(0, Zone + 2 * PageSize - 1000, data, write: true);
        Assert.That(o, Is.EqualTo(new AccessOutcome(ModelFault.MapErr, Zone + 2 * PageSize)));
        byte[] back = new byte[1200];
        o = m.Access(0, Zone + 2 * PageSize - 1200, back, write: false);
        Assert.That(o, Is.EqualTo(AccessOutcome.Ok));
        Assert.That(back.Take(200), Is.All.Zero);
        Assert.That(back.Skip(200), Is.EqualTo(data.Take(1000)), "the first chunk was written");
        o = m.Access(0, Zone + 2 * PageSize - 8, new byte[100], write: false);
        Assert.That(o, Is.EqualTo(new AccessOutcome(ModelFault.MapErr, Zone + 2 * PageSize)));
    }

    // ---------------------------------------------------------------------------------------------
    // fork and exit
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Fork_copies_the_address_space_except_dontfork_and_wipes_wipeonfork()
    {
        var (m, _) = NewModel();
        MapFixedAt(m, Zone, PageSize);
        MapFixedAt(m, Zone + PageSize, PageSize);
        MapFixedAt(m, Zone + 2 * PageSize, PageSize);
        Store(m, Zone, 8, 11);
        Store(m, Zone + PageSize, 8, 22);
        Store(m, Zone + 2 * PageSize, 8, 33);
        Assert.That(m.Madvise(0, Zone + PageSize, PageSize, MadvWipeOnFork), Is.Zero);
        Assert.That(m.Madvise(0, Zone + 2 * PageSize, PageSize, MadvDontFork), Is.Zero);
        m.Fork(0, 1);
        ModelProcess child = m.Process(1)!;
        Assert.That(child.Maps(), Is.EqualTo(new[]
        {
            new ModelMapping(Zone, Zone + PageSize, Rw, PageAttrs.None),
            new ModelMapping(Zone + PageSize, Zone + 2 * PageSize, Rw, PageAttrs.WipeOnFork),
        }));
        Assert.That(m.RssBounds(1), Is.EqualTo((1L, 1L)));
        byte[] b = new byte[8];
        Assert.That(m.Access(1, Zone, b, write: false), Is.EqualTo(AccessOutcome.Ok));
        Assert.That(BitConverter.ToUInt64(b), Is.EqualTo(11UL));
        Assert.That(m.Access(1, Zone + PageSize, b, write: false), Is.EqualTo(AccessOutcome.Ok));
        Assert.That(BitConverter.ToUInt64(b), Is.Zero, "WIPEONFORK: the child reads zeroes");
        Assert.That(m.Access(1, Zone + 2 * PageSize, b, write: false).Fault, Is.EqualTo(ModelFault.MapErr), "DONTFORK: not in the child");

        Assert.That(m.Access(1, Zone, BitConverter.GetBytes(99UL), write: true), Is.EqualTo(AccessOutcome.Ok));
        Assert.That(Load(m, Zone, 8, out _), Is.EqualTo(11UL), "the parent's copy is its own");
        m.Exit(1);
        Assert.That(m.Process(1), Is.Null);
        Assert.That(m.RssBounds(0), Is.EqualTo((3L, 3L)));
    }

    // ---------------------------------------------------------------------------------------------
    // What fuzz host found (Host/HostDifferenceRegressionTests pins the emulator)
    // ---------------------------------------------------------------------------------------------

    [Test]
    public void Madv_free_keeps_contents_and_rss_and_pageout_of_lazily_freed_pages_is_not_modelled()
    {
        var (m, p) = NewModel();
        ulong a = MapFixedAt(m, Zone, 0x2000);
        Store(m, a + 0x1373, 1, 0x22);
        Assert.That(m.Madvise(0, a + 0x1000, 0x1000, MadvFree), Is.Zero);
        Assert.That(Load(m, a + 0x1373, 1, out _), Is.EqualTo(0x22));
        Assert.That(m.RssBounds(0), Is.EqualTo((1L, 1L)));
        Assert.Throws<NotSupportedException>(() => m.Madvise(0, a, 0x2000, MadvPageOut));
        Store(m, a + 0x1374, 1, 0x33); // written again: no longer lazily freed
        Assert.That(m.Madvise(0, a, 0x2000, MadvPageOut), Is.Zero);
        Assert.That(Load(m, a + 0x1373, 2, out _), Is.EqualTo(0x3322));
        Assert.That(p.WrittenPages, Is.EqualTo(1));
    }

    [Test]
    public void Madv_cold_may_take_a_zero_filled_page_of_a_thp_to_the_zero_page()
    {
        var (m, p) = NewModel();
        ulong a = MapFixedAt(m, Zone, 0x400000);
        Store(m, a, 8, 0);         // written, but all zero: a THP split maps it to the zero page
        Store(m, a + 0x1000, 8, 5);
        Assert.That(m.RssBounds(0), Is.EqualTo((2L, 2L)));
        Assert.That(m.Madvise(0, a + 0x3000, 0x1000, MadvCold), Is.Zero);
        Assert.That(m.RssBounds(0), Is.EqualTo((1L, 2L)));
        Assert.That(Load(m, a + 0x1000, 8, out _), Is.EqualTo(5));
    }

    [Test]
    public void Map_stack_gives_nohugepage()
    {
        var (m, p) = NewModel();
        MmapOutcome o = m.Mmap(0, Zone, 0x1000, Rw, Anon | MapFixed | MapStack, null);
        Assert.That(o.Errno, Is.Zero);
        Assert.That(p.RegionAt(Zone)!.Attrs, Is.EqualTo(PageAttrs.NoHugePage));
    }

    [Test]
    public void Mprotect_grows_bits_are_refused_after_the_vma_is_looked_up()
    {
        var (m, _) = NewModel();
        ulong a = MapFixedAt(m, Zone, 0x1000);
        Assert.That(m.Mprotect(0, a - 0x1000, 0x1000, ProtGrowsUp | ProtRead), Is.EqualTo(ENOMEM));
        Assert.That(m.Mprotect(0, a - 0x1000, 0x1000, ProtGrowsDown | ProtRead), Is.EqualTo(ENOMEM));
        Assert.That(m.Mprotect(0, a, 0x1000, ProtGrowsDown | ProtRead), Is.EqualTo(EINVAL));
        Assert.That(m.Mprotect(0, a, 0x1000, ProtGrowsUp | ProtRead), Is.EqualTo(EINVAL));
        Assert.That(m.Mprotect(0, a + 1, 0x1000, ProtGrowsUp | ProtGrowsDown), Is.EqualTo(EINVAL));
        Assert.That(m.Mprotect(0, a, 0, ProtGrowsUp), Is.Zero);
    }
}
