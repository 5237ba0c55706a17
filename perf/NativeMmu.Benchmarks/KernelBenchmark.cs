using BenchmarkDotNet.Attributes;
using NativeMmu.Mm;
using EmulatedCpu = NativeMmu.Cpus.Cpu;

namespace NativeMmu.Benchmarks;

/// <summary>
/// A booted kernel with one process, for benchmarks that run user accesses and system calls.
/// </summary>
/// <remarks>
/// <para>An emulated CPU belongs to the thread that attached it. BenchmarkDotNet calls [GlobalSetup], the
/// benchmark and [GlobalCleanup] on one thread, but nothing here relies on it: the setup runs on a CPU it
/// releases when it is done, and <see cref="Cpu"/> attaches the calling thread on first use (during the
/// first, unmeasured invocation). Only that one CPU has the mm loaded while benchmarks run, so zaps flush
/// locally and post nothing to other CPUs.</para>
/// </remarks>
public abstract class KernelBenchmark
{
    protected const ulong PageSize = 4096;
    protected const ulong PmdSize = 2UL << 20;
    /// <summary>Pages in a 2 MiB window: one PTE table's worth.</summary>
    protected const int PagesPer2MiB = 512;

    private readonly List<EmulatedCpu> _attached = [];

    protected Kernel Kernel { get; private set; } = null!;
    protected Process Process { get; private set; } = null!;

    /// <summary>Physical memory of the emulated machine; a benchmark class may ask for more.</summary>
    protected virtual ulong MemoryBytes => 256UL << 20;

    /// <summary>Empty PTE-table reclaim of the emulated kernel; a benchmark class may make it a parameter.</summary>
    protected virtual PtReclaimMode PtReclaim => PtReclaimMode.Sync;

    /// <summary>Maps and populates what the benchmarks touch, on a CPU running the process.</summary>
    protected abstract void Setup(EmulatedCpu cpu);

    /// <summary>
    /// The calling thread's CPU, running the process. System calls run on it once it is attached; a benchmark
    /// that only makes system calls still reads it, or each call would borrow and release a CPU of its own.
    /// </summary>
    protected EmulatedCpu Cpu => Kernel.Machine.CurrentCpu ?? AttachThisThread();

    [GlobalSetup]
    public void BootKernel()
    {
        Kernel = new Kernel(new KernelConfig { MemoryBytes = MemoryBytes, Cpus = 2, PtReclaim = PtReclaim });
        Process = Kernel.CreateProcess("bench");
        using EmulatedCpu cpu = Kernel.AttachCpu();
        Process.Enter(cpu);
        Setup(cpu);
    }

    [GlobalCleanup]
    public void ShutDownKernel()
    {
        Process.Exit();
        lock (_attached)
        {
            foreach (EmulatedCpu cpu in _attached) cpu.Dispose();
            _attached.Clear();
        }
        Kernel.Dispose();
    }

    private EmulatedCpu AttachThisThread()
    {
        EmulatedCpu cpu = Kernel.AttachCpu();
        Process.Enter(cpu);
        lock (_attached) _attached.Add(cpu);
        return cpu;
    }

    /// <summary>A private anonymous read-write mapping that throws on failure.</summary>
    protected ulong Map(ulong length, MapFlags extra = MapFlags.None) => Process.Mmap(length, Prot.ReadWrite, extra);

    /// <summary>Fails loudly when a system call in a benchmark does not succeed (it would measure an error path).</summary>
    protected static void Check(Errno e, string call)
    {
        if (e != Errno.Success) throw new ErrnoException(e, call);
    }
}
