using System.Runtime.ExceptionServices;
using System.Text.RegularExpressions;
using NativeMmu.Arch.X86;
using NativeMmu.Mm;

namespace NativeMmu.Tests;

/// <summary>Small kernels and the helpers the behaviour tests share.</summary>
internal static partial class TestSupport
{
    public const ulong PageSize = Geometry.PageSize;
    public const ulong PmdSize = Geometry.PmdSize;

    /// <summary>How long any handshake or join may take before the test gives up (a hang, not a slow run).</summary>
    public static readonly TimeSpan HandshakeTimeout = TimeSpan.FromSeconds(20);

    /// <summary>A 32 MiB kernel with a few CPUs and the invariant checks on.</summary>
    public static Kernel Boot(int cpus = 4, ulong memoryBytes = 32UL << 20, int pagingLevels = 4)
        => new(new KernelConfig { MemoryBytes = memoryBytes, Cpus = cpus, PagingLevels = pagingLevels, DebugVm = true });

    /// <summary>
    /// Free frames once pending RCU callbacks have run: page tables removed from a live tree are freed
    /// after a grace period, as in the kernel, so a count taken right after munmap or exit waits for it.
    /// </summary>
    public static long SettledFreeFrames(Kernel kernel)
    {
        kernel.RcuBarrier();
        return kernel.FreeFrames;
    }

    /// <summary>A value of a /proc/PID/status line in kB.</summary>
    public static long StatusKb(Process p, string field)
    {
        Match m = Regex.Match(p.ProcStatus(), $@"^{field}:\s+(\d+) kB$", RegexOptions.Multiline);
        Assert.That(m.Success, Is.True, $"/proc/PID/status has a {field} line");
        return long.Parse(m.Groups[1].Value);
    }

    /// <summary>The PTE that maps address, or null when no PTE table covers it.</summary>
    public static unsafe ulong? PteOf(Process p, ulong address)
    {
        Pte* pte = PgTable.WalkToPte(p.Mm, address);
        return pte == null ? null : PgTable.Get(pte).Value;
    }

    /// <summary>An anonymous private mapping at exactly addr (MAP_FIXED_NOREPLACE), asserted to succeed.</summary>
    public static ulong MapAt(Process p, ulong addr, ulong length, Prot prot = Prot.ReadWrite)
    {
        Errno e = p.Mmap(addr, length, prot, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace, out ulong mapped);
        Assert.That(e, Is.EqualTo(Errno.Success), $"mmap at {addr:x}");
        Assert.That(mapped, Is.EqualTo(addr));
        return mapped;
    }

    /// <summary>
    /// Runs each body on its own thread with its own CPU running <paramref name="p"/>'s mm. Returns false
    /// when a thread did not finish in time; exceptions from the bodies are rethrown.
    /// </summary>
    public static bool RunOnCpus(Kernel kernel, Process p, params Action<NativeMmu.Cpus.Cpu>[] bodies)
    {
        var errors = new Exception?[bodies.Length];
        var threads = new Thread[bodies.Length];
        for (int i = 0; i < bodies.Length; i++)
        {
            int index = i;
            threads[i] = new Thread(() =>
            {
                try
                {
                    using NativeMmu.Cpus.Cpu cpu = kernel.AttachCpu();
                    p.Enter(cpu);
                    bodies[index](cpu);
                }
                catch (Exception ex)
                {
                    errors[index] = ex;
                }
            })
            { IsBackground = true, Name = $"emulated-cpu-thread-{i}" };
            threads[i].Start();
        }
        foreach (Thread t in threads)
            if (!t.Join(HandshakeTimeout)) return false;
        foreach (Exception? ex in errors)
            if (ex is not null) ExceptionDispatchInfo.Capture(ex).Throw();
        return true;
    }

    /// <summary>Waits on a handshake event; a timeout means the other side is stuck.</summary>
    public static void Await(ManualResetEventSlim e, string what)
    {
        if (!e.Wait(HandshakeTimeout)) throw new TimeoutException($"timed out waiting for: {what}");
    }
}

/// <summary>
/// Owns a kernel for a test that runs threads on it: if the threads hang, the kernel (and the native
/// memory they may still touch) is deliberately leaked instead of freed under them.
/// </summary>
internal sealed class KernelLease(Kernel kernel) : IDisposable
{
    public Kernel Kernel { get; } = kernel;
    public bool Abandoned { get; private set; }

    public void Abandon() => Abandoned = true;

    public void RunOnCpus(Process p, params Action<NativeMmu.Cpus.Cpu>[] bodies)
    {
        if (!TestSupport.RunOnCpus(Kernel, p, bodies))
        {
            Abandon();
            Assert.Fail("a CPU thread did not finish: the emulated kernel hung");
        }
    }

    public void Dispose()
    {
        if (!Abandoned) Kernel.Dispose();
    }
}

/// <summary>
/// A fixture with a small kernel (2 CPUs, invariant checks on), one process, and the test thread running
/// on a CPU in that process: booted before each test and torn down after it.
/// </summary>
public abstract class OneProcessFixture
{
    protected Kernel _kernel = null!;
    protected Process _p = null!;
    protected NativeMmu.Cpus.Cpu _cpu = null!;

    /// <summary>The kernel each test runs on: 32 MiB, two CPUs, the invariant checks on.</summary>
    protected virtual Kernel BootKernel() => TestSupport.Boot(cpus: 2);

    [SetUp]
    public void Boot()
    {
        _kernel = BootKernel();
        _p = _kernel.CreateProcess();
        _cpu = _kernel.AttachCpu();
        _p.Enter(_cpu);
    }

    [TearDown]
    public void ShutDown()
    {
        _cpu.Dispose();
        _kernel.Dispose();
    }
}
