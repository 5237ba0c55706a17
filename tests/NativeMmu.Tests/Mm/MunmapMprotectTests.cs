using NativeMmu.Cpus;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>munmap(2) and mprotect(2): Linux's errno rules, splitting and merging.</summary>
public class MunmapMprotectTests : OneProcessFixture
{
    private const ulong X = 0x2000_0000;


    private bool Writable(ulong va) => _cpu.TryStore<byte>(va, 1) == FaultResult.Retry;

    // ---- munmap ------------------------------------------------------------------------------

    [Test]
    public void Munmap_of_an_unaligned_address_is_einval()
    {
        ulong a = _p.Mmap(2 * PageSize);
        Assert.That(_p.Munmap(a + 1, PageSize), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "nothing was unmapped");
    }

    [Test]
    public void Munmap_of_zero_length_is_einval()
    {
        ulong a = _p.Mmap(PageSize);
        Assert.That(_p.Munmap(a, 0), Is.EqualTo(Errno.EINVAL));
    }

    [Test]
    public void Munmap_beyond_task_size_is_einval()
    {
        Assert.That(_p.Munmap(1UL << 48, PageSize), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Munmap(_p.Mm.TaskSize - PageSize, 2 * PageSize), Is.EqualTo(Errno.EINVAL), "len > TASK_SIZE - start");
    }

    [Test]
    public void Munmap_of_an_unmapped_range_succeeds()
    {
        Assert.That(_p.Munmap(X, 16 * PageSize), Is.EqualTo(Errno.Success));
        ulong a = _p.Mmap(PageSize);
        Assert.That(_p.Munmap(a, PageSize), Is.EqualTo(Errno.Success));
        Assert.That(_p.Munmap(a, PageSize), Is.EqualTo(Errno.Success), "a second munmap of the same range");
    }

    [Test]
    public void Munmap_rounds_the_length_up_to_whole_pages()
    {
        ulong a = MapAt(_p, X, 3 * PageSize);
        Assert.That(_p.Munmap(a, PageSize + 1), Is.EqualTo(Errno.Success));
        Assert.That(_cpu.TryLoad<byte>(a + PageSize, out _), Is.EqualTo(FaultResult.SegvMaperr));
        Assert.That(_cpu.TryLoad<byte>(a + 2 * PageSize, out _), Is.EqualTo(FaultResult.Retry));
    }

    [Test]
    public void Munmap_of_the_middle_splits_the_vma_in_two()
    {
        ulong a = MapAt(_p, X, 8 * PageSize);
        for (ulong i = 0; i < 8; i++) _cpu.Store<long>(a + i * PageSize, (long)i + 1);
        Assert.That(_p.Munmap(a + 2 * PageSize, 3 * PageSize), Is.EqualTo(Errno.Success));
        Assert.Multiple(() =>
        {
            Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2));
            Assert.That(_p.Mm.Vmas.First!.VmEnd, Is.EqualTo(a + 2 * PageSize));
            Assert.That(_p.Mm.Vmas.Last!.VmStart, Is.EqualTo(a + 5 * PageSize));
            Assert.That(_p.Mm.TotalVm, Is.EqualTo(5));
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(5));
            Assert.That(_cpu.Load<long>(a + PageSize), Is.EqualTo(2));
            Assert.That(_cpu.Load<long>(a + 5 * PageSize), Is.EqualTo(6));
            Assert.That(_cpu.TryLoad<long>(a + 3 * PageSize, out _), Is.EqualTo(FaultResult.SegvMaperr));
        });
    }

    [Test]
    public void Munmap_across_several_vmas_and_holes_removes_them_all()
    {
        MapAt(_p, X, 2 * PageSize);
        MapAt(_p, X + 3 * PageSize, 2 * PageSize, Prot.Read);
        MapAt(_p, X + 6 * PageSize, 2 * PageSize);
        Assert.That(_p.Munmap(X + PageSize, 6 * PageSize), Is.EqualTo(Errno.Success));
        Assert.Multiple(() =>
        {
            Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2));
            Assert.That(_p.Mm.Vmas.First!.VmEnd, Is.EqualTo(X + PageSize));
            Assert.That(_p.Mm.Vmas.Last!.VmStart, Is.EqualTo(X + 7 * PageSize));
            Assert.That(_p.Mm.TotalVm, Is.EqualTo(2));
        });
    }

    // ---- mprotect ----------------------------------------------------------------------------

    [Test]
    public void Mprotect_of_an_unaligned_address_is_einval()
    {
        ulong a = _p.Mmap(2 * PageSize);
        Assert.That(_p.Mprotect(a + 8, PageSize, Prot.Read), Is.EqualTo(Errno.EINVAL));
        Assert.That(Writable(a), Is.True, "nothing changed");
    }

    [Test]
    public void Mprotect_of_zero_length_succeeds_and_does_nothing()
    {
        Assert.That(_p.Mprotect(X, 0, Prot.Read), Is.EqualTo(Errno.Success), "even where nothing is mapped");
    }

    [Test]
    public void Mprotect_with_unknown_prot_bits_is_einval()
    {
        ulong a = _p.Mmap(PageSize);
        Assert.That(_p.Mprotect(a, PageSize, (Prot)0x40), Is.EqualTo(Errno.EINVAL));
    }

    [Test]
    public void Mprotect_of_an_unmapped_range_is_enomem()
    {
        Assert.That(_p.Mprotect(X, PageSize, Prot.Read), Is.EqualTo(Errno.ENOMEM));
    }

    [Test]
    public void Mprotect_across_a_hole_is_enomem_after_changing_the_part_before_it()
    {
        MapAt(_p, X, 2 * PageSize);
        MapAt(_p, X + 3 * PageSize, PageSize);
        Assert.That(_p.Mprotect(X, 4 * PageSize, Prot.Read), Is.EqualTo(Errno.ENOMEM));
        Assert.Multiple(() =>
        {
            Assert.That(Writable(X), Is.False, "the VMA before the hole was changed");
            Assert.That(Writable(X + PageSize), Is.False);
            Assert.That(Writable(X + 3 * PageSize), Is.True, "the VMA after the hole was not reached");
            Assert.That(_p.Mm.Vmas.First!.VmFlags & VmFlags.Write, Is.EqualTo(VmFlags.None));
        });
    }

    [Test]
    public void Mprotect_starting_in_a_hole_is_enomem_and_changes_nothing()
    {
        MapAt(_p, X + PageSize, PageSize);
        Assert.That(_p.Mprotect(X, 2 * PageSize, Prot.Read), Is.EqualTo(Errno.ENOMEM));
        Assert.That(Writable(X + PageSize), Is.True);
    }

    [Test]
    public void Mprotect_running_past_the_last_vma_is_enomem_after_changing_it()
    {
        MapAt(_p, X, PageSize);
        Assert.That(_p.Mprotect(X, 2 * PageSize, Prot.Read), Is.EqualTo(Errno.ENOMEM));
        Assert.That(Writable(X), Is.False);
    }

    [Test]
    public void Mprotect_of_part_of_a_vma_splits_it_and_undoing_it_merges_it_back()
    {
        ulong a = MapAt(_p, X, 8 * PageSize);
        _cpu.Store<long>(a, 1); // the anon_vma exists before the split, so every part shares it
        Assert.That(_p.Mprotect(a + 2 * PageSize, 2 * PageSize, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(3));
        Assert.Multiple(() =>
        {
            Assert.That(Writable(a + PageSize), Is.True);
            Assert.That(Writable(a + 2 * PageSize), Is.False);
            Assert.That(Writable(a + 3 * PageSize), Is.False);
            Assert.That(Writable(a + 4 * PageSize), Is.True);
        });
        Assert.That(_p.Mprotect(a + 2 * PageSize, 2 * PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "identical neighbours merge again");
        Assert.That(Writable(a + 2 * PageSize), Is.True);
    }

    [Test]
    public void When_the_neighbours_have_different_anon_vmas_the_range_merges_into_the_previous_vma_only()
    {
        ulong a = MapAt(_p, X, 8 * PageSize);
        Assert.That(_p.Mprotect(a + 2 * PageSize, 2 * PageSize, Prot.Read), Is.EqualTo(Errno.Success));
        // Faults after the split: each outer part gets an anon_vma of its own.
        _cpu.Store<long>(a, 1);
        _cpu.Store<long>(a + 4 * PageSize, 2);
        Assert.That(_p.Mm.Vmas.First!.AnonVma, Is.Not.SameAs(_p.Mm.Vmas.Last!.AnonVma));

        Assert.That(_p.Mprotect(a + 2 * PageSize, 2 * PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        // vma_merge_existing_range: all three cannot merge (two anon_vmas), and then the left merge wins.
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2));
        Assert.Multiple(() =>
        {
            Assert.That(_p.Mm.Vmas.First!.VmStart, Is.EqualTo(a));
            Assert.That(_p.Mm.Vmas.First!.VmEnd, Is.EqualTo(a + 4 * PageSize), "the range joined the previous VMA");
            Assert.That(_p.Mm.Vmas.Last!.VmStart, Is.EqualTo(a + 4 * PageSize));
            Assert.That(_cpu.Load<long>(a), Is.EqualTo(1));
            Assert.That(_cpu.Load<long>(a + 4 * PageSize), Is.EqualTo(2));
        });
    }

    [Test]
    public void Making_a_private_mapping_writable_accounts_it_so_it_merges_with_a_writable_neighbour()
    {
        MapAt(_p, X, PageSize);
        MapAt(_p, X + PageSize, PageSize, Prot.Read);
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2));
        Assert.That(_p.Mm.Vmas.Last!.VmFlags & VmFlags.Account, Is.EqualTo(VmFlags.None), "a read-only private mapping is not accounted");

        Assert.That(_p.Mprotect(X + PageSize, PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "mprotect_fixup sets VM_ACCOUNT, so the flags match");
        Assert.That(_p.Mm.Vmas.First!.VmFlags & VmFlags.Account, Is.EqualTo(VmFlags.Account));
    }

    [Test]
    public void Write_protecting_untouched_memory_drops_its_accounting_so_it_merges_with_a_read_only_neighbour()
    {
        MapAt(_p, X, PageSize);
        MapAt(_p, X + PageSize, PageSize, Prot.Read);
        Assert.That(_p.Mprotect(X, PageSize, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "no anon_vma yet: VM_ACCOUNT is dropped and the flags match");
        Assert.That(_p.Mm.Vmas.First!.VmFlags & VmFlags.Account, Is.EqualTo(VmFlags.None));
    }

    [Test]
    public void Write_protecting_memory_that_has_pages_keeps_its_accounting()
    {
        MapAt(_p, X, PageSize);
        _cpu.Store<long>(X, 1);
        MapAt(_p, X + PageSize, PageSize, Prot.Read);
        Assert.That(_p.Mprotect(X, PageSize, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mm.Vmas.First!.VmFlags & VmFlags.Account, Is.EqualTo(VmFlags.Account), "the commit cannot be given back once pages exist");
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(2));
    }

    [Test]
    public void Mprotect_rounds_the_length_up_to_whole_pages()
    {
        ulong a = MapAt(_p, X, 3 * PageSize);
        Assert.That(_p.Mprotect(a, PageSize + 1, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(Writable(a + PageSize), Is.False);
        Assert.That(Writable(a + 2 * PageSize), Is.True);
    }
}
