using NativeMmu.Arch.X86;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>mmap(2): argument checks, placement, MAP_FIXED variants, merging and MAP_POPULATE.</summary>
public class MmapTests : OneProcessFixture
{
    private const MapFlags Anon = MapFlags.Private | MapFlags.Anonymous;
    private const ulong MmapBase = 0x7fff_f7ff_f000;
    private const ulong X = 0x2000_0000; // a free spot for MAP_FIXED tests


    private Errno Mmap(ulong addr, ulong len, MapFlags flags, out ulong mapped, Prot prot = Prot.ReadWrite)
        => _p.Mmap(addr, len, prot, flags, out mapped);

    [Test]
    public void Mmap_of_length_zero_is_einval()
    {
        Assert.That(Mmap(0, 0, Anon, out _), Is.EqualTo(Errno.EINVAL));
        Assert.That(Mmap(X, 0, Anon | MapFlags.Fixed, out _), Is.EqualTo(Errno.EINVAL));
    }

    [Test]
    public void Mmap_needs_exactly_one_of_private_or_shared()
    {
        Assert.That(Mmap(0, PageSize, MapFlags.Anonymous, out _), Is.EqualTo(Errno.EINVAL), "neither MAP_PRIVATE nor MAP_SHARED");
        Assert.That(Mmap(0, PageSize, MapFlags.Private, out _), Is.EqualTo(Errno.EBADF), "a file mapping needs a file descriptor");
    }

    [Test]
    public void Mmap_ignores_prot_bits_beyond_read_write_exec()
    {
        // do_mmap never validates prot: calc_vm_prot_bits takes R/W/X and drops the rest
        // (only mprotect checks, through arch_validate_prot).
        Assert.That(Mmap(0, PageSize, Anon, out ulong a, (Prot)0x40 | Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.FindVma(a)!.VmFlags & NativeMmu.Mm.VmFlags.AccessFlags, Is.EqualTo(NativeMmu.Mm.VmFlags.Read));
    }

    [Test]
    public void A_length_larger_than_the_address_space_is_enomem()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Mmap(0, 1UL << 47, Anon, out _), Is.EqualTo(Errno.ENOMEM));
            Assert.That(Mmap(0, ulong.MaxValue - 100, Anon, out _), Is.EqualTo(Errno.ENOMEM), "PAGE_ALIGN overflows to zero");
            Assert.That(Mmap(0, _p.Mm.TaskSize, Anon, out _), Is.EqualTo(Errno.ENOMEM), "no gap that large exists");
        });
    }

    [Test]
    public void Map_fixed_beyond_task_size_is_enomem()
    {
        ulong top = _p.Mm.TaskSize;
        Assert.Multiple(() =>
        {
            Assert.That(top, Is.EqualTo(0x7fff_ffff_f000UL), "TASK_SIZE with 4-level paging");
            Assert.That(Mmap(top, PageSize, Anon | MapFlags.Fixed, out _), Is.EqualTo(Errno.ENOMEM));
            Assert.That(Mmap(top - PageSize, 2 * PageSize, Anon | MapFlags.Fixed, out _), Is.EqualTo(Errno.ENOMEM), "crossing TASK_SIZE");
            Assert.That(Mmap(1UL << 50, PageSize, Anon | MapFlags.FixedNoReplace, out _), Is.EqualTo(Errno.ENOMEM));
            Assert.That(Mmap(top - PageSize, PageSize, Anon | MapFlags.Fixed, out ulong last), Is.EqualTo(Errno.Success), "the last page is usable");
            Assert.That(last, Is.EqualTo(top - PageSize));
        });
    }

    [Test]
    public void Map_fixed_at_an_unaligned_address_is_einval()
    {
        Assert.That(Mmap(X + 1, PageSize, Anon | MapFlags.Fixed, out _), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Mm.Vmas.Count, Is.Zero);
    }

    [Test]
    public void A_hint_beyond_task_size_is_ignored_rather_than_refused()
    {
        Assert.That(Mmap(1UL << 50, PageSize, Anon, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(a, Is.EqualTo(MmapBase - PageSize));
    }

    [Test]
    public void A_free_hint_is_honoured_and_a_taken_one_is_not()
    {
        Assert.That(Mmap(X, PageSize, Anon, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(a, Is.EqualTo(X));
        Assert.That(Mmap(X, PageSize, Anon, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(b, Is.Not.EqualTo(X), "without MAP_FIXED an occupied hint is only a hint");
        Assert.That(_cpu.TryStore<long>(X, 1), Is.EqualTo(NativeMmu.Cpus.FaultResult.Retry), "the first mapping is intact");
    }

    [Test]
    public void Map_fixed_noreplace_over_a_mapping_is_eexist_and_leaves_it_alone()
    {
        ulong a = MapAt(_p, X, 4 * PageSize);
        _cpu.Store<long>(a + PageSize, 77);
        Assert.Multiple(() =>
        {
            Assert.That(Mmap(a, 4 * PageSize, Anon | MapFlags.FixedNoReplace, out _), Is.EqualTo(Errno.EEXIST));
            Assert.That(Mmap(a + 3 * PageSize, 4 * PageSize, Anon | MapFlags.FixedNoReplace, out _), Is.EqualTo(Errno.EEXIST), "a partial overlap");
            Assert.That(Mmap(a - PageSize, 2 * PageSize, Anon | MapFlags.FixedNoReplace, out _), Is.EqualTo(Errno.EEXIST), "overlapping from below");
            Assert.That(_cpu.Load<long>(a + PageSize), Is.EqualTo(77));
            Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1));
        });
        Assert.That(Mmap(a + 4 * PageSize, PageSize, Anon | MapFlags.FixedNoReplace, out ulong next), Is.EqualTo(Errno.Success), "right above is free");
        Assert.That(next, Is.EqualTo(a + 4 * PageSize));
    }

    [Test]
    public void Map_fixed_over_a_mapping_replaces_it_and_the_old_contents_are_gone()
    {
        ulong a = MapAt(_p, X, 4 * PageSize);
        for (ulong i = 0; i < 4; i++) _cpu.Store<long>(a + i * PageSize, 10 + (long)i);
        long free = TestSupport.SettledFreeFrames(_kernel);

        Assert.That(Mmap(a + PageSize, 2 * PageSize, Anon | MapFlags.Fixed, out ulong b, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(b, Is.EqualTo(a + PageSize));
        Assert.Multiple(() =>
        {
            Assert.That(_cpu.Load<long>(a + PageSize), Is.Zero, "the new mapping starts empty");
            Assert.That(_cpu.Load<long>(a + 2 * PageSize), Is.Zero);
            Assert.That(_cpu.TryStore<long>(a + PageSize, 1), Is.EqualTo(NativeMmu.Cpus.FaultResult.SegvAccerr), "with the new protection");
            Assert.That(_cpu.Load<long>(a), Is.EqualTo(10), "outside the range nothing changed");
            Assert.That(_cpu.Load<long>(a + 3 * PageSize), Is.EqualTo(13));
            Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(3), "rw | r | rw");
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(2));
            Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(free + 2), "the two replaced pages were freed");
            Assert.That(_p.Mm.TotalVm, Is.EqualTo(4), "VmSize counts the range once");
        });
    }

    [Test]
    public void Top_down_placement_starts_at_mmap_base_and_goes_down()
    {
        Assert.That(_p.Mm.MmapBase, Is.EqualTo(MmapBase), "TASK_SIZE minus the 128 MiB stack gap");
        ulong a = _p.Mmap(3 * PageSize);
        ulong b = _p.Mmap(5 * PageSize, Prot.Read); // different protection: stays a separate VMA
        ulong c = _p.Mmap(PageSize);
        Assert.Multiple(() =>
        {
            Assert.That(a, Is.EqualTo(MmapBase - 3 * PageSize), "the first mapping ends at mmap_base");
            Assert.That(b, Is.EqualTo(a - 5 * PageSize), "the next one right below it");
            Assert.That(c, Is.EqualTo(b - PageSize));
        });
    }

    [Test]
    public void Top_down_placement_fills_the_highest_gap_that_fits()
    {
        ulong a = _p.Mmap(PageSize);
        ulong b = _p.Mmap(PageSize, Prot.Read);
        ulong c = _p.Mmap(PageSize);
        Assert.That(_p.Munmap(b, PageSize), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mmap(2 * PageSize), Is.EqualTo(c - 2 * PageSize), "a two-page request does not fit the one-page hole");
        Assert.That(_p.Mmap(PageSize, Prot.Read), Is.EqualTo(b), "a one-page request takes the hole");
        Assert.That(a, Is.EqualTo(MmapBase - PageSize));
    }

    [Test]
    public void A_2MiB_multiple_is_placed_2MiB_aligned()
    {
        ulong small = _p.Mmap(PageSize);
        ulong big = _p.Mmap(2 * PmdSize);
        Assert.That(big % PmdSize, Is.Zero, "thp_get_unmapped_area");
        Assert.That(big + 2 * PmdSize, Is.LessThanOrEqualTo(small));
        Assert.That(small - (big + 2 * PmdSize), Is.LessThan(PmdSize), "as high as the alignment allows");
    }

    [Test]
    public void Adjacent_compatible_mappings_merge_into_one_vma()
    {
        ulong a = _p.Mmap(PageSize);
        ulong b = _p.Mmap(2 * PageSize);
        Assert.That(b + 2 * PageSize, Is.EqualTo(a), "placed right below");
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "vma_merge extended the neighbour");
        Vma v = _p.Mm.Vmas.First!;
        Assert.Multiple(() =>
        {
            Assert.That(v.VmStart, Is.EqualTo(b));
            Assert.That(v.VmEnd, Is.EqualTo(a + PageSize));
            Assert.That(_p.Mm.TotalVm, Is.EqualTo(3));
        });

        // Fill a hole between two VMAs: all three become one.
        MapAt(_p, X, PageSize);
        MapAt(_p, X + 2 * PageSize, PageSize);
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(3));
        MapAt(_p, X + PageSize, PageSize);
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2), "prev and next merged through the new range");
        Assert.That(_p.Mm.Vmas.FindVma(X)!.VmEnd, Is.EqualTo(X + 3 * PageSize));
    }

    [Test]
    public void Mappings_with_different_protections_do_not_merge()
    {
        _p.Mmap(PageSize);
        _p.Mmap(PageSize, Prot.Read);
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2));
        Assert.That(_p.ProcMaps(), Does.Contain(" r--p ").And.Contain(" rw-p "));
    }

    [Test]
    public void Only_writable_private_mappings_without_noreserve_are_accounted()
    {
        ulong rw = _p.Mmap(PageSize);
        ulong ro = _p.Mmap(PageSize, Prot.Read);
        ulong nr = _p.Mmap(PageSize, Prot.ReadWrite, MapFlags.NoReserve);
        Assert.Multiple(() =>
        {
            Assert.That(_p.Mm.Vmas.FindVma(rw)!.VmFlags & VmFlags.Account, Is.EqualTo(VmFlags.Account));
            Assert.That(_p.Mm.Vmas.FindVma(ro)!.VmFlags & VmFlags.Account, Is.EqualTo(VmFlags.None));
            Assert.That(_p.Mm.Vmas.FindVma(nr)!.VmFlags & (VmFlags.Account | VmFlags.NoReserve), Is.EqualTo(VmFlags.NoReserve),
                "accountable_mapping: (flags & (VM_NORESERVE | VM_SHARED | VM_WRITE)) == VM_WRITE");
        });
    }

    [Test]
    public void Map_populate_faults_every_page_in()
    {
        long faults = _kernel.VmstatValue("pgfault");
        ulong a = _p.Mmap(64 * PageSize, Prot.ReadWrite, MapFlags.Populate);
        Assert.Multiple(() =>
        {
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(64), "RSS equals the size");
            Assert.That(StatusKb(_p, "VmRSS"), Is.EqualTo(64 * 4));
            Assert.That(_kernel.VmstatValue("pgfault") - faults, Is.EqualTo(64));
            Assert.That(new Pte(PteOf(_p, a + 63 * PageSize)!.Value).Write, Is.True, "populated for write: no zero page");
        });
        faults = _kernel.VmstatValue("pgfault");
        for (ulong i = 0; i < 64; i++) _cpu.Store<long>(a + i * PageSize, 1);
        Assert.That(_kernel.VmstatValue("pgfault"), Is.EqualTo(faults), "no access faults afterwards");
    }

    [Test]
    public void Map_populate_of_a_read_only_mapping_maps_the_zero_page()
    {
        ulong a = _p.Mmap(4 * PageSize, Prot.Read, MapFlags.Populate);
        Assert.That(_p.Mm.GetMmRss(), Is.Zero);
        Assert.That(new Pte(PteOf(_p, a)!.Value).Pfn, Is.EqualTo(_kernel.Machine.ZeroPfn));
    }
}
