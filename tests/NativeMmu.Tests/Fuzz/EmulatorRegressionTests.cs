using NativeMmu.Cpus;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Fuzz;

/// <summary>Differences from Linux the system fuzzer found, each pinned by the shrunk program's system calls.</summary>
public class EmulatorRegressionTests
{
    private static Kernel NewKernel() => new(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true });

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 rw- - / p0 store2 m1+0xfff 0x0: the store faults on the second page, so si_addr
    /// (CR2) is that page's first byte, not the store's own address.
    /// </summary>
    [Test]
    public void A_scalar_that_faults_on_its_second_page_reports_that_page()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(2 * 4096);
        Assert.That(p.Munmap(a + 4096, 4096), Is.EqualTo(Errno.Success));

        var store = Assert.Throws<SegmentationFault>(() => cpu.Store<ushort>(a + 0xfff, 0))!;
        Assert.That((store.Address, store.Code), Is.EqualTo((a + 0x1000, (SegvCode?)SegvCode.MapErr)));
        var load = Assert.Throws<SegmentationFault>(() => cpu.Load<ulong>(a + 0xffc))!;
        Assert.That((load.Address, load.Code), Is.EqualTo((a + 0x1000, (SegvCode?)SegvCode.MapErr)));
        Assert.That(cpu.Load<ushort>(a + 0xfff - 1), Is.Zero, "the first page itself is fine");

        // When the first page faults, the access's own address is reported.
        Assert.That(p.Mprotect(a, 4096, Prot.None), Is.EqualTo(Errno.Success));
        var first = Assert.Throws<SegmentationFault>(() => cpu.Load<uint>(a + 0xffe))!;
        Assert.That((first.Address, first.Code), Is.EqualTo((a + 0xffe, (SegvCode?)SegvCode.AccErr)));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 0x103 -: do_mmap does not validate prot; bits beyond R/W/X are ignored
    /// (mprotect is the call that refuses them).
    /// </summary>
    [Test]
    public void Mmap_ignores_prot_bits_beyond_read_write_exec()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Errno e = p.Mmap(0, 4096, (Prot)0x103, MapFlags.Private | MapFlags.Anonymous, out ulong a);
        Assert.That(e, Is.EqualTo(Errno.Success));
        cpu.Store<int>(a, 7);
        Assert.That(p.Mm.Vmas.FindVma(a)!.FlagsString(), Is.EqualTo("rw-p"));
        Assert.That(p.Mmap(0, 4096, (Prot)0x8, MapFlags.Private | MapFlags.Anonymous, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(p.Mm.Vmas.FindVma(b)!.FlagsString(), Is.EqualTo("---p"));
        p.Exit();
    }

    /// <summary>
    /// p0 mprotect 0x0 0xf48 0x8: arch_validate_prot accepts PROT_SEM, so the call goes on to find no
    /// mapping (ENOMEM); over a mapping it succeeds and changes the protection to the R/W/X bits given.
    /// </summary>
    [Test]
    public void Mprotect_accepts_prot_sem()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(p.Mprotect(0, 0xf48, (Prot)0x8), Is.EqualTo(Errno.ENOMEM));
        ulong a = p.Mmap(4096);
        Assert.That(p.Mprotect(a, 4096, Prot.Read | (Prot)0x8), Is.EqualTo(Errno.Success));
        Assert.That(p.Mm.Vmas.FindVma(a)!.FlagsString(), Is.EqualTo("r--p"));
        Assert.That(p.Mprotect(a, 4096, Prot.Read | (Prot)0x10), Is.EqualTo(Errno.EINVAL), "other bits are still refused");
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x123 0x200000 rw- -: round_hint_to_min masks the hint to a page first, so 0x123 is
    /// no hint at all and the 2 MiB mapping is placed top-down, THP aligned (not at mmap_min_addr).
    /// </summary>
    [Test]
    public void A_hint_inside_page_zero_is_no_hint()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(p.Mmap(0x123, 2UL << 20, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(a % (2UL << 20), Is.Zero);
        Assert.That(a, Is.GreaterThan(1UL << 40), "placed top-down, not at the hint");
        // A hint in [4096, mmap_min_addr) is still raised to mmap_min_addr.
        Assert.That(p.Mmap(0x1000, 4096, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(b, Is.EqualTo(NativeMmu.Mm.Mmap.MmapMinAddr));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x7fffffffe001 0x2000 rw- fixed: __get_unmapped_area tests addr &gt; TASK_SIZE - len (ENOMEM)
    /// before offset_in_page (EINVAL).
    /// </summary>
    [Test]
    public void Map_fixed_checks_the_range_before_the_alignment()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        const MapFlags fixedAnon = MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed;
        Assert.That(p.Mmap(0x7fffffffe001, 0x2000, Prot.ReadWrite, fixedAnon, out _), Is.EqualTo(Errno.ENOMEM));
        Assert.That(p.Mmap(0x7fffffffc001, 0x2000, Prot.ReadWrite, fixedAnon, out _), Is.EqualTo(Errno.EINVAL));
        p.Exit();
    }

    /// <summary>
    /// p0 mmap m1 0x0 0x1000 rw- noreplace: a fixed mapping below vm.mmap_min_addr is refused with EPERM
    /// (cap_mmap_addr) for a task without CAP_SYS_RAWIO; at mmap_min_addr it is fine.
    /// </summary>
    [Test]
    public void Map_fixed_below_mmap_min_addr_is_refused()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        const MapFlags anon = MapFlags.Private | MapFlags.Anonymous;
        Assert.That(p.Mmap(0, 0x1000, Prot.ReadWrite, anon | MapFlags.FixedNoReplace, out _), Is.EqualTo(Errno.EPERM));
        Assert.That(p.Mmap(0xf000, 0x1000, Prot.ReadWrite, anon | MapFlags.Fixed, out _), Is.EqualTo(Errno.EPERM));
        Assert.That(p.Mm.Vmas.Count, Is.Zero);
        Assert.That(p.Mmap(0x10000, 0x1000, Prot.ReadWrite, anon | MapFlags.Fixed, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(a, Is.EqualTo(0x10000UL));
        p.Exit();
    }

    /// <summary>
    /// fuzz host: p0 mmap m1 0x0 0x1000 rw- populate / p0 fork p1 / p1 mmap m2 0x0 0x1000 rw- -: the
    /// child's copy of m1 has an anon_vma chained to its parent's, and mm/vma.c is_mergeable_anon_vma
    /// refuses to merge such a fork child with a VMA that has none ("if (tgt_anon &amp;&amp; !src_anon) return
    /// !vma_is_fork_child(tgt);", and the mirror case for src), so Linux shows two VMAs where the
    /// emulator showed one. The parent's own VMA is no fork child and still merges.
    /// </summary>
    [Test]
    public void A_fork_childs_faulted_vma_does_not_merge_with_a_new_neighbour()
    {
        using Kernel kernel = NewKernel();
        Process parent = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        parent.Enter(cpu);
        Assert.That(parent.Mmap(0, 2 * 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Populate, out ulong a), Is.EqualTo(Errno.Success));
        Process child = parent.Fork();
        child.Enter(cpu);
        Assert.That(child.Mmap(0, 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous, out ulong b), Is.EqualTo(Errno.Success));
        Assert.That(b, Is.EqualTo(a - 4096));
        Assert.That(child.Mm.Vmas.Count, Is.EqualTo(2), "the fork child's VMA stays apart");
        // A fixed mapping over part of the forked VMA splits it and does not merge back.
        Assert.That(child.Mmap(a + 4096, 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed, out _), Is.EqualTo(Errno.Success));
        Assert.That(child.Mm.Vmas.Count, Is.EqualTo(3));
        child.Exit();

        parent.Enter(cpu);
        Assert.That(parent.Mmap(0, 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous, out ulong c), Is.EqualTo(Errno.Success));
        Assert.That(c, Is.EqualTo(a - 4096));
        Assert.That(parent.Mm.Vmas.Count, Is.EqualTo(1), "the parent's VMA is no fork child: it merges");
        parent.Exit();
    }

    /// <summary>
    /// fuzz host: p0 mmap m10 0x0 0x2000 -wx - / p0 mmap m11 0x0 0x1000 rw- - / p0 store1 m11 0x0 /
    /// p0 store1 m10+0x15b8 0x0 / p0 mprotect m11 0x2000 r--: m10's first fault finds m11 next to it,
    /// differing only in VM_ACCESS_FLAGS, and __anon_vma_prepare takes m11's anon_vma
    /// (mm/vma.c find_mergeable_anon_vma → reusable_anon_vma → anon_vma_compatible:
    /// "!((a->vm_flags ^ b->vm_flags) &amp; ~(VM_ACCESS_FLAGS | VM_SOFTDIRTY))"), so once mprotect makes
    /// the protections equal the two merge: Linux shows one r-- VMA where the emulator showed two.
    /// </summary>
    [Test]
    public void Neighbours_differing_only_in_protection_share_an_anon_vma_and_merge_after_mprotect()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(p.Mmap(0, 2 * 4096, Prot.Write | Prot.Exec, MapFlags.Private | MapFlags.Anonymous, out ulong m10), Is.EqualTo(Errno.Success));
        Assert.That(p.Mmap(0, 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous, out ulong m11), Is.EqualTo(Errno.Success));
        Assert.That(m11, Is.EqualTo(m10 - 4096));
        cpu.Store<byte>(m11, 0);
        cpu.Store<byte>(m10 + 0x15b8, 0);
        Assert.That(p.Mm.Vmas.FindVma(m10)!.AnonVma, Is.SameAs(p.Mm.Vmas.FindVma(m11)!.AnonVma));
        Assert.That(p.Mprotect(m11, 2 * 4096, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(p.ProcMaps(), Does.StartWith($"{m11:x8}-{m10 + 4096:x8} r--p"));
        Assert.That(p.Mm.Vmas.Count, Is.EqualTo(2));
        p.Exit();
    }

    /// <summary>
    /// fuzz host: p0 mmap m1 0x0 0x1000 r-- - / p0 madvise m1 0x1000 populate_write (host EINVAL,
    /// emulator EFAULT); p0 mmap m1 0x0 0x1000 -w- - / populate_read (host EINVAL, emulator 0);
    /// p0 mmap m1 0x10001000 0x1000 rw- - / p0 mmap m3 m1 ... / madvise m1 0x442000 populate_write over
    /// a hole and another mapping (host ENOMEM with only m1 populated, emulator EFAULT or both
    /// populated). mm/gup.c __get_user_pages with FOLL_MADV_POPULATE: "vma = vma_lookup(mm, start);
    /// if (!vma) { ret = -ENOMEM; goto out; } if (check_vma_flags(vma, gup_flags)) { ret = -EINVAL;
    /// goto out; }", over the whole range at once (madvise_populate), and check_vma_flags wants VM_READ
    /// for a read without FOLL_FORCE.
    /// </summary>
    [Test]
    public void Madv_populate_is_einval_without_the_access_and_stops_at_the_first_hole_with_enomem()
    {
        using Kernel kernel = NewKernel();
        Process p = kernel.CreateProcess();
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong r = p.Mmap(4096, Prot.Read);
        ulong w = p.Mmap(4096, Prot.Write);
        ulong x = p.Mmap(4096, Prot.Exec);
        ulong none = p.Mmap(4096, Prot.None);
        Assert.That(p.Madvise(r, 4096, Advice.PopulateWrite), Is.EqualTo(Errno.EINVAL));
        Assert.That(p.Madvise(r, 4096, Advice.PopulateRead), Is.EqualTo(Errno.Success));
        Assert.That(p.Madvise(w, 4096, Advice.PopulateRead), Is.EqualTo(Errno.EINVAL));
        Assert.That(p.Madvise(w, 4096, Advice.PopulateWrite), Is.EqualTo(Errno.Success));
        Assert.That(p.Madvise(x, 4096, Advice.PopulateRead), Is.EqualTo(Errno.EINVAL));
        Assert.That(p.Madvise(none, 4096, Advice.PopulateRead), Is.EqualTo(Errno.EINVAL));

        Assert.That(p.Mmap(0x10003000, 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed, out ulong m1), Is.EqualTo(Errno.Success));
        Assert.That(p.Mmap(0x10028000, 4096, Prot.Read | Prot.Write, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed, out _), Is.EqualTo(Errno.Success));
        long before = p.Mm.GetMmCounter(MmCounter.AnonPages);
        Assert.That(p.Madvise(m1, 0x442000, Advice.PopulateWrite), Is.EqualTo(Errno.ENOMEM));
        Assert.That(p.Mm.GetMmCounter(MmCounter.AnonPages) - before, Is.EqualTo(1), "the mapping after the hole is not populated");
        Assert.That(p.Madvise(m1 - 4096, 2 * 4096, Advice.PopulateRead), Is.EqualTo(Errno.ENOMEM), "a hole at the start");
        p.Exit();
    }

    /// <summary>
    /// cowpte eager all / p0 fork p3 / p0 prctl cow_pte, and cowpte lazy / p0 prctl cow_pte 0x100: the
    /// series' prctl_set_cow_pte (v5, kernel/sys.c) takes the mm only, so arg2 plays no part, and refuses
    /// with EINVAL an mm that already has MMF_COW_PTE; the emulator checked the unused arguments and
    /// returned 0 after a sharing fork.
    /// </summary>
    [TestCase(false)]
    [TestCase(true)]
    public void Prctl_set_cow_pte_ignores_arg2_and_is_einval_once_the_mm_shares(bool allProcesses)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, CowPte = CowPteMode.Eager, CowPteAllProcesses = allProcesses });
        Process p = kernel.CreateProcess();
        if (!allProcesses) Assert.That(p.Prctl(Prctl.PR_SET_COW_PTE, 0x100), Is.EqualTo(Errno.Success), "arg2 is not looked at");
        Process child = p.Fork();
        Assert.That(p.Mm.CowPte && child.Mm.CowPte, Is.True);
        Assert.That(p.Prctl(Prctl.PR_SET_COW_PTE), Is.EqualTo(Errno.EINVAL), "the parent has MMF_COW_PTE");
        Assert.That(child.Prctl(Prctl.PR_SET_COW_PTE), Is.EqualTo(Errno.EINVAL), "the child inherited it");
        Assert.That(p.Mm.CowPteReady || child.Mm.CowPteReady, Is.False, "nothing armed");
        child.Exit();
        p.Exit();
    }
}
