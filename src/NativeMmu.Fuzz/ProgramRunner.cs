using System.Buffers.Binary;
using NativeMmu.Fuzz.Model;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu.Fuzz;

/// <summary>The first difference a run found: the operation (-1 for the end-of-program checks), a category and the details.</summary>
internal sealed record RunFailure(int OpIndex, string Category, string Description);

/// <summary>How a run went: operations executed (skipped ones not counted) and the first difference, if any.</summary>
internal readonly record struct RunResult(int OpsExecuted, RunFailure? Failure)
{
    /// <summary>The kernel's cow_pte_* vmstat counters at the end of the run (all zero with CowPte Off).</summary>
    public CowPteCounts CowPte { get; init; }
}

/// <summary>The cow_pte_* vmstat counters: tables shared at fork, copied instead (a page maybe pinned), broken by copy, broken by reuse, dropped by a zap.</summary>
public readonly record struct CowPteCounts(long Share, long Fallback, long BreakCopy, long BreakReuse, long Drop)
{
    public static CowPteCounts operator +(CowPteCounts a, CowPteCounts b)
        => new(a.Share + b.Share, a.Fallback + b.Fallback, a.BreakCopy + b.BreakCopy, a.BreakReuse + b.BreakReuse, a.Drop + b.Drop);

    internal static CowPteCounts Of(Kernel k)
    {
        PerCpuCounters c = k.Machine.Counters;
        return new(c.Sum(VmEvent.CowPteShare), c.Sum(VmEvent.CowPteFallback), c.Sum(VmEvent.CowPteBreakCopy), c.Sum(VmEvent.CowPteBreakReuse), c.Sum(VmEvent.CowPteDrop));
    }
}

/// <summary>
/// Runs a <see cref="SysProgram"/> on a fresh emulated kernel and on the reference model side by side,
/// comparing after every operation: return values, errno, loaded values and bytes, signals (kind and
/// address), RssAnon against the model's bounds, total_vm, and after every mapping change the
/// process's maps (protection and madvise flags per page), and what the kernel's invariant mode
/// reported (page_table_check, a shared PTE table changed behind its sharing). Before the processes exit
/// the page-table audit (Kernel.CheckInvariants) runs over all of them; then every process exits and every
/// frame must be back on the free lists.
/// </summary>
internal sealed class ProgramRunner
{
    /// <summary>
    /// The machine every program runs on: small, four CPUs, CONFIG_DEBUG_VM; its 2 MiB hugetlb pool covers
    /// the one MAP_HUGETLB page a program maps, in every process it forks. A program's header may turn
    /// copy-on-write page tables on (<see cref="ConfigFor"/>).
    /// </summary>
    public static readonly KernelConfig Config = new() { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, HugePages2M = 10 };

    /// <summary>The kernel a program boots: <see cref="Config"/> with the program's CowPte and CowPteAllProcesses.</summary>
    public static KernelConfig ConfigFor(SysProgram program)
        => program.CowPte == CowPteMode.Off && !program.CowPteAllProcesses
            ? Config
            : Config with { CowPte = program.CowPte, CowPteAllProcesses = program.CowPteAllProcesses };

    private readonly Func<ReferenceModel> _modelFactory;
    private readonly Func<Process, Process>? _fork;

    public ProgramRunner(Func<ReferenceModel> modelFactory, Func<Process, Process>? fork)
    {
        _modelFactory = modelFactory;
        _fork = fork;
    }

    /// <summary>The emulator's fork (Process.Fork); tests may substitute another or none.</summary>
    public static Func<Process, Process>? FindFork() => static p => p.Fork();

    public bool CanFork => _fork is not null;

    /// <summary>Whether the runner would skip op on an access range reaching past the canonical user half.</summary>
    internal static bool OutsideUserHalf(ulong address, ulong length)
        => address >= Linux.CanonicalEnd || length > Linux.CanonicalEnd - address;

    private sealed class State
    {
        public required Kernel Kernel;
        public required Cpu Cpu;
        public required ReferenceModel Model;
        public readonly Dictionary<int, Process> Procs = [];
        public readonly Dictionary<int, ulong> Labels = [];
        public Process? Current;
    }

    /// <summary>Runs a program on the kernel its header asks for.</summary>
    public RunResult Run(SysProgram program) => Run(program, ConfigFor(program));

    /// <summary>Runs a program on a kernel booted with <paramref name="config"/>; the model learns the copy-on-write page-table switches from it.</summary>
    public RunResult Run(SysProgram program, KernelConfig config)
    {
        var kernel = new Kernel(config);
        bool healthy = true;
        Cpu? cpu = null;
        int executed = 0;
        int reported = 0;
        try
        {
            long freeAtBoot = kernel.FreeFrames;
            cpu = kernel.AttachCpu();
            var st = new State { Kernel = kernel, Cpu = cpu, Model = _modelFactory() };
            st.Model.CowPteKernel = config.CowPte != CowPteMode.Off;
            st.Model.CowPteAllProcesses = config.CowPteAllProcesses;
            for (int i = 0; i < program.Processes; i++)
            {
                st.Procs.Add(i, kernel.CreateProcess($"p{i}"));
                st.Model.CreateProcess(i);
            }

            for (int i = 0; i < program.Ops.Count; i++)
            {
                SysOp op = program.Ops[i];
                if (!st.Procs.TryGetValue(op.Proc, out Process? proc) || proc.Exited) continue;
                if (op.Kind == SysOpKind.Fork && (_fork is null || op.Child >= SysProgram.MaxProcesses || st.Procs.ContainsKey(op.Child))) continue;
                if (op.Kind is SysOpKind.Load or SysOpKind.Store or SysOpKind.TryLoad or SysOpKind.TryStore or SysOpKind.Read or SysOpKind.Write)
                {
                    ulong len = op.Kind is SysOpKind.Read or SysOpKind.Write ? op.Length : (ulong)op.Width;
                    if (OutsideUserHalf(op.Addr.Resolve(st.Labels), len)) continue;
                }
                if (!ReferenceEquals(st.Current, proc))
                {
                    proc.Enter(cpu);
                    st.Current = proc;
                }

                (string Category, string Description)? diff;
                try
                {
                    diff = Step(st, op, proc);
                }
                catch (ModelException e)
                {
                    return new(executed, new RunFailure(i, "model", $"{op}: the model failed: {e.InnerException?.Message}"));
                }
                catch (Exception e)
                {
                    healthy = false;
                    return new(executed, new RunFailure(i, $"exception:{e.GetType().Name}", $"{op}: the emulator threw {e.GetType().Name}: {e.Message}"));
                }
                executed++;
                diff ??= CheckInvariants(st, op);
                diff ??= KernelViolations(kernel, ref reported);
                if (diff is { } d) return new(executed, new RunFailure(i, d.Category, $"{op}: {d.Description}"));
            }

            // The page-table audit over every live address space while they all still exist.
            IReadOnlyList<string> audit = kernel.CheckInvariants();
            if (audit.Count > 0)
                return new(executed, new RunFailure(-1, "invariant", $"the page-table audit after the last operation found {audit.Count} violation(s): {string.Join("; ", audit.Take(3))}"));

            foreach (var (id, p) in st.Procs)
            {
                if (p.Exited) continue;
                p.Exit();
                st.Model.Exit(id);
            }
            st.Current = null;
            cpu.Dispose();
            cpu = null;
            kernel.RcuBarrier(); // page tables are freed after a grace period
            if (KernelViolations(kernel, ref reported) is { } atExit)
                return new(executed, new RunFailure(-1, atExit.Item1, $"at exit: {atExit.Item2}"));
            long free = kernel.FreeFrames;
            if (free != freeAtBoot)
                return new(executed, new RunFailure(-1, "frames", $"after every process exited {free} frames are free, {freeAtBoot} were free after boot ({freeAtBoot - free} not returned)"));
            return new(executed, null) { CowPte = CowPteCounts.Of(kernel) };
        }
        catch (Exception e)
        {
            healthy = false;
            return new(executed, new RunFailure(-1, $"exception:{e.GetType().Name}", $"the emulator threw {e.GetType().Name} outside an operation: {e.Message}"));
        }
        finally
        {
            try { cpu?.Dispose(); } catch (Exception) { healthy = false; }
            if (healthy)
            {
                try { kernel.Dispose(); } catch (Exception) { healthy = false; }
            }
            // After an exception the kernel's locks may still be held: exit_mmap could wait forever.
            // Give the memory back without tearing the address spaces down.
            if (!healthy) kernel.Machine.Dispose();
        }
    }

    /// <summary>A failure inside the reference model (a fuzzer bug, not an emulator one).</summary>
    private sealed class ModelException(Exception inner) : Exception(inner.Message, inner);

    private static T M<T>(Func<T> f)
    {
        try { return f(); }
        catch (Exception e) { throw new ModelException(e); }
    }

    private static void M(Action f)
    {
        try { f(); }
        catch (Exception e) { throw new ModelException(e); }
    }

    /// <summary>What the kernel's invariant mode recorded since the last look (at fork and exit, and a walker that changed a shared PTE table): a difference of category "invariant".</summary>
    private static (string, string)? KernelViolations(Kernel kernel, ref int reported)
    {
        IReadOnlyCollection<string> found = kernel.InvariantViolations;
        if (found.Count <= reported) return null;
        string[] fresh = [.. found.Skip(reported)];
        reported = found.Count;
        return ("invariant", $"the kernel's invariant mode reported {fresh.Length} violation(s): {string.Join("; ", fresh.Take(3))}");
    }

    private static string ErrnoText(int e) => e == 0 ? "0" : $"{(NativeMmu.Errno)e}";

    private (string, string)? Step(State st, SysOp op, Process proc)
    {
        ReferenceModel model = st.Model;
        ulong addr = op.Addr.Resolve(st.Labels);
        string cat = op.Kind.ToString().ToLowerInvariant();
        switch (op.Kind)
        {
            case SysOpKind.Mmap:
            {
                int flags = Linux.MapPrivate | Linux.MapAnonymous | op.Flags;
                Errno e = proc.Mmap(addr, op.Length, (Prot)op.Prot, (MapFlags)flags, out ulong mapped);
                MmapOutcome m = M(() => model.Mmap(op.Proc, addr, op.Length, op.Prot, flags, e == NativeMmu.Errno.Success ? mapped : null));
                st.Labels[op.Label] = e == NativeMmu.Errno.Success ? mapped : 0;
                if ((int)e != m.Errno) return (cat + ":errno", $"emulator returned {ErrnoText((int)e)}{(e == 0 ? $" ({mapped:x})" : "")}, the model expects {ErrnoText(m.Errno)}");
                if (m.PlacementError is { } why) return (cat + ":placement", $"emulator placed the mapping at {mapped:x}: {why}");
                if (e == 0 && mapped != m.Address) return (cat + ":address", $"emulator mapped at {mapped:x}, the model expects {m.Address:x}");
                return null;
            }
            case SysOpKind.Munmap:
            {
                Errno e = proc.Munmap(addr, op.Length);
                int m = M(() => model.Munmap(op.Proc, addr, op.Length));
                return (int)e == m ? null : (cat + ":errno", $"emulator returned {ErrnoText((int)e)}, the model expects {ErrnoText(m)}");
            }
            case SysOpKind.Mprotect:
            {
                Errno e = proc.Mprotect(addr, op.Length, (Prot)op.Prot);
                int m = M(() => model.Mprotect(op.Proc, addr, op.Length, op.Prot));
                return (int)e == m ? null : (cat + ":errno", $"emulator returned {ErrnoText((int)e)}, the model expects {ErrnoText(m)}");
            }
            case SysOpKind.Madvise:
            {
                Errno e = proc.Madvise(addr, op.Length, (Advice)op.Advice);
                int m = M(() => model.Madvise(op.Proc, addr, op.Length, op.Advice));
                return (int)e == m ? null : (cat + ":errno", $"emulator returned {ErrnoText((int)e)}, the model expects {ErrnoText(m)}");
            }
            case SysOpKind.Load:
            case SysOpKind.TryLoad:
            {
                bool throwing = op.Kind == SysOpKind.Load;
                ulong value = 0;
                FaultResult fr = FaultResult.Retry;
                ulong faultAddr = 0;
                try
                {
                    fr = LoadScalar(st.Cpu, addr, op.Width, throwing, out value);
                }
                catch (SegmentationFault sf)
                {
                    fr = sf.Result;
                    faultAddr = sf.Address;
                }
                byte[] buf = new byte[op.Width];
                AccessOutcome m = M(() => model.Access(op.Proc, addr, buf, write: false));
                if (Compare(fr, faultAddr, throwing, m) is { } fd) return (cat + ":fault", fd);
                if (fr == FaultResult.Retry)
                {
                    Span<byte> full = stackalloc byte[8];
                    full.Clear();
                    buf.CopyTo(full);
                    ulong expect = BinaryPrimitives.ReadUInt64LittleEndian(full);
                    if (value != expect) return (cat + ":value", $"emulator loaded {value:x}, the model expects {expect:x}");
                }
                return null;
            }
            case SysOpKind.Store:
            case SysOpKind.TryStore:
            {
                bool throwing = op.Kind == SysOpKind.Store;
                FaultResult fr;
                ulong faultAddr = 0;
                try
                {
                    fr = StoreScalar(st.Cpu, addr, op.Width, op.Value, throwing);
                }
                catch (SegmentationFault sf)
                {
                    fr = sf.Result;
                    faultAddr = sf.Address;
                }
                byte[] buf = new byte[8];
                BinaryPrimitives.WriteUInt64LittleEndian(buf, op.Value);
                AccessOutcome m = M(() => model.Access(op.Proc, addr, buf.AsSpan(0, op.Width), write: true));
                return Compare(fr, faultAddr, throwing, m) is { } fd ? (cat + ":fault", fd) : null;
            }
            case SysOpKind.Read:
            {
                byte[] got = new byte[op.Length];
                FaultResult fr = FaultResult.Retry;
                ulong faultAddr = 0;
                try
                {
                    st.Cpu.Read(addr, got);
                }
                catch (SegmentationFault sf)
                {
                    fr = sf.Result;
                    faultAddr = sf.Address;
                }
                byte[] want = new byte[op.Length];
                AccessOutcome m = M(() => model.Access(op.Proc, addr, want, write: false));
                if (Compare(fr, faultAddr, true, m) is { } fd) return (cat + ":fault", fd);
                int at = got.AsSpan().CommonPrefixLength(want);
                if (at < got.Length)
                    return (cat + ":bytes", $"byte {at} (address {addr + (ulong)at:x}): emulator read {got[at]:x2}, the model expects {want[at]:x2}");
                return null;
            }
            case SysOpKind.Write:
            {
                byte[] data = new byte[op.Length];
                for (int i = 0; i < data.Length; i++) data[i] = SysOp.PatternByte(op.Value, i);
                FaultResult fr = FaultResult.Retry;
                ulong faultAddr = 0;
                try
                {
                    st.Cpu.Write(addr, data);
                }
                catch (SegmentationFault sf)
                {
                    fr = sf.Result;
                    faultAddr = sf.Address;
                }
                AccessOutcome m = M(() => model.Access(op.Proc, addr, data, write: true));
                return Compare(fr, faultAddr, true, m) is { } fd ? (cat + ":fault", fd) : null;
            }
            case SysOpKind.Fork:
            {
                Process child = _fork!(proc);
                st.Procs.Add(op.Child, child);
                M(() => model.Fork(op.Proc, op.Child));
                return null;
            }
            case SysOpKind.Prctl:
            {
                Errno e = proc.Prctl(op.Option, op.Value);
                int m = M(() => model.Prctl(op.Proc, op.Option, op.Value));
                return (int)e == m ? null : (cat + ":errno", $"emulator returned {ErrnoText((int)e)}, the model expects {ErrnoText(m)}");
            }
            case SysOpKind.Exit:
            {
                proc.Exit();
                if (ReferenceEquals(st.Current, proc)) st.Current = null;
                M(() => model.Exit(op.Proc));
                return null;
            }
        }
        throw new InvalidOperationException(op.Kind.ToString());
    }

    private static FaultResult LoadScalar(Cpu cpu, ulong addr, int width, bool throwing, out ulong value)
    {
        FaultResult r = FaultResult.Retry;
        switch (width)
        {
            case 1:
            {
                byte v = 0;
                if (throwing) v = cpu.Load<byte>(addr); else r = cpu.TryLoad(addr, out v);
                value = v;
                break;
            }
            case 2:
            {
                ushort v = 0;
                if (throwing) v = cpu.Load<ushort>(addr); else r = cpu.TryLoad(addr, out v);
                value = v;
                break;
            }
            case 4:
            {
                uint v = 0;
                if (throwing) v = cpu.Load<uint>(addr); else r = cpu.TryLoad(addr, out v);
                value = v;
                break;
            }
            default:
            {
                ulong v = 0;
                if (throwing) v = cpu.Load<ulong>(addr); else r = cpu.TryLoad(addr, out v);
                value = v;
                break;
            }
        }
        return r;
    }

    private static FaultResult StoreScalar(Cpu cpu, ulong addr, int width, ulong value, bool throwing)
    {
        switch (width)
        {
            case 1:
                if (throwing) { cpu.Store(addr, (byte)value); return FaultResult.Retry; }
                return cpu.TryStore(addr, (byte)value);
            case 2:
                if (throwing) { cpu.Store(addr, (ushort)value); return FaultResult.Retry; }
                return cpu.TryStore(addr, (ushort)value);
            case 4:
                if (throwing) { cpu.Store(addr, (uint)value); return FaultResult.Retry; }
                return cpu.TryStore(addr, (uint)value);
            default:
                if (throwing) { cpu.Store(addr, value); return FaultResult.Retry; }
                return cpu.TryStore(addr, value);
        }
    }

    private static FaultResult Expected(ModelFault f) => f switch
    {
        ModelFault.None => FaultResult.Retry,
        ModelFault.MapErr => FaultResult.SegvMaperr,
        _ => FaultResult.SegvAccerr,
    };

    private static string Describe(FaultResult r, ulong address, bool withAddress) => r switch
    {
        FaultResult.Retry => "no fault",
        FaultResult.SegvMaperr => "SIGSEGV (SEGV_MAPERR)" + (withAddress ? $" at {address:x}" : ""),
        FaultResult.SegvAccerr => "SIGSEGV (SEGV_ACCERR)" + (withAddress ? $" at {address:x}" : ""),
        FaultResult.SegvPkuerr => "SIGSEGV (SEGV_PKUERR)" + (withAddress ? $" at {address:x}" : ""),
        FaultResult.Sigbus => "SIGBUS" + (withAddress ? $" at {address:x}" : ""),
        _ => "VM_FAULT_OOM" + (withAddress ? $" at {address:x}" : ""),
    };

    private static string? Compare(FaultResult emu, ulong emuAddress, bool withAddress, AccessOutcome model)
    {
        FaultResult want = Expected(model.Fault);
        if (emu == want && (emu == FaultResult.Retry || !withAddress || emuAddress == model.FaultAddress)) return null;
        return $"emulator: {Describe(emu, emuAddress, withAddress)}; the model expects {Describe(want, model.FaultAddress, withAddress)}";
    }

    // ---------------------------------------------------------------------------------------------
    // Invariants checked after every operation
    // ---------------------------------------------------------------------------------------------

    private static (string, string)? CheckInvariants(State st, SysOp op)
    {
        bool mapsChanged = op.Kind is SysOpKind.Mmap or SysOpKind.Munmap or SysOpKind.Mprotect or SysOpKind.Madvise or SysOpKind.Fork;
        foreach (var (id, p) in st.Procs)
        {
            if (p.Exited) continue;
            ModelProcess? mp = st.Model.Process(id);
            if (mp is null) return ("model", $"process p{id} runs in the emulator but not in the model");
            long rss = p.Mm.GetMmCounter(MmCounter.AnonPages);
            long upper = st.Kernel.Machine.Counters.Sum(VmEvent.ThpFaultAlloc) == 0 ? mp.MaybeResidentPages : mp.MappedPages;
            long lower = mp.RssLowerBound;
            if (rss < lower || rss > upper)
                return ("rss", $"p{id} RssAnon is {rss} pages, the model bounds it to [{lower}, {upper}]");
            if (p.Mm.TotalVm != mp.MappedPages)
                return ("vmsize", $"p{id} total_vm is {p.Mm.TotalVm} pages, the model has {mp.MappedPages} mapped");
            if (mapsChanged && (id == op.Proc || (op.Kind == SysOpKind.Fork && id == op.Child)))
            {
                List<ModelMapping> emu = EmulatorMaps(p.Mm);
                List<ModelMapping> want = mp.Maps();
                if (!emu.SequenceEqual(want))
                    return ("maps", $"p{id} maps differ at {FirstDifference(emu, want)}\n  emulator: {string.Join("; ", emu)}\n  model:    {string.Join("; ", want)}");
            }
        }
        return null;
    }

    /// <summary>The VMAs as maximal runs of equal protection and madvise flags (VMA boundaries themselves are not observable).</summary>
    internal static List<ModelMapping> EmulatorMaps(MmStruct mm)
    {
        var list = new List<ModelMapping>();
        foreach (Vma v in mm.Vmas)
        {
            int prot = (int)(v.VmFlags & VmFlags.AccessFlags);
            PageAttrs a = PageAttrs.None;
            if ((v.VmFlags & VmFlags.DontCopy) != 0) a |= PageAttrs.DontFork;
            if ((v.VmFlags & VmFlags.WipeOnFork) != 0) a |= PageAttrs.WipeOnFork;
            if ((v.VmFlags & VmFlags.HugePage) != 0) a |= PageAttrs.HugePage;
            if ((v.VmFlags & VmFlags.NoHugePage) != 0) a |= PageAttrs.NoHugePage;
            if ((v.VmFlags & VmFlags.DontDump) != 0) a |= PageAttrs.DontDump;
            if ((v.VmFlags & VmFlags.SeqRead) != 0) a |= PageAttrs.SeqRead;
            if ((v.VmFlags & VmFlags.RandRead) != 0) a |= PageAttrs.RandRead;
            if ((v.VmFlags & VmFlags.HugeTlb) != 0) a |= PageAttrs.Hugetlb;
            if (list.Count > 0 && list[^1] is var last && last.End == v.VmStart && last.Prot == prot && last.Attrs == a)
                list[^1] = last with { End = v.VmEnd };
            else
                list.Add(new ModelMapping(v.VmStart, v.VmEnd, prot, a));
        }
        return list;
    }

    private static string FirstDifference(List<ModelMapping> a, List<ModelMapping> b)
    {
        for (int i = 0; i < Math.Min(a.Count, b.Count); i++)
            if (a[i] != b[i]) return $"{Math.Min(a[i].Start, b[i].Start):x}";
        return a.Count > b.Count ? $"{a[b.Count].Start:x}" : $"{b[a.Count].Start:x}";
    }
}
