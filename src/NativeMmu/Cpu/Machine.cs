using NativeMmu.Arch.X86;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// The emulated machine as the kernel sees it after boot: physical memory with its vmemmap, the page
/// allocator, the shared zero page, the per-CPU counters and the CPUs. Threads borrow CPUs to run on.
/// </summary>
public sealed unsafe class Machine : IDisposable
{
    [ThreadStatic] private static Cpu? t_current;

    public Machine(KernelConfig config)
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
        SplitQueue = new Mm.DeferredSplitQueue(this);
        HugeZero = new Mm.HugeZeroFolio(this);
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

    /// <summary>/sys/kernel/mm/transparent_hugepage: the THP and mTHP knobs and the per-size stats.</summary>
    public Mm.Thp Thp { get; } = new();
    /// <summary>The huge zero folio (mm/huge_memory.c), allocated on first use.</summary>
    public Mm.HugeZeroFolio HugeZero { get; private set; } = null!;

    /// <summary>The deferred-split queue of partially mapped large folios.</summary>
    public Mm.DeferredSplitQueue SplitQueue { get; private set; } = null!;

    /// <summary>RCU over the CPUs: grace periods for freeing page-table frames.</summary>
    public Rcu Rcu { get; private set; } = null!;

    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _tlbConflicts = new();

    /// <summary>TLB conflicts the invariant mode has seen (the two forbidden situations of seed 002).</summary>
    public IReadOnlyCollection<string> TlbConflicts => _tlbConflicts;

    internal void ReportTlbConflict(Cpu cpu, ulong va, string what)
    {
        _tlbConflicts.Enqueue(what);
        Counters.Add(cpu.Id, VmEvent.TlbConflict);
    }

    /// <summary>The handler the CPUs raise #PF into (the kernel's exc_page_fault).</summary>
    public IPageFaultHandler? FaultHandler { get; set; }

    /// <summary>The CPU the calling thread has attached to this machine, if any.</summary>
    public Cpu? CurrentCpu => t_current is { } c && c.Machine == this ? c : null;

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

/// <summary>A CPU held for the duration of a using block.</summary>
public readonly struct CpuScope(Cpu cpu, bool borrowed) : IDisposable
{
    public Cpu Cpu { get; } = cpu;
    public void Dispose()
    {
        if (borrowed) Cpu.Dispose();
    }
}

/// <summary>What a #PF handler tells the CPU.</summary>
public enum FaultResult
{
    /// <summary>The fault was handled (or raced with another CPU's): retry the access.</summary>
    Retry,
    /// <summary>SIGSEGV, SEGV_MAPERR: no mapping at the address.</summary>
    SegvMaperr,
    /// <summary>SIGSEGV, SEGV_ACCERR: the mapping forbids the access.</summary>
    SegvAccerr,
    /// <summary>SIGBUS.</summary>
    Sigbus,
    /// <summary>VM_FAULT_OOM: the kernel would invoke the OOM killer.</summary>
    Oom,
}

/// <summary>The kernel side of the #PF vector.</summary>
public interface IPageFaultHandler
{
    /// <summary>exc_page_fault for a user-mode access on <paramref name="cpu"/>: CR2 and the error code.</summary>
    FaultResult HandleUserFault(Cpu cpu, ulong address, X86PfError error);
}

/// <summary>si_code of a SIGSEGV.</summary>
public enum SegvCode
{
    /// <summary>SEGV_MAPERR: address not mapped to object.</summary>
    MapErr = 1,
    /// <summary>SEGV_ACCERR: invalid permissions for mapped object.</summary>
    AccErr = 2,
}

/// <summary>An emulated access the kernel answered with a signal: SIGSEGV (with si_code), SIGBUS, or an OOM kill.</summary>
public sealed class SegmentationFault : Exception
{
    public SegmentationFault(ulong address, FaultResult result)
        : base($"{Describe(result)} at {address:x}")
    {
        Address = address;
        Result = result;
    }

    public ulong Address { get; }
    public FaultResult Result { get; }
    /// <summary>SEGV_MAPERR or SEGV_ACCERR for a SIGSEGV.</summary>
    public SegvCode? Code => Result switch { FaultResult.SegvMaperr => SegvCode.MapErr, FaultResult.SegvAccerr => SegvCode.AccErr, _ => null };

    private static string Describe(FaultResult r) => r switch
    {
        FaultResult.SegvMaperr => "SIGSEGV (SEGV_MAPERR)",
        FaultResult.SegvAccerr => "SIGSEGV (SEGV_ACCERR)",
        FaultResult.Sigbus => "SIGBUS",
        FaultResult.Oom => "out of memory (VM_FAULT_OOM)",
        _ => r.ToString(),
    };
}

/// <summary>
/// The part of an mm the MMU and the TLB shootdown code see: the root table (CR3) and mm_cpumask.
/// </summary>
public class MmContext
{
    /// <summary>The PGD frame loaded into CR3 by a CPU running this mm.</summary>
    public ulong PgdPfn { get; protected set; }
    /// <summary>mm_cpumask: bit n set while CPU n may hold translations of this mm. Changed with Interlocked.</summary>
    internal ulong CpuMask;
    /// <summary>tlb_flush_pending: a flush is batched but not yet done (mmu_gather in progress).</summary>
    internal int TlbFlushPending;
    /// <summary>Set once the address space is torn down: its tables may no longer be walked.</summary>
    internal int Dead;
    public bool IsDead => Volatile.Read(ref Dead) != 0;
}
