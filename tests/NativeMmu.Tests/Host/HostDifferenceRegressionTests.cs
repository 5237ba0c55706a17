using System.Globalization;
using NativeMmu.Cpus;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Host;

/// <summary>
/// Differences from the host kernel that <c>fuzz host</c> found, each pinned on the emulator alone (so
/// they run where the executor cannot) by the shrunk program's system calls.
/// </summary>
public class HostDifferenceRegressionTests
{
    private static Kernel NewKernel() => new(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 2, DebugVm = true });

    private static long Kb(string text, string key)
    {
        int i = text.IndexOf(key, StringComparison.Ordinal);
        int j = text.IndexOf(" kB", i, StringComparison.Ordinal);
        return long.Parse(text.AsSpan(i + key.Length, j - i - key.Length).Trim(), CultureInfo.InvariantCulture);
    }

    private static long RssAnonKb(Process p) => Kb(p.ProcStatus(), "RssAnon:");

    private static Errno Map(Process p, ulong len, Prot prot, MapFlags extra, out ulong a)
        => p.Mmap(0, len, prot, MapFlags.Private | MapFlags.Anonymous | extra, out a);

    /// <summary>
    /// p0 mmap m1 0x0 0x2000 rw- - / p0 write m1+0x1373 0x11 0x22 / p0 madvise m1+0x1000 0x1000 free /
    /// p0 load1 m1+0x1373: the host keeps a lazily freed page mapped, its contents and its RssAnon until
    /// reclaim (madvise_free_pte_range only clears young and dirty and calls folio_mark_lazyfree); the
    /// emulator used to zap it at once.
    /// </summary>
    [Test]
    public void Madv_free_keeps_the_pages_and_their_contents_without_reclaim()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x2000, Prot.ReadWrite, 0, out ulong a), Is.EqualTo(Errno.Success));
        cpu.Store<byte>(a + 0x1373, 0x22);
        Assert.That(RssAnonKb(p), Is.EqualTo(4));
        Assert.That(p.Madvise(a + 0x1000, 0x1000, Advice.Free), Is.EqualTo(Errno.Success));
        Assert.That(RssAnonKb(p), Is.EqualTo(4));
        Assert.That(cpu.Load<byte>(a + 0x1373), Is.EqualTo(0x22));
        cpu.Store<byte>(a + 0x1374, 0x33); // a write after MADV_FREE is kept, as it always is
        Assert.That(cpu.Load<byte>(a + 0x1374), Is.EqualTo(0x33));
        Assert.That(kernel.CheckInvariants(), Is.Empty);
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x2000 rw- - / p0 write m1+0x1373 0x11 0x22 / p0 madvise m1+0x1000 0x1000 free /
    /// p0 madvise m1+0x1000 0x1000 pageout: host rss=0, emulator rss=4. MADV_PAGEOUT hands the folio to
    /// reclaim, and try_to_unmap_one discards a clean lazily freed folio ("if (ref_count == 1 + map_count
    /// &amp;&amp; !folio_test_dirty(folio)) { dec_mm_counter(mm, MM_ANONPAGES); goto discard; }"): it reads zeroes
    /// afterwards. One written after MADV_FREE is dirty and stays.
    /// </summary>
    [Test]
    public void Madv_pageout_discards_a_clean_lazily_freed_page_and_keeps_a_redirtied_one()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x3000, Prot.ReadWrite, 0, out ulong a), Is.EqualTo(Errno.Success));
        cpu.Store<byte>(a + 0x1373, 0x22);
        cpu.Store<byte>(a + 0x2010, 0x44);
        Assert.That(p.Madvise(a + 0x1000, 0x2000, Advice.Free), Is.EqualTo(Errno.Success));
        cpu.Store<byte>(a + 0x2011, 0x55); // redirties the second page
        Assert.That(p.Madvise(a + 0x1000, 0x2000, Advice.PageOut), Is.EqualTo(Errno.Success));
        Assert.That(RssAnonKb(p), Is.EqualTo(4));
        Assert.That(cpu.Load<byte>(a + 0x1373), Is.Zero);
        Assert.That((cpu.Load<byte>(a + 0x2010), cpu.Load<byte>(a + 0x2011)), Is.EqualTo(((byte)0x44, (byte)0x55)));
        // A page never lazily freed is swap-backed: without swap, pageout keeps it.
        Assert.That(p.Madvise(a + 0x2000, 0x1000, Advice.PageOut), Is.EqualTo(Errno.Success));
        Assert.That(cpu.Load<byte>(a + 0x2010), Is.EqualTo(0x44));
        Assert.That(kernel.CheckInvariants(), Is.Empty);
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 rw- locked / p0 madvise m1 0x1000 pageout: host EINVAL, emulator 0.
    /// madvise_cold and madvise_pageout begin "if (!can_madv_lru_vma(vma)) return -EINVAL;", and
    /// can_madv_lru_vma is "!(vma->vm_flags &amp; (VM_LOCKED|VM_PFNMAP|VM_HUGETLB))".
    /// </summary>
    [TestCase(Advice.PageOut)]
    [TestCase(Advice.Cold)]
    public void Madv_cold_and_pageout_refuse_a_locked_mapping(Advice advice)
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x1000, Prot.ReadWrite, MapFlags.Locked, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(p.Madvise(a, 0x1000, advice), Is.EqualTo(Errno.EINVAL));
        Assert.That(Map(p, 0x1000, Prot.ReadWrite, 0, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(p.Madvise(b, 0x1000, advice), Is.EqualTo(Errno.Success));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 rw- stack: host maps ...:rw-p:nh, emulator -. calc_vm_flag_bits has
    /// "_calc_vm_trans(flags, MAP_STACK, VM_NOHUGEPAGE)" (CONFIG_TRANSPARENT_HUGEPAGE).
    /// </summary>
    [Test]
    public void Map_stack_sets_vm_nohugepage()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x1000, Prot.ReadWrite, MapFlags.Stack, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(p.Mm.Vmas.FindVma(a)!.VmFlags & VmFlags.NoHugePage, Is.EqualTo(VmFlags.NoHugePage));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 r-- sync / p0 mmap m2 0x0 0x1000 r-- -: the host keeps two VMAs, the emulator
    /// merged them. calc_vm_flag_bits has "_calc_vm_trans(flags, MAP_SYNC, VM_SYNC)" for private mappings
    /// too, and VMAs with different flags do not merge.
    /// </summary>
    [Test]
    public void Map_sync_sets_vm_sync_so_the_mapping_does_not_merge_with_a_plain_neighbour()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x1000, Prot.Read, MapFlags.Sync, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(Map(p, 0x1000, Prot.Read, 0, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(b, Is.EqualTo(a - 0x1000), "top-down placement, right below");
        Assert.That(p.Mm.Vmas.FindVma(a)!.VmFlags & VmFlags.Sync, Is.EqualTo(VmFlags.Sync));
        Assert.That(p.Mm.Vmas.FindVma(b)!.VmEnd, Is.EqualTo(a));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 rw- - / p0 mprotect m1-0x1000 0x1000 0x2000007: host ENOMEM, emulator EINVAL.
    /// do_mprotect_pkey strips PROT_GROWSDOWN/PROT_GROWSUP before arch_validate_prot, refuses both together
    /// at once, and otherwise looks for the VMA first ("if (!vma) goto out;" with -ENOMEM) and refuses
    /// the bit only on a VMA that does not grow that way (-EINVAL).
    /// </summary>
    [Test]
    public void Mprotect_with_prot_growsdown_or_growsup_finds_the_vma_before_refusing()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        const Prot growsDown = (Prot)0x01000000, growsUp = (Prot)0x02000000;
        Assert.That(Map(p, 0x1000, Prot.ReadWrite, 0, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(p.Mprotect(a - 0x1000, 0x1000, growsUp | Prot.Read), Is.EqualTo(Errno.ENOMEM));
        Assert.That(p.Mprotect(a - 0x1000, 0x1000, growsDown | Prot.Read), Is.EqualTo(Errno.ENOMEM));
        Assert.That(p.Mprotect(a, 0x1000, growsDown | Prot.Read), Is.EqualTo(Errno.EINVAL));
        Assert.That(p.Mprotect(a, 0x1000, growsUp | Prot.Read), Is.EqualTo(Errno.EINVAL));
        Assert.That(p.Mprotect(a + 1, 0x1000, growsUp | growsDown), Is.EqualTo(Errno.EINVAL), "both: before the alignment check");
        Assert.That(p.Mprotect(a - 0x1000, 0, growsUp | growsDown), Is.EqualTo(Errno.EINVAL));
        Assert.That(p.Mprotect(a - 0x1000, 0, growsUp), Is.EqualTo(Errno.Success));
        // A VM_GROWSDOWN VMA takes PROT_GROWSDOWN, from its own start.
        Assert.That(Map(p, 0x2000, Prot.ReadWrite, MapFlags.GrowsDown, out ulong g), Is.EqualTo(Errno.Success));
        Assert.That(p.Mprotect(g + 0x1000, 0x1000, growsDown | Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(p.Mm.Vmas.FindVma(g)!.FlagsString(), Is.EqualTo("r--p"));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 --- locked / p0 mprotect m1 0x1000 rwx: host rss=4, emulator 0. mprotect_fixup:
    /// "if ((oldflags &amp; (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED &amp;&amp; (newflags &amp; VM_WRITE))
    /// populate_vma_page_range(vma, start, end, NULL);": a locked mapping made writable is write-faulted in.
    /// </summary>
    [Test]
    public void Mprotect_making_a_locked_mapping_writable_populates_it()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x3000, Prot.None, MapFlags.Locked, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(RssAnonKb(p), Is.Zero);
        Assert.That(p.Mprotect(a, 0x2000, Prot.Read | Prot.Write | Prot.Exec), Is.EqualTo(Errno.Success));
        Assert.That(RssAnonKb(p), Is.EqualTo(8));
        Assert.That(Map(p, 0x1000, Prot.Read, 0, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(p.Mprotect(b, 0x1000, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Assert.That(RssAnonKb(p), Is.EqualTo(8), "not locked: nothing is faulted in");
        Assert.That(kernel.CheckInvariants(), Is.Empty);
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 r-- locked / p0 fork p1 / p1 mmap m2 0x0 0x1000 r-- -: the host's child merges
    /// m2 with its copy of m1, the emulator's did not. dup_mmap: "vm_flags_clear(tmp, VM_LOCKED_MASK);".
    /// </summary>
    [Test]
    public void Fork_does_not_pass_mlock_on_to_the_child()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x1000, Prot.Read, MapFlags.Locked, out ulong a), Is.EqualTo(Errno.Success));
        Process child = p.Fork();
        Assert.That(p.Mm.Vmas.FindVma(a)!.VmFlags & VmFlags.Locked, Is.EqualTo(VmFlags.Locked));
        Assert.That(child.Mm.Vmas.FindVma(a)!.VmFlags & (VmFlags.Locked | VmFlags.LockOnFault), Is.EqualTo(VmFlags.None));
        child.Enter(cpu);
        Assert.That(Map(child, 0x1000, Prot.Read, 0, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(b, Is.EqualTo(a - 0x1000));
        Assert.That(child.Mm.Vmas.FindVma(b)!.VmEnd, Is.EqualTo(a + 0x1000), "merged with the copy of m1");
        child.Exit();
        p.Enter(cpu);
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x600000 rw- - / madvise m1 0x600000 hugepage / store8 m1, m1+0x200000, m1+0x400000 /
    /// madvise m1+0x1000 0x1000 free: host rss=4100 kB, emulator 6144. madvise_free_huge_pmd splits a THP
    /// the range covers in part ("split_folio(folio)"), and the split remaps every zero-filled subpage to
    /// the shared zero page (remap_page with RMP_USE_SHARED_ZEROPAGE, try_to_map_unused_to_zeropage),
    /// which leaves RssAnon: of the 2 MiB only the written page stays. MADV_COLD over part of a THP does
    /// the same; a THP another process maps is left alone.
    /// </summary>
    [TestCase(Advice.Free)]
    [TestCase(Advice.Cold)]
    [TestCase(Advice.PageOut)]
    public void Madvise_over_part_of_a_thp_splits_it_and_maps_its_zero_subpages_to_the_zero_page(Advice advice)
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(Map(p, 0x400000, Prot.ReadWrite, 0, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(a % 0x200000, Is.Zero);
        Assert.That(p.Madvise(a, 0x400000, Advice.HugePage), Is.EqualTo(Errno.Success));
        cpu.Store<ulong>(a, 1);
        cpu.Store<ulong>(a + 0x200000, 2);
        Assert.That((RssAnonKb(p), Kb(p.ProcSmapsRollup(), "AnonHugePages:")), Is.EqualTo((4096L, 4096L)));
        Assert.That(p.Madvise(a + 0x1000, 0x1000, advice), Is.EqualTo(Errno.Success));
        Assert.That((RssAnonKb(p), Kb(p.ProcSmapsRollup(), "AnonHugePages:")), Is.EqualTo((2052L, 2048L)));
        Assert.That((cpu.Load<ulong>(a), cpu.Load<ulong>(a + 0x1000), cpu.Load<ulong>(a + 0x1ff000)), Is.EqualTo((1UL, 0UL, 0UL)));
        cpu.Store<ulong>(a + 0x1000, 3); // a write to a zero-page subpage faults in a page of its own
        Assert.That((RssAnonKb(p), cpu.Load<ulong>(a + 0x1000)), Is.EqualTo((2056L, 3UL)));

        // Shared with a fork child: "if (folio_maybe_mapped_shared(folio)) goto out;" — nothing changes.
        Process child = p.Fork();
        Assert.That(p.Madvise(a + 0x201000, 0x1000, advice), Is.EqualTo(Errno.Success));
        Assert.That((RssAnonKb(p), Kb(p.ProcSmapsRollup(), "AnonHugePages:")), Is.EqualTo((2056L, 2048L)));
        child.Enter(cpu);
        child.Exit();
        p.Enter(cpu);
        Assert.That(kernel.CheckInvariants(), Is.Empty);
        p.Exit();
    }
}
