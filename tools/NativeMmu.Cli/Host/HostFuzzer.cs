using System.Diagnostics;
using System.Globalization;
using System.Text;
using NativeMmu.Cpus;
using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Model;
using NativeMmu.Mm;

namespace NativeMmu.Cli.Host;

/// <summary>
/// The host's configuration as the emulator takes it: the THP and mTHP knobs are copied into every
/// emulated kernel; what the emulator cannot take, or does not have, becomes an exclusion with its reason.
/// </summary>
internal sealed class HostConfig
{
    private const string ThpDir = "/sys/kernel/mm/transparent_hugepage";
    private readonly List<(string Path, string Value)> _thp = [];

    public List<string> Exclusions { get; } = [];

    /// <summary>The host's read faults map no shared zero page; the emulator then boots with <see cref="KernelConfig.ForbidZeroPage"/>.</summary>
    public bool ForbidZeroPage { get; private set; }

    /// <summary>The host's CPUs have protection keys turned on (ospke); the emulator then boots with <see cref="KernelConfig.Pku"/>.</summary>
    public bool Pku { get; private set; }

    public static HostConfig Read()
    {
        var c = new HostConfig();
        static string? ReadOrNull(string p) => File.Exists(p) ? File.ReadAllText(p).Trim() : null;
        static string Selected(string s) => s.Split(' ').FirstOrDefault(w => w.StartsWith('['))?.Trim('[', ']') ?? s;
        var probe = new Thp();
        void Take(string rel)
        {
            if (ReadOrNull(Path.Combine(ThpDir, rel)) is not { } raw) return;
            string v = rel == "use_zero_page" ? raw : Selected(raw);
            try
            {
                probe.Write(rel, v);
                c._thp.Add((rel, v));
            }
            catch (ArgumentException)
            {
                if (v != "never") c.Exclusions.Add($"THP knob {rel} = {v} on the host: the emulator has no such knob value; programs whose RssAnon depends on it may differ");
            }
        }
        if (!HostMapsZeroPage())
        {
            c.ForbidZeroPage = true;
            c.Exclusions.Add("the host's read faults map no zero page (a read of untouched anonymous memory got an exclusive page, as a kernel booted with pvm_no_zero_page=1 does): the emulator is booted with ForbidZeroPage to match");
        }
        if (HostHasOspke())
        {
            c.Pku = true;
            c.Exclusions.Add("the host's CPUs have protection keys (ospke in /proc/cpuinfo): PROT_EXEC alone gives a mapping the execute-only pkey, so a load there is SIGSEGV with SEGV_PKUERR; the emulator is booted with Pku to match");
        }
        Take("enabled");
        Take("use_zero_page");
        if (Directory.Exists(ThpDir))
            foreach (string d in Directory.GetDirectories(ThpDir, "hugepages-*kB").Order(StringComparer.Ordinal))
                Take(Path.GetFileName(d) + "/enabled");
        string? defrag = ReadOrNull(Path.Combine(ThpDir, "defrag"));
        if (defrag is not null)
            c.Exclusions.Add($"THP defrag = {Selected(defrag)} on the host: the emulator's THP allocation never fails for fragmentation; a fault the host serves with small pages counts as a difference in RssAnon only where MADV_HUGEPAGE regions hold 2 MiB");
        string? minAddr = ReadOrNull("/proc/sys/vm/mmap_min_addr");
        if (minAddr is not null && minAddr != Linux.MmapMinAddr.ToString(CultureInfo.InvariantCulture))
            c.Exclusions.Add($"vm.mmap_min_addr is {minAddr} on the host, {Linux.MmapMinAddr} in the emulator (a constant there): operations below 0x{Linux.MmapMinAddr:x} are cut");
        else
            c.Exclusions.Add($"operations below 0x{Linux.MmapMinAddr:x} are cut: the executor runs as root, whose CAP_SYS_RAWIO waives mmap_min_addr");
        string? overcommit = ReadOrNull("/proc/sys/vm/overcommit_memory");
        if (overcommit is not null && overcommit != "0")
            c.Exclusions.Add($"vm.overcommit_memory is {overcommit} on the host; the emulator does not account commit charge");
        else
            c.Exclusions.Add("vm.overcommit_memory heuristic (0) on the host; the emulator does not account commit charge: no program maps more than the heuristic allows");
        string? maxMap = ReadOrNull("/proc/sys/vm/max_map_count");
        if (maxMap is not null && maxMap != NativeMmu.Mm.Mmap.MaxMapCount.ToString(CultureInfo.InvariantCulture))
            c.Exclusions.Add($"vm.max_map_count is {maxMap} on the host, {NativeMmu.Mm.Mmap.MaxMapCount} in the emulator: no program comes near either");
        c.Exclusions.Add("the executor's own mappings (image, heap, stack and its guard gap, vDSO, vvar) and the page next to each anonymous one: operations reaching them are cut; the emulator holds PROT_NONE placeholders there so that placement agrees");
        c.Exclusions.Add("KSM (MADV_MERGEABLE / MADV_UNMERGEABLE): the host accepts them (CONFIG_KSM), the emulator has no KSM and refuses them with EINVAL; they are taken out of every generated program");
        c.Exclusions.Add("MADV_GUARD_INSTALL / MADV_GUARD_REMOVE (6.13): the host accepts them, the emulator refuses them (EINVAL): guard regions need PTE markers that zap, fork's page-table copy and the fault path keep or drop, and this kernel's page tables hold no non-present entries yet: not generated");
        c.Exclusions.Add("MADV_FREE under memory pressure: reclaim discards clean lazily freed pages on the host (they then read as zeroes and leave RssAnon); the emulator has no reclaim and keeps them, as the host does without pressure. MADV_PAGEOUT discards them on both sides, except a lazily freed THP (the emulator keeps it) and, on the host, a page freed on another CPU whose per-CPU LRU batch was not drained (not on the LRU: skipped)");
        c.Exclusions.Add("a large folio that MADV_FREE, MADV_COLD or MADV_PAGEOUT covers in part: the host's split_folio leaves order-0 folios, the emulator maps the zero-filled subpages to the zero page as the split does but keeps the folio large, so its other subpages are not lazily freed one by one and a later MADV_PAGEOUT keeps them (RssAnon differs by those pages)");
        c.Exclusions.Add("MAP_GROWSDOWN: the emulator sets VM_GROWSDOWN but has no stack expansion (no fault below such a VMA grows it, no stack guard gap in placement): not generated");
        c.Exclusions.Add("MAP_SHARED (shared anonymous memory is shmem on the host; the emulator has none and refuses it) and MAP_HUGETLB (the host's hugetlb pool is empty, vm.nr_hugepages 0, so its mmap fails with ENOMEM where the emulator maps from its own pool): not generated");
        c.Exclusions.Add("MADV_COLLAPSE: the emulator has no khugepaged and refuses it (EINVAL); the host collapses: not generated");
        c.Exclusions.Add("VmRSS, RssFile: the executor's file pages; only RssAnon and VmSize are compared, both less the executor's own");
        c.Exclusions.Add("SIGBUS: anonymous private memory raises none on either side; si_code is compared for SIGSEGV only");
        return c;
    }

    /// <summary>
    /// A read of one untouched anonymous page, then its /proc/self/pagemap entry: the zero page is present
    /// but not exclusively mapped (PM_MMAP_EXCLUSIVE, bit 56, needs a vm_normal_page). True when the
    /// host cannot tell (no pagemap), as mainline maps it.
    /// </summary>
    private static unsafe bool HostMapsZeroPage()
    {
        const ulong Present = 1UL << 63, Exclusive = 1UL << 56;
        const ulong Page = NativeMmu.Arch.X86.Geometry.PageSize;
        byte* p = HostMemory.Map(Page);
        try
        {
            HostMemory.Advise(p, Page, HostMemory.MADV_NOHUGEPAGE);
            _ = Volatile.Read(ref p[0]);
            using var pagemap = File.OpenHandle("/proc/self/pagemap");
            Span<byte> entry = stackalloc byte[8]; // one 64-bit entry per virtual page
            if (RandomAccess.Read(pagemap, entry, (long)((ulong)p / Page * 8)) != 8) return true;
            ulong e = BitConverter.ToUInt64(entry);
            return (e & Present) == 0 || (e & Exclusive) == 0;
        }
        catch (IOException) { return true; }
        catch (UnauthorizedAccessException) { return true; }
        finally { HostMemory.Unmap(p, Page); }
    }

    /// <summary>X86_FEATURE_OSPKE as the host's kernel reports it: "ospke" among the flags of /proc/cpuinfo.</summary>
    private static bool HostHasOspke()
    {
        const string CpuInfo = "/proc/cpuinfo";
        if (!File.Exists(CpuInfo)) return false;
        foreach (string line in File.ReadLines(CpuInfo))
            if (line.StartsWith("flags", StringComparison.Ordinal))
                return line[(line.IndexOf(':') + 1)..].Split(' ', StringSplitOptions.RemoveEmptyEntries).Contains("ospke");
        return false;
    }

    /// <summary>The emulated kernel's boot configuration for this host: <paramref name="config"/> with the host's zero-page and protection-key policy.</summary>
    public KernelConfig BootConfig(KernelConfig config) => config with { ForbidZeroPage = ForbidZeroPage, Pku = Pku };

    public void Apply(Kernel kernel)
    {
        foreach (var (path, value) in _thp) kernel.Machine.Thp.Write(path, value);
    }
}

/// <summary>
/// The emulator's side of <c>fuzz host</c>: the same program on a fresh emulated kernel, rendered in
/// the executor's line format from the emulator's /proc renderers (ProcStatus for RssAnon and VmSize,
/// ProcMaps for the maps) and the VMAs' madvise flags. Operations the host cut are not run here either.
/// </summary>
internal sealed class HostEmulatorRunner(HostConfig config, IReadOnlyList<(ulong Start, ulong End)> own)
{
    private static readonly KernelConfig Config = ProgramRunner.Config with { MemoryBytes = 128UL << 20 };

    public List<HostObservation> Run(SysProgram program, IReadOnlyList<HostObservation> host)
    {
        var kernel = new Kernel(config.BootConfig(Config));
        config.Apply(kernel);
        Cpu cpu = kernel.AttachCpu();
        var result = new List<HostObservation>(program.Ops.Count);
        try
        {
            var procs = new Dictionary<int, Process>();
            var labels = new Dictionary<int, ulong>();
            var everUsed = new HashSet<int>();
            for (int i = 0; i < program.Processes; i++)
            {
                Process p = kernel.CreateProcess($"p{i}");
                p.Enter(cpu);
                foreach (var (s, e) in own)
                {
                    Errno err = p.Mmap(s, e - s, Prot.None, MapFlags.Private | MapFlags.Anonymous | MapFlags.Fixed, out _);
                    if (err != 0) throw new InvalidOperationException($"placeholder {s:x}-{e:x}: {err}");
                }
                procs[i] = p;
                everUsed.Add(i);
            }
            Process? current = null;
            for (int i = 0; i < program.Ops.Count; i++)
            {
                SysOp op = program.Ops[i];
                ulong addr = op.Addr.Resolve(labels);
                if (!procs.TryGetValue(op.Proc, out Process? proc) || proc.Exited) { result.Add(new("s")); continue; }
                if (op.Kind == SysOpKind.Fork && (op.Child >= SysProgram.MaxProcesses || everUsed.Contains(op.Child))) { result.Add(new("s")); continue; }
                if (op.Kind is SysOpKind.Load or SysOpKind.Store or SysOpKind.TryLoad or SysOpKind.TryStore or SysOpKind.Read or SysOpKind.Write)
                {
                    ulong len = op.Kind is SysOpKind.Read or SysOpKind.Write ? op.Length : (ulong)op.Width;
                    if (ProgramRunner.OutsideUserHalf(addr, len)) { result.Add(new("s")); continue; }
                }
                if (i < host.Count && host[i].Cut)
                {
                    if (op.Kind == SysOpKind.Mmap) labels[op.Label] = 0;
                    result.Add(host[i]);
                    continue;
                }
                if (!ReferenceEquals(current, proc))
                {
                    proc.Enter(cpu);
                    current = proc;
                }
                string line;
                try
                {
                    line = Step(op, proc, cpu, addr, labels, procs, everUsed);
                }
                catch (Exception e) when (e is not OutOfMemoryException)
                {
                    line = $"x emulator threw {e.GetType().Name}: {e.Message}";
                    result.Add(new(line));
                    for (int j = i + 1; j < program.Ops.Count; j++) result.Add(new("x"));
                    return result;
                }
                if (op.Kind == SysOpKind.Exit && ReferenceEquals(current, proc)) current = null;
                result.Add(new(line));
            }
            foreach (Process p in procs.Values) if (!p.Exited) p.Exit();
            return result;
        }
        finally
        {
            cpu.Dispose();
            kernel.Dispose();
        }
    }

    private string Step(SysOp op, Process proc, Cpu cpu, ulong addr, Dictionary<int, ulong> labels, Dictionary<int, Process> procs, HashSet<int> everUsed)
    {
        var sb = new StringBuilder("o ");
        bool maps = true;
        switch (op.Kind)
        {
            case SysOpKind.Mmap:
            {
                Errno e = proc.Mmap(addr, op.Length, (Prot)op.Prot, (MapFlags)(Linux.MapPrivate | Linux.MapAnonymous | op.Flags), out ulong mapped);
                labels[op.Label] = e == 0 ? mapped : 0;
                sb.Append(e == 0 ? $"e=0 a={mapped:x}" : $"e={(int)e}");
                break;
            }
            case SysOpKind.Munmap:
                sb.Append(CultureInfo.InvariantCulture, $"e={(int)proc.Munmap(addr, op.Length)}");
                break;
            case SysOpKind.Mprotect:
                sb.Append(CultureInfo.InvariantCulture, $"e={(int)proc.Mprotect(addr, op.Length, (Prot)op.Prot)}");
                break;
            case SysOpKind.Madvise:
                sb.Append(CultureInfo.InvariantCulture, $"e={(int)proc.Madvise(addr, op.Length, (Advice)op.Advice)}");
                break;
            case SysOpKind.Load:
            case SysOpKind.TryLoad:
            case SysOpKind.Store:
            case SysOpKind.TryStore:
            {
                maps = false;
                bool store = op.Kind is SysOpKind.Store or SysOpKind.TryStore;
                bool throwing = op.Kind is SysOpKind.Load or SysOpKind.Store;
                byte[] buf = new byte[8];
                try
                {
                    FaultResult fr;
                    if (store)
                    {
                        System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(buf, op.Value);
                        fr = Scalar(cpu, addr, op.Width, buf, true, throwing);
                    }
                    else
                    {
                        fr = Scalar(cpu, addr, op.Width, buf, false, throwing);
                    }
                    if (fr != FaultResult.Retry) sb.Append(Signal(fr));
                    else if (store) sb.Append("ok");
                    else sb.Append(CultureInfo.InvariantCulture, $"v={System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(buf):x}");
                }
                catch (SegmentationFault sf)
                {
                    sb.Append(Signal(sf.Result)).Append(Relative(sf.Address, addr));
                }
                break;
            }
            case SysOpKind.Read:
            case SysOpKind.Write:
            {
                maps = false;
                byte[] data = new byte[op.Length];
                try
                {
                    if (op.Kind == SysOpKind.Write)
                    {
                        for (int i = 0; i < data.Length; i++) data[i] = SysOp.PatternByte(op.Value, i);
                        cpu.Write(addr, data);
                        sb.Append("ok");
                    }
                    else
                    {
                        cpu.Read(addr, data);
                        sb.Append("v=").Append(Convert.ToHexStringLower(data));
                    }
                }
                catch (SegmentationFault sf)
                {
                    sb.Append(Signal(sf.Result)).Append(Relative(sf.Address, addr));
                }
                break;
            }
            case SysOpKind.Fork:
            {
                Process child = proc.Fork();
                procs[op.Child] = child;
                everUsed.Add(op.Child);
                sb.Append("ok");
                sb.Append(State(proc, true)).Append(" child:").Append(State(child, true));
                return sb.ToString();
            }
            case SysOpKind.Exit:
                proc.Exit();
                return "o ok";
        }
        sb.Append(State(proc, maps));
        return sb.ToString();
    }

    private static FaultResult Scalar(Cpu cpu, ulong addr, int width, byte[] buf, bool store, bool throwing)
    {
        ulong v = System.Buffers.Binary.BinaryPrimitives.ReadUInt64LittleEndian(buf);
        FaultResult r = FaultResult.Retry;
        ulong got = 0;
        switch (width)
        {
            case 1:
                if (store) { if (throwing) cpu.Store(addr, (byte)v); else r = cpu.TryStore(addr, (byte)v); }
                else { byte b = 0; if (throwing) b = cpu.Load<byte>(addr); else r = cpu.TryLoad(addr, out b); got = b; }
                break;
            case 2:
                if (store) { if (throwing) cpu.Store(addr, (ushort)v); else r = cpu.TryStore(addr, (ushort)v); }
                else { ushort b = 0; if (throwing) b = cpu.Load<ushort>(addr); else r = cpu.TryLoad(addr, out b); got = b; }
                break;
            case 4:
                if (store) { if (throwing) cpu.Store(addr, (uint)v); else r = cpu.TryStore(addr, (uint)v); }
                else { uint b = 0; if (throwing) b = cpu.Load<uint>(addr); else r = cpu.TryLoad(addr, out b); got = b; }
                break;
            default:
                if (store) { if (throwing) cpu.Store(addr, v); else r = cpu.TryStore(addr, v); }
                else { ulong b = 0; if (throwing) b = cpu.Load<ulong>(addr); else r = cpu.TryLoad(addr, out b); got = b; }
                break;
        }
        if (!store) System.Buffers.Binary.BinaryPrimitives.WriteUInt64LittleEndian(buf, got);
        return r;
    }

    private static string Signal(FaultResult r) => r switch
    {
        FaultResult.SegvMaperr => "sig=11/1",
        FaultResult.SegvAccerr => "sig=11/2",
        FaultResult.SegvPkuerr => "sig=11/4",
        FaultResult.Sigbus => "sig=7/2",
        _ => "oom",
    };

    private static string Relative(ulong fault, ulong operand)
    {
        long d = unchecked((long)(fault - operand));
        return d < 0 ? $"@-{unchecked((ulong)-d):x}" : $"@+{(ulong)d:x}";
    }

    private string State(Process p, bool withMaps)
    {
        string status = p.ProcStatus();
        long rss = StatusKb(status, "RssAnon:"), vm = StatusKb(status, "VmSize:");
        long ownKb = own.Sum(o => (long)((o.End - o.Start) >> 10));
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $" rss={rss} vm={vm - ownKb}");
        if (!withMaps) return sb.ToString();
        sb.Append(" maps=");
        var parts = new List<string>();
        string[] lines = p.ProcMaps().Split('\n', StringSplitOptions.RemoveEmptyEntries);
        int idx = 0;
        foreach (Vma v in p.Mm.Vmas)
        {
            string line = lines[idx++];
            int dash = line.IndexOf('-'), sp = line.IndexOf(' ');
            ulong s = ulong.Parse(line.AsSpan(0, dash), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            ulong e = ulong.Parse(line.AsSpan(dash + 1, sp - dash - 1), NumberStyles.HexNumber, CultureInfo.InvariantCulture);
            string perms = line.Substring(sp + 1, 4);
            string flags = MadviseFlags(v.VmFlags);
            // A placeholder may have merged with a neighbour: what is left of the VMA outside them.
            foreach (var (cs, ce) in Clip(s, e)) parts.Add($"{cs:x}-{ce:x}:{perms}:{flags}");
        }
        sb.Append(parts.Count == 0 ? "-" : string.Join(',', parts));
        // AnonHugePages: PMD-mapped THPs (the placeholders hold none).
        sb.Append(CultureInfo.InvariantCulture, $" thp={StatusKb(p.ProcSmapsRollup(), "AnonHugePages:")}");
        return sb.ToString();
    }

    private IEnumerable<(ulong, ulong)> Clip(ulong s, ulong e)
    {
        var pieces = new List<(ulong, ulong)> { (s, e) };
        foreach (var (os, oe) in own)
        {
            var next = new List<(ulong, ulong)>();
            foreach (var (ps, pe) in pieces)
            {
                if (oe <= ps || pe <= os) { next.Add((ps, pe)); continue; }
                if (ps < os) next.Add((ps, os));
                if (oe < pe) next.Add((oe, pe));
            }
            pieces = next;
        }
        return pieces;
    }

    private static string MadviseFlags(VmFlags f)
    {
        var names = new List<string>();
        if ((f & VmFlags.DontCopy) != 0) names.Add("dc");
        if ((f & VmFlags.WipeOnFork) != 0) names.Add("wf");
        if ((f & VmFlags.HugePage) != 0) names.Add("hg");
        if ((f & VmFlags.NoHugePage) != 0) names.Add("nh");
        if ((f & VmFlags.DontDump) != 0) names.Add("dd");
        if ((f & VmFlags.SeqRead) != 0) names.Add("sr");
        if ((f & VmFlags.RandRead) != 0) names.Add("rr");
        return names.Count == 0 ? "-" : string.Join('+', names);
    }

    private static long StatusKb(string status, string key)
    {
        int i = status.IndexOf(key, StringComparison.Ordinal);
        if (i < 0) return 0;
        int j = status.IndexOf(" kB", i, StringComparison.Ordinal);
        return long.Parse(status.AsSpan(i + key.Length, j - i - key.Length).Trim(), CultureInfo.InvariantCulture);
    }
}

/// <summary>
/// <c>fuzz host</c>: random programs run on the real kernel (<see cref="HostExecutor"/>) and on the
/// emulator (<see cref="HostEmulatorRunner"/>), compared operation by operation; a difference is shrunk
/// with the system fuzzer's <see cref="Shrinker"/>.
/// </summary>
internal sealed class HostFuzzer : IDisposable
{
    private readonly HostExecutor _host;
    private readonly HostEmulatorRunner _emu;

    public HostConfig Config { get; }

    public HostFuzzer()
    {
        Config = HostConfig.Read();
        _host = HostExecutor.Start();
        _emu = new HostEmulatorRunner(Config, _host.OwnMappings);
    }

    public Action<long, long>? Progress { get; set; }
    internal int ShrinkTrials { get; set; } = 3000;
    internal TimeSpan ShrinkTime { get; set; } = TimeSpan.FromSeconds(30);

    /// <summary>KSM's advice: the host (CONFIG_KSM) accepts it, the emulator has no KSM and refuses it.</summary>
    internal static bool Excluded(SysOp op)
        => op.Kind == SysOpKind.Madvise && op.Advice is Linux.MadvMergeable or Linux.MadvUnmergeable;

    /// <summary>The program without the operations the exclusions name.</summary>
    internal static SysProgram WithoutExcluded(SysProgram p)
        => p.Ops.Any(Excluded) ? p.WithOps(p.Ops.Where(o => !Excluded(o)).ToList()) : p;

    /// <summary>
    /// Advice the emulator accepts that the system fuzzer's generator does not send (its model has no
    /// MADV_POPULATE_*, and cannot tell what MADV_PAGEOUT does to lazily freed pages).
    /// </summary>
    internal static readonly int[] ExtraAdvices = [Linux.MadvPopulateRead, Linux.MadvPopulateWrite, Linux.MadvFree, Linux.MadvFree];

    /// <summary>
    /// mmap flags the emulator parses that the system fuzzer's generator does not send (its model does
    /// not know mlock or VM_SYNC). MAP_GROWSDOWN is an exclusion; MAP_SHARED and MAP_HUGETLB the
    /// emulator refuses.
    /// </summary>
    internal static readonly int[] ExtraMmapFlags = [Linux.MapLocked, Linux.MapLocked, Linux.MapNoReserve, Linux.MapDenyWrite, Linux.MapExecutable, Linux.MapSync];

    /// <summary>
    /// The session's index-th program: the system fuzzer's, extended (from the seed, so the session
    /// stays reproducible) with what that generator does not send because its model does not know it:
    /// one madvise in five gets an advice from <see cref="ExtraAdvices"/>, one mmap in eight a flag from
    /// <see cref="ExtraMmapFlags"/>; the excluded operations are taken out.
    /// </summary>
    internal static SysProgram Generate(ulong seed, ulong index)
    {
        ulong s = SplitMix64.Mix(seed, index);
        SysProgram p = ProgramGenerator.Generate(s, fork: true);
        var rng = new SplitMix64(s ^ 0x686f7374);
        var ops = new List<SysOp>(p.Ops.Count);
        foreach (SysOp o in p.Ops)
        {
            SysOp op = o;
            switch (o.Kind)
            {
                case SysOpKind.Madvise when rng.Below(5) == 0:
                    op = o with { Advice = rng.Pick(ExtraAdvices) };
                    break;
                case SysOpKind.Mmap when rng.Below(8) == 0:
                    op = o with { Flags = o.Flags | rng.Pick(ExtraMmapFlags) };
                    break;
            }
            ops.Add(op);
        }
        return WithoutExcluded(p.WithOps(ops));
    }

    /// <summary>Both sides of one program; the first difference, if any.</summary>
    internal RunResult RunProgram(SysProgram program)
    {
        List<HostObservation> h = _host.Run(program);
        List<HostObservation> e = _emu.Run(program, h);
        return Compare(program, h, e);
    }

    private static RunResult Compare(SysProgram program, List<HostObservation> h, List<HostObservation> e)
    {
        int executed = 0;
        for (int i = 0; i < program.Ops.Count; i++)
        {
            if (h[i].Skipped && e[i].Skipped) continue;
            if (h[i].Cut) continue;
            executed++;
            if (h[i].Line == e[i].Line) continue;
            return new RunResult(executed, Difference(i, program.Ops[i], h[i].Line, e[i].Line));
        }
        return new RunResult(executed, null);
    }

    internal static RunFailure Difference(int index, SysOp op, string host, string emu)
    {
        string kind = op.Kind.ToString().ToLowerInvariant();
        if (emu.StartsWith('x')) return new RunFailure(index, "exception", $"{op}: {emu[2..]}");
        string[] ht = host.Split(' '), et = emu.Split(' ');
        int child = Array.IndexOf(ht, "child:");
        for (int k = 0; k < Math.Max(ht.Length, et.Length); k++)
        {
            string a = k < ht.Length ? ht[k] : "", b = k < et.Length ? et[k] : "";
            if (a == b) continue;
            string field = a.Contains('=') ? a[..a.IndexOf('=')] : b.Contains('=') ? b[..b.IndexOf('=')] : "result";
            if (field is "e" or "a" or "v" or "sig" or "ok" or "result") field = "result";
            if (child >= 0 && k > child) field = "child " + field;
            return new RunFailure(index, $"{kind}:{field}", $"{op}: host {Trim(a)}, emulator {Trim(b)}\n  host:     {Trim(host, 400)}\n  emulator: {Trim(emu, 400)}");
        }
        return new RunFailure(index, kind, $"{op}: host '{host}', emulator '{emu}'");
    }

    private static string Trim(string s, int max = 120) => s.Length <= max ? (s.Length == 0 ? "(nothing)" : s) : s[..max] + "…";

    /// <summary>
    /// Programs from <paramref name="seed"/> for <paramref name="duration"/>. The host runs program i+1
    /// while the emulator runs program i (two processes, two cores); a shrink runs both sides in turn.
    /// </summary>
    public SystemFuzzResult Run(ulong seed, TimeSpan duration)
    {
        var clock = Stopwatch.StartNew();
        long programs = 0, operations = 0;
        var failures = new List<SystemFailure>();
        var seen = new HashSet<string>();
        SysProgram next = Generate(seed, 0);
        Task<List<HostObservation>> hostNext = Task.Run(() => _host.Run(next));
        for (ulong i = 0; ; i++)
        {
            SysProgram program = next;
            List<HostObservation> h = hostNext.Result;
            bool more = clock.Elapsed < duration;
            if (more)
            {
                next = Generate(seed, i + 1);
                SysProgram n = next;
                hostNext = Task.Run(() => _host.Run(n));
            }
            RunResult r = Compare(program, h, _emu.Run(program, h));
            programs++;
            operations += r.OpsExecuted;
            Progress?.Invoke(programs, operations);
            if (r.Failure is { } f && failures.Count < SystemFuzzer.MaxFailures && seen.Add(SystemFuzzer.Signature(f)))
            {
                if (more) hostNext.Wait(); // the executor serves one program at a time
                var shrinker = new Shrinker(RunProgram, ShrinkTrials, ShrinkTime);
                (SysProgram small, RunFailure final) = shrinker.Shrink(program, f);
                if (SystemFuzzer.Signature(final) == SystemFuzzer.Signature(f) || seen.Add(SystemFuzzer.Signature(final)))
                    failures.Add(new SystemFailure(SystemFuzzer.Describe(final), Replayable(small)));
            }
            if (!more) break;
        }
        return new SystemFuzzResult(seed, programs, operations, failures);
    }

    public SystemFuzzResult Replay(string text)
    {
        SysProgram program = SysProgram.Parse(text);
        // Copy-on-write page tables are the COW PTE series', which mainline Linux has not: its prctl option
        // 65 is PR_SET_MDWE, and the executor has no prctl operation.
        if (program.CowPte != CowPteMode.Off || program.Ops.Any(op => op.Kind == SysOpKind.Prctl))
            throw new FormatException("fuzz host runs no program with a cowpte line or prctl: replay it with fuzz system");
        RunResult r = RunProgram(program);
        var failures = new List<SystemFailure>();
        if (r.Failure is { } f) failures.Add(new SystemFailure(SystemFuzzer.Describe(f), Replayable(program)));
        return new SystemFuzzResult(program.Seed, 1, r.OpsExecuted, failures);
    }

    private static string Replayable(SysProgram p)
        => p.ToString().Replace("nativemmu fuzz system --replay FILE", "nativemmu fuzz host --replay FILE", StringComparison.Ordinal);

    public void Dispose() => _host.Dispose();
}
