using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

public class FaultSmokeTests
{
    [Test]
    public void Untouched_memory_reads_zero_and_writes_stick_and_every_frame_returns_after_exit()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true });
        long free0 = kernel.FreeFrames;
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(8UL << 20);
        Assert.That(a % (2UL << 20), Is.Zero, "an 8 MiB anonymous mapping is THP aligned");
        Assert.That(cpu.Load<long>(a + 4096), Is.Zero);
        cpu.Store<long>(a + 4096, 42);
        Assert.That(cpu.Load<long>(a + 4096), Is.EqualTo(42));
        for (ulong off = 0; off < (2UL << 20); off += 4096) cpu.Store<byte>(a + off, 1);
        Assert.That(p.Madvise(a, 2UL << 20, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(cpu.Load<long>(a + 4096), Is.Zero);
        TestContext.Out.WriteLine(p.ProcStatus());
        Assert.That(p.Munmap(a, 8UL << 20), Is.EqualTo(Errno.Success));
        p.Exit();
        kernel.RcuBarrier(); // page tables are freed after a grace period
        Assert.That(kernel.FreeFrames, Is.EqualTo(free0));
    }
}
