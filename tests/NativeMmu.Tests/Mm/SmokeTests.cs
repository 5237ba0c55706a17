using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

public class FaultSmokeTests
{
    [TestCase(PtReclaimMode.Off)]
    [TestCase(PtReclaimMode.Refcount)]
    [TestCase(PtReclaimMode.Sync)]
    public void Untouched_memory_reads_zero_and_writes_stick_and_every_frame_returns_after_exit(PtReclaimMode mode)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = mode });
        long free0 = TestSupport.SettledFreeFrames(kernel);
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
        Assert.That(p.Mm.PgtablesBytes >> 10, Is.EqualTo(mode == PtReclaimMode.Off ? 12 : 8),
            "MADV_DONTNEED of a whole PTE table: Off keeps the table (PUD+PMD+PTE = 12 kB), Sync and Refcount free it");
        Assert.That(cpu.Load<long>(a + 4096), Is.Zero);
        Assert.That(p.Mm.PgtablesBytes >> 10, Is.EqualTo(12), "the read fault maps the zero page through a new table");
        Assert.That(p.Munmap(a, 8UL << 20), Is.EqualTo(Errno.Success));
        p.Exit();
        kernel.RcuBarrier(); // page tables are freed after a grace period
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0));
    }
}
