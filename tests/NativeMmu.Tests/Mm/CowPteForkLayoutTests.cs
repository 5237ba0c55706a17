using System.Diagnostics;
using NativeMmu.Arch.X86;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// The layout of `nativemmu fork`'s default run (1 GiB mapped MADV_NOHUGEPAGE and written page by page,
/// then one fork): the child's VmPTE and VmRSS per mode, as the COW PTE series reports them for 1 GiB
/// (default fork: VmPTE 2096 kB, VmRSS 1,048,688 kB; COW PTE: 44 kB and 2576 kB, which count the
/// process's other mappings too). The fork times are printed, not asserted.
/// </summary>
[NonParallelizable]
public class CowPteForkLayoutTests
{
    [TestCase(CowPteMode.Off, 2060L, 1048576L)]
    [TestCase(CowPteMode.Lazy, 12L, 0L)]
    [TestCase(CowPteMode.Eager, 12L, 0L)]
    public void The_child_of_the_fork_commands_1g_layout_has_the_vmpte_and_vmrss_of_its_mode(CowPteMode mode, long childVmpteKb, long childRssKb)
    {
        const ulong size = 1UL << 30;
        ulong memory = (size + size / 8 + (64UL << 20) + Geometry.PmdSize - 1) & Geometry.PmdMask; // ForkCommand.MemoryBytesFor
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = memory, Cpus = 2, CowPte = mode, CowPteAllProcesses = mode != CowPteMode.Off });
        Process p = kernel.CreateProcess("fork");
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Assert.That(p.Mmap(0, size, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong a), Is.EqualTo(Errno.Success));
        Assert.That(p.Madvise(a, size, Advice.NoHugePage), Is.EqualTo(Errno.Success));
        for (ulong off = 0; off < size; off += Geometry.PageSize) cpu.Store<byte>(a + off, 1);
        var times = new double[3];
        for (int i = 0; i < times.Length; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Process child = p.Fork("fork-child");
            times[i] = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
            if (i == 0)
            {
                long pte = TestSupport.StatusKb(child, "VmPTE"), rss = TestSupport.StatusKb(child, "VmRSS");
                TestContext.Out.WriteLine($"{mode}: mmap at {a:x}, parent VmPTE {TestSupport.StatusKb(p, "VmPTE")} kB, child VmPTE {pte} kB, child VmRSS {rss} kB");
                Assert.That(pte, Is.EqualTo(childVmpteKb), "child VmPTE");
                Assert.That(rss, Is.EqualTo(childRssKb), "child VmRSS");
            }
            child.Exit();
        }
        Array.Sort(times);
        TestContext.Out.WriteLine($"{mode}: fork of the populated 1 GiB, median {times[1]:F3} ms (of {string.Join(", ", times.Select(t => t.ToString("F3")))})");
        p.Exit();
    }
}
