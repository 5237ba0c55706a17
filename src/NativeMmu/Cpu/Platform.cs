using NativeMmu.Arch.X86;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// The emulated machine below the memory-management layer, as the kernel sees it after boot: physical
/// memory with its vmemmap, the page allocator, the shared zero page, the per-CPU counters, the CPUs
/// with RCU over them, and the #PF vector. Threads borrow CPUs to run on. The memory-management layer
/// extends it with its own machine-wide state (Mm.Machine: the huge_memory.c globals).
/// </summary>
public unsafe class Platform : IDisposable
{
    /// <summary>The CPU the calling thread runs on (per thread: no sharing).</summary>
    [ThreadStatic] private static Cpu? t_current;

    public Platform(KernelConfig config)
    {
        config.Validate();
        Config = config;
        Paging = config.Paging;
        Memory = new PhysicalMemory(config.MemoryBytes);
        Counters = new PerCpuCounters(config.Cpus);

        // PFN 0 stays reserved (as the BIOS area does), so a zero PFN never names a usable frame.
        var boot = new BootAllocator(Memory, firstPfn: 1);
        Vmemmap = new Vmemmap(Memory, Paging, boot);
        ZeroPfn = boot.Allocate(1); // empty_zero_page
        ReservedFrames = boot.Next;
        for (ulong pfn = 0; pfn < boot.Next; pfn++)
        {
            Page* p = Vmemmap.PfnToPage(pfn);
            p->Flags = PG.Mask(PG.Reserved);
            p->RefCount = 1;
        }
        Allocator = new FrameAllocator(Memory, Vmemmap, Counters, config.Cpus, boot.Next, config.PcpHigh, config.PcpBatch);
        Allocator.FreeAllBootMemory();

        Cpus = new Cpu[config.Cpus];
        for (int i = 0; i < Cpus.Length; i++) Cpus[i] = new Cpu(this, i);
        Rcu = new Rcu(this);
    }

    public KernelConfig Config { get; }
    public PagingMode Paging { get; }
    public PhysicalMemory Memory { get; }
    public Vmemmap Vmemmap { get; }
    public FrameAllocator Allocator { get; }
    public PerCpuCounters Counters { get; }
    public Cpu[] Cpus { get; }
    /// <summary>my_zero_pfn: the shared, read-only zero page.</summary>
    public ulong ZeroPfn { get; }
    /// <summary>Frames taken at boot (vmemmap, init_mm tables, zero page, PFN 0).</summary>
    public ulong ReservedFrames { get; }

    /// <summary>RCU over the CPUs: grace periods for freeing page-table frames.</summary>
    public Rcu Rcu { get; }

    /// <summary>Written by any CPU (a concurrent queue), read by tests and reports.</summary>
    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _tlbConflicts = new();

    /// <summary>TLB conflicts the invariant mode has seen (the two situations the 2024 synchronous PT-reclaim series forbids).</summary>
    public IReadOnlyCollection<string> TlbConflicts => _tlbConflicts;

    internal void ReportTlbConflict(Cpu cpu, ulong va, string what)
    {
        _tlbConflicts.Enqueue(what);
        Counters.Add(cpu.Id, VmEvent.TlbConflict);
    }

    /// <summary>
    /// The handler the CPUs raise #PF into (the kernel's exc_page_fault). Installed at boot, before any
    /// CPU runs user code; read by every CPU's fault path without a lock.
    /// </summary>
    public IPageFaultHandler? FaultHandler { get; set; }

    /// <summary>The CPU the calling thread has attached to this machine, if any.</summary>
    public Cpu? CurrentCpu => t_current is { } c && c.Platform == this ? c : null;

    /// <summary>Binds a free CPU to the calling thread until the returned CPU is disposed.</summary>
    public Cpu AttachCpu()
    {
        if (CurrentCpu is { } already) throw new InvalidOperationException($"this thread is already running on CPU {already.Id}");
        int tid = Environment.CurrentManagedThreadId;
        foreach (Cpu cpu in Cpus)
        {
            if (cpu.TryClaim(tid))
            {
                cpu.PreviousOnThread = t_current;
                cpu.PreviousInterruptHandler = Interrupts.SetHandler(cpu.InterruptHandler);
                t_current = cpu;
                return cpu;
            }
        }
        throw new InvalidOperationException($"all {Cpus.Length} emulated CPUs are in use");
    }

    internal void DetachCpu(Cpu cpu)
    {
        if (t_current == cpu) t_current = cpu.PreviousOnThread;
        Interrupts.SetHandler(cpu.PreviousInterruptHandler);
        cpu.PreviousOnThread = null;
        cpu.PreviousInterruptHandler = null;
    }

    /// <summary>The calling thread's CPU, or a CPU borrowed for the scope (a system call from an unattached thread).</summary>
    public CpuScope EnterCpu() => CurrentCpu is { } c ? new CpuScope(c, borrowed: false) : new CpuScope(AttachCpu(), borrowed: true);

    /// <summary>0 until the first Dispose, which claims it with Interlocked.Exchange.</summary>
    private int _disposed;

    public void Dispose()
    {
        if (Interlocked.Exchange(ref _disposed, 1) != 0) return; // a second Dispose must not free the native memory again
        foreach (Cpu cpu in Cpus) cpu.Free();
        Allocator.Dispose();
        Vmemmap.Dispose();
        Memory.Dispose();
    }
}
