using NativeMmu.Cpus;
using NativeMmu.Diagnostics;
using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu;

/// <summary>
/// The emulated kernel: a booted <see cref="Machine"/> with the page-fault handler installed, and the
/// processes running on it. Threads attach to CPUs (<see cref="AttachCpu"/>) to touch user memory.
/// </summary>
public sealed class Kernel : IDisposable
{
    private int _nextPid = 1;
    private readonly List<Process> _processes = [];

    public Kernel(KernelConfig? config = null)
    {
        Config = config ?? new KernelConfig();
        Machine = new Machine(Config) { FaultHandler = new PageFaultHandler() };
        Machine m = Machine;
        Machine.Rcu.FreeTable = (cpu, pfn) => PgTable.FreeTableRcu(cpu, m, pfn);
        Machine.SplitQueue.LiveMms = () =>
        {
            lock (_processes) return [.. _processes.Where(p => !p.Exited).Select(p => p.Mm)];
        };
#if !NATIVEMMU_NO_EVENTS
        NativeMmuEventSource.Log.Register(Machine);
#endif
    }

    public KernelConfig Config { get; }
    public Machine Machine { get; }

    /// <summary>Binds a free emulated CPU to the calling thread until it is disposed.</summary>
    public Cpu AttachCpu() => Machine.AttachCpu();

    /// <summary>A new process with an empty address space.</summary>
    public Process CreateProcess(string name = "nativemmu")
    {
        var p = new Process(this, Interlocked.Increment(ref _nextPid) - 1, name, new MmStruct(Machine));
        lock (_processes) _processes.Add(p);
        return p;
    }

    internal void Reap(Process p)
    {
        lock (_processes) _processes.Remove(p);
    }

    /// <summary>rcu_barrier: every page table waiting for a grace period is freed when this returns.</summary>
    public void RcuBarrier()
    {
        using CpuScope s = Machine.EnterCpu();
        Machine.Rcu.Barrier(s.Cpu);
    }

    private readonly System.Collections.Concurrent.ConcurrentQueue<string> _invariantViolations = new();

    /// <summary>What the invariant mode (KernelConfig.DebugVm) found at fork and exit: empty when all is well.</summary>
    public IReadOnlyCollection<string> InvariantViolations => [.. _invariantViolations, .. Machine.InvariantViolations];

    /// <summary>
    /// The page-table audit over every live address space (each held with mmap_lock for write): writable
    /// anonymous pages exclusive to one mm, mapcounts equal to the entries mapping them, refcount at least
    /// mapcount + pins. Returns what is wrong.
    /// </summary>
    public IReadOnlyList<string> CheckInvariants()
    {
        MmStruct[] mms;
        lock (_processes) mms = [.. _processes.Where(p => !p.Exited).Select(p => p.Mm)];
        int locked = 0;
        try
        {
            foreach (MmStruct mm in mms) { mm.MmapLock.WriteLock(); locked++; }
            return PageTableCheck.Check(Machine, mms);
        }
        finally
        {
            for (int i = 0; i < locked; i++) mms[i].MmapLock.WriteUnlock();
        }
    }

    /// <summary>In the invariant mode, audit now and keep what was found.</summary>
    internal void DebugVmCheckpoint()
    {
        if (!Config.DebugVm) return;
        foreach (string v in CheckInvariants()) _invariantViolations.Enqueue(v);
    }

    /// <summary>The deferred-split shrinker: splits every queued, partially mapped large folio it can; returns how many.</summary>
    public long SplitDeferred()
    {
        using CpuScope s = Machine.EnterCpu();
        return Machine.SplitQueue.Scan(s.Cpu);
    }

    /// <summary>Frames on the free lists (buddy and per-CPU).</summary>
    public long FreeFrames => Machine.Allocator.FreeFrames;
    /// <summary>Frames the page allocator manages (everything but the boot-time reservations).</summary>
    public long ManagedFrames => (long)Machine.Allocator.ManagedPages;

    /// <summary>A /proc/vmstat counter by its kernel name (e.g. "pgfault").</summary>
    public long VmstatValue(string name) => Stats.Vmstat(Machine).First(kv => kv.Key == name).Value;

    /// <summary>/proc/vmstat text for the counters this kernel keeps.</summary>
    public string ProcVmstat() => Stats.RenderVmstat(Machine);

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        Process[] left;
        lock (_processes) left = [.. _processes];
        foreach (Process p in left) p.Exit();
#if !NATIVEMMU_NO_EVENTS
        NativeMmuEventSource.Log.Unregister(Machine);
#endif
        foreach (Cpu cpu in Machine.Cpus) (cpu.KernelData as IDisposable)?.Dispose();
        Machine.Dispose();
    }
}

/// <summary>A task with its own mm: the system-call surface of one emulated process.</summary>
public sealed class Process
{
    internal Process(Kernel kernel, int pid, string name, MmStruct mm)
    {
        Kernel = kernel;
        Pid = pid;
        Name = name;
        Mm = mm;
    }

    public Kernel Kernel { get; }
    public int Pid { get; }
    public string Name { get; }
    public MmStruct Mm { get; }
    public bool Exited { get; private set; }

    /// <summary>mmap(2); returns errno, the mapped address in <paramref name="mapped"/>.</summary>
    public Errno Mmap(ulong addr, ulong length, Prot prot, MapFlags flags, out ulong mapped)
    {
        using CpuScope s = Kernel.Machine.EnterCpu();
        return Mmap_(s.Cpu, addr, length, prot, flags, out mapped);
    }

    private Errno Mmap_(Cpu cpu, ulong addr, ulong length, Prot prot, MapFlags flags, out ulong mapped)
        => NativeMmu.Mm.Mmap.DoMmap(cpu, Mm, addr, length, prot, flags, out mapped);

    /// <summary>mmap(NULL, length, prot, MAP_PRIVATE|MAP_ANONYMOUS|extra) that throws on failure.</summary>
    public ulong Mmap(ulong length, Prot prot = Prot.ReadWrite, MapFlags extra = MapFlags.None)
    {
        Errno e = Mmap(0, length, prot, MapFlags.Private | MapFlags.Anonymous | extra, out ulong addr);
        return e == Errno.Success ? addr : throw new ErrnoException(e, "mmap");
    }

    /// <summary>munmap(2).</summary>
    public Errno Munmap(ulong addr, ulong length)
    {
        using CpuScope s = Kernel.Machine.EnterCpu();
        return NativeMmu.Mm.Mmap.DoMunmap(s.Cpu, Mm, addr, length);
    }

    /// <summary>
    /// prctl(2), for the options this kernel knows: PR_SET_COW_PTE (the COW PTE series, v3 on) marks the mm
    /// MMF_COW_PTE_READY, and its next fork shares PTE tables. As the series' prctl_set_cow_pte (v5) it takes
    /// the mm only (arg2 to arg5 play no part) and is EINVAL once the mm has MMF_COW_PTE. EINVAL too for an
    /// unknown option, or PR_SET_COW_PTE on a kernel without copy-on-write page tables (KernelConfig.CowPte
    /// Off). Returns errno, like the other calls here.
    /// </summary>
    public Errno Prctl(int option, ulong arg2 = 0, ulong arg3 = 0, ulong arg4 = 0, ulong arg5 = 0)
    {
        switch (option)
        {
            case NativeMmu.Prctl.PR_SET_COW_PTE:
                if (Kernel.Config.CowPte == CowPteMode.Off) return Errno.EINVAL;
                Mm.MmapLock.WriteLock();
                bool active = Mm.CowPte;
                if (!active) Mm.CowPteReady = true;
                Mm.MmapLock.WriteUnlock();
                return active ? Errno.EINVAL : Errno.Success;
            default:
                return Errno.EINVAL;
        }
    }

    /// <summary>mprotect(2).</summary>
    public Errno Mprotect(ulong addr, ulong length, Prot prot)
    {
        using CpuScope s = Kernel.Machine.EnterCpu();
        return NativeMmu.Mm.Mprotect.DoMprotect(s.Cpu, Mm, addr, length, prot);
    }

    /// <summary>madvise(2).</summary>
    public Errno Madvise(ulong addr, ulong length, Advice advice)
    {
        using CpuScope s = Kernel.Machine.EnterCpu();
        return NativeMmu.Mm.Madvise.DoMadvise(s.Cpu, Mm, addr, length, advice);
    }

    /// <summary>
    /// get_user_pages(start, nr_pages, gup_flags): a reference on each page, faulting pages in as needed
    /// (FOLL_WRITE breaks COW first), like the reference vmsplice takes. Dispose the result to put them.
    /// </summary>
    public Errno GetUserPages(ulong start, int nrPages, Foll flags, out UserPages? pages)
        => Gup_(start, nrPages, (flags & ~Foll.Pin) | Foll.Get, out pages);

    /// <summary>
    /// pin_user_pages(start, nr_pages, gup_flags): FOLL_PIN on each page (FOLL_LONGTERM and FOLL_WRITE as
    /// given). A read-only long-term pin first unshares a page the process shares with another. Dispose to unpin.
    /// </summary>
    public Errno PinUserPages(ulong start, int nrPages, Foll flags, out UserPages? pages)
        => Gup_(start, nrPages, (flags & ~Foll.Get) | Foll.Pin, out pages);

    private Errno Gup_(ulong start, int nrPages, Foll flags, out UserPages? pages)
    {
        using CpuScope s = Kernel.Machine.EnterCpu();
        Errno e = NativeMmu.Mm.Gup.GetUserPages(s.Cpu, Mm, start, nrPages, flags, out ulong[] pfns);
        pages = e == Errno.Success ? new UserPages(Kernel.Machine, pfns, flags) : null;
        return e;
    }

    /// <summary>fork(): a child process whose address space is a copy-on-write copy of this one.</summary>
    public Process Fork(string? name = null)
    {
        var child = Kernel.CreateProcess(name ?? Name);
        using CpuScope s = Kernel.Machine.EnterCpu();
        NativeMmu.Mm.Fork.DupMmap(s.Cpu, Mm, child.Mm);
        Kernel.DebugVmCheckpoint();
        if (NativeMmuEventSource.Log.ForkEventsEnabled) NativeMmuEventSource.Log.Fork(Pid, child.Pid, child.Mm.Vmas.Count);
        return child;
    }

    /// <summary>Runs the calling thread's CPU in this process (switch_mm).</summary>
    public void Enter(Cpu cpu) => cpu.SwitchMm(Mm);

    /// <summary>exit: tear the address space down; every frame goes back to the allocator.</summary>
    public void Exit()
    {
        if (Exited) return;
        Kernel.DebugVmCheckpoint();
        Exited = true;
        using (CpuScope s = Kernel.Machine.EnterCpu())
        {
            if (ReferenceEquals(s.Cpu.LoadedMm, Mm)) s.Cpu.SwitchMm(null);
            NativeMmu.Mm.Mmap.ExitMmap(s.Cpu, Mm);
        }
        Mm.Dispose();
        Kernel.Reap(this);
    }

    /// <summary>/proc/PID/status (the memory lines). Like /proc/PID after the task is reaped, gone after Exit.</summary>
    public string ProcStatus() => Exited ? throw new InvalidOperationException($"process {Pid} has exited") : Stats.RenderStatus(Name, Pid, Mm);

    /// <summary>/proc/PID/maps.</summary>
    public string ProcMaps() => Exited ? throw new InvalidOperationException($"process {Pid} has exited") : Stats.RenderMaps(Mm);

    /// <summary>/proc/PID/smaps_rollup: Rss, Pss and the rest summed over the address space, AnonHugePages among them.</summary>
    public string ProcSmapsRollup() => Exited ? throw new InvalidOperationException($"process {Pid} has exited") : Stats.RenderSmapsRollup(Mm);
}

/// <summary>prctl(2) options (include/uapi/linux/prctl.h, and the COW PTE series' addition).</summary>
public static class Prctl
{
    /// <summary>PR_SET_COW_PTE (the COW PTE series v3-v5): share PTE tables copy-on-write from the next fork on.</summary>
    public const int PR_SET_COW_PTE = 65;
}
