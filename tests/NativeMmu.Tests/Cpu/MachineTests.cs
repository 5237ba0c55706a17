using NativeMmu.Mm;

namespace NativeMmu.Tests.Processor;

/// <summary>Booting, CPU attachment and shutdown of the emulated machine.</summary>
public class MachineTests
{
    [Test]
    public void A_thread_attaches_one_cpu_at_a_time()
    {
        using Kernel kernel = TestSupport.Boot(cpus: 2);
        using (NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu())
        {
            Assert.That(kernel.Machine.CurrentCpu, Is.SameAs(cpu));
            Assert.That(() => kernel.AttachCpu(), Throws.InvalidOperationException);
        }
        Assert.That(kernel.Machine.CurrentCpu, Is.Null, "disposing the CPU detaches it");
        using NativeMmu.Cpus.Cpu again = kernel.AttachCpu();
        Assert.That(again, Is.Not.Null);
    }

    [Test]
    public void Attaching_more_threads_than_cpus_fails()
    {
        using Kernel kernel = TestSupport.Boot(cpus: 1);
        using NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
        Exception? error = null;
        var t = new Thread(() =>
        {
            try { using NativeMmu.Cpus.Cpu other = kernel.AttachCpu(); }
            catch (Exception ex) { error = ex; }
        });
        t.Start();
        Assert.That(t.Join(TestSupport.HandshakeTimeout), Is.True);
        Assert.That(error, Is.InstanceOf<InvalidOperationException>());
    }

    [Test]
    public void A_system_call_from_an_unattached_thread_borrows_a_cpu()
    {
        using Kernel kernel = TestSupport.Boot(cpus: 1);
        Process p = kernel.CreateProcess();
        ulong a = p.Mmap(4096, Prot.ReadWrite, MapFlags.Populate);
        Assert.That(kernel.Machine.CurrentCpu, Is.Null, "the borrowed CPU went back");
        Assert.That(p.Mm.GetMmRss(), Is.EqualTo(1));
        Assert.That(p.Munmap(a, 4096), Is.EqualTo(Errno.Success));
    }

    [Test]
    public void Disposing_a_kernel_twice_is_harmless()
    {
        Kernel kernel = TestSupport.Boot(cpus: 2);
        kernel.CreateProcess().Mmap(1 << 20);
        kernel.Dispose();
        Assert.That(kernel.Dispose, Throws.Nothing);
    }

    [TestCase(3)]
    [TestCase(6)]
    public void An_unsupported_paging_level_is_rejected(int levels)
    {
        Assert.That(() => new Kernel(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 1, PagingLevels = levels }),
            Throws.ArgumentException);
    }
}
