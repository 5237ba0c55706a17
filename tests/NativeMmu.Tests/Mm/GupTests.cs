using NativeMmu.Cpu;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// get_user_pages with FOLL_FORCE (ptrace's poke): a write into a private mapping that may be written but
/// is read-only now breaks COW, and GUP then follows the exclusive copy although its entry stays
/// read-only (can_follow_write_pte / _pmd). Without that rule the lookup would fault forever, so each
/// lookup runs on a CPU thread with a deadline.
/// </summary>
public class GupTests
{
    private const ulong M2 = 2UL << 20;

    [TestCase(false)]
    [TestCase(true)]
    public void A_forced_write_into_a_read_only_private_mapping_breaks_cow_and_the_process_reads_the_poke(bool thp)
    {
        using var lease = new KernelLease(new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true }));
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
}
