using NativeMmu.Mm;
using static NativeMmu.Tests.Mm.Hugetlb.HugetlbSupport;

namespace NativeMmu.Tests.Mm.Hugetlb;

[TestFixture(Size2M)]
[TestFixture(Size1G)]
public class HugetlbSmokeTests(ulong size)
{
    [Test]
    public void Write_then_read_back()
    {
        using Kernel k = Boot(size, 2);
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = MapHugetlb(p, size, size);
        Assert.That(a % size, Is.Zero);
        cpu.Store<long>(a + 5 * 4096, 42);
        Assert.That(cpu.Load<long>(a + 5 * 4096), Is.EqualTo(42));
        Assert.That(FreeHugepages(k, size), Is.EqualTo(1));
        Process c = p.Fork();
        c.Enter(cpu);
        Assert.That(cpu.Load<long>(a + 5 * 4096), Is.EqualTo(42));
        cpu.Store<long>(a + 5 * 4096, 7);
        p.Enter(cpu);
        Assert.That(cpu.Load<long>(a + 5 * 4096), Is.EqualTo(42));
        Assert.That(k.CheckInvariants(), Is.Empty);
        c.Exit();
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
        Assert.That(FreeHugepages(k, size), Is.EqualTo(2));
    }
}
