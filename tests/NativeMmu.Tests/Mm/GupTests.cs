using NativeMmu.Cpus;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// get_user_pages and pins beyond cow.c's matrix. FOLL_FORCE (ptrace's poke): a write into a private
/// mapping that may be written but is read-only now breaks COW, and GUP then follows the exclusive copy
/// although its entry stays read-only (can_follow_write_pte / _pmd); without that rule the lookup would
/// fault forever, so each lookup runs on a CPU thread with a deadline. And fork's batched copy of a
/// PTE-mapped THP falls back page by page when the folio may be pinned.
/// </summary>
[TestFixture(CowPteMode.Off)]
[TestFixture(CowPteMode.Lazy)]
[TestFixture(CowPteMode.Eager)]
public class GupTests(CowPteMode cowPte)
{
    private const ulong M2 = 2UL << 20;

    [TestCase(false)]
    [TestCase(true)]
    public void A_forced_write_into_a_read_only_private_mapping_breaks_cow_and_the_process_reads_the_poke(bool thp)
    {
        using var lease = new KernelLease(new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, CowPte = cowPte, CowPteAllProcesses = cowPte != CowPteMode.Off }));
        Kernel k = lease.Kernel;
        Process p = k.CreateProcess();
        ulong a = p.Mmap(2 * M2, Prot.Read);
        if (thp) Assert.That(p.Madvise(a, 2 * M2, Advice.HugePage), Is.EqualTo(Errno.Success));
        ulong target = a + 5 * TestSupport.PageSize;
        Errno plain = Errno.Success, forced = Errno.Success;
        UserPages? pages = null;
        lease.RunOnCpus(p, cpu =>
        {
            Assert.That(cpu.Load<long>(target), Is.Zero, "the (huge) zero page");
            plain = p.GetUserPages(target, 1, Foll.Write, out UserPages? none);
            none?.Dispose();
            forced = p.GetUserPages(target, 1, Foll.Write | Foll.Force, out pages);
        });
        Assert.That(plain, Is.EqualTo(Errno.EFAULT), "FOLL_WRITE alone needs VM_WRITE");
        Assert.That(forced, Is.EqualTo(Errno.Success));
        using (pages)
        {
            Assert.That(pages!.Pfn(0), Is.Not.EqualTo(k.Machine.ZeroPfn), "COW broken: a private page");
            pages.Write(0, 0, 42L);
        }
        lease.RunOnCpus(p, cpu =>
        {
            Assert.That(cpu.Load<long>(target), Is.EqualTo(42), "the process reads what was poked");
            Assert.That(cpu.TryStore<long>(target, 1), Is.EqualTo(FaultResult.SegvAccerr), "and its mapping stays read-only");
        });
        Assert.That(k.VmstatValue("thp_fault_alloc"), Is.EqualTo(thp ? 1 : 0));
        Assert.That(k.CheckInvariants(), Is.Empty);
        p.Exit();
    }

    [Test]
    public void Fork_copies_every_page_of_a_pte_mapped_thp_that_may_be_pinned_and_shares_an_unpinned_one()
    {
        using var k = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, CowPte = cowPte, CowPteAllProcesses = cowPte != CowPteMode.Off });
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(2 * M2);
        Assert.That(p.Madvise(a, 2 * M2, Advice.HugePage), Is.EqualTo(Errno.Success));
        for (ulong off = 0; off < 2 * M2; off += TestSupport.PageSize) cpu.Store<long>(a + off, (long)off);
        // PTE-map both THPs (cow.c's trick), then pin one page of the first.
        foreach (ulong thp in new[] { a, a + M2 })
        {
            Assert.That(p.Mprotect(thp + TestSupport.PageSize, TestSupport.PageSize, Prot.Read), Is.EqualTo(Errno.Success));
            Assert.That(p.Mprotect(thp + TestSupport.PageSize, TestSupport.PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        }
        Assert.That(p.PinUserPages(a + 7 * TestSupport.PageSize, 1, Foll.Longterm | Foll.Write, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            Process child = p.Fork();
            Assert.That(k.CheckInvariants(), Is.Empty);
            for (ulong off = 0; off < 2 * M2; off += 64 * TestSupport.PageSize)
            {
                ulong parentPfn = TestSupport.PteOf(p, a + off)!.Value & 0x000F_FFFF_FFFF_F000;
                ulong childPfn = TestSupport.PteOf(child, a + off)!.Value & 0x000F_FFFF_FFFF_F000;
                if (off < M2) Assert.That(childPfn, Is.Not.EqualTo(parentPfn), $"+{off:x}: the maybe-pinned folio is copied page by page");
                else Assert.That(childPfn, Is.EqualTo(parentPfn), $"+{off:x}: the other folio is shared in one batch");
            }
            cpu.Store<long>(a + 7 * TestSupport.PageSize, -1);
            Assert.That(pin!.Read<long>(0), Is.EqualTo(-1L), "the pin still sees the parent's writes");
            child.Enter(cpu);
            Assert.That(cpu.Load<long>(a + 7 * TestSupport.PageSize), Is.EqualTo(7L * (long)TestSupport.PageSize));
            Assert.That(cpu.Load<long>(a + M2 + 9 * TestSupport.PageSize), Is.EqualTo((long)(M2 + 9 * TestSupport.PageSize)));
            p.Enter(cpu);
            child.Exit();
        }
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
    }
}
