using NativeMmu.Cpus;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Arch.X86;
using NativeMmu.Cli.Host;
using NativeMmu.Cli.Plots;
using NativeMmu.Mm;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu fork`: the cost of fork for a populated address space. For each --size, private anonymous
/// memory is populated with 4 KiB pages, then the process forks --repeat times, each child exiting at once;
/// the median fork time and the VmPTE of parent and child (and the child's VmRSS) are reported for each
/// emulated fork mode (copy, copy-on-write PTE tables lazy and eager), beside the host kernel.
/// </summary>
public static class ForkCommand
{
    /// <summary>The host kernel's figures, or why there are none.</summary>
    public sealed record HostRun(
        [property: JsonPropertyName("fork_ms_median"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? ForkMsMedian,
        [property: JsonPropertyName("vmpte_kb"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? VmpteKb,
        [property: JsonPropertyName("vmpte_kb_child"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? VmpteKbChild,
        [property: JsonPropertyName("error"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Error,
        [property: JsonIgnore] long? RssKbChild = null,
        [property: JsonIgnore] double[]? ForkMs = null);

    /// <summary>One row of the curve: a mode (or "host") at one size.</summary>
    public sealed record Run(
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("size_bytes")] ulong SizeBytes,
        [property: JsonPropertyName("fork_ms_median"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? ForkMsMedian,
        [property: JsonPropertyName("vmpte_kb_parent"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? VmpteKbParent,
        [property: JsonPropertyName("vmpte_kb_child"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? VmpteKbChild,
        [property: JsonPropertyName("rss_kb_child"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? RssKbChild,
        [property: JsonPropertyName("error"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Error = null,
        [property: JsonIgnore] double[]? ForkMs = null,
        [property: JsonIgnore] bool TookTurns = false);

    /// <summary>
    /// The top-level keys are those of the single-size, copy-only report this command printed before the
    /// modes: the first emulated run (copy at the first size when copy ran) and the host at that size.
    /// </summary>
    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("size_bytes")] ulong SizeBytes,
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("fork_ms_median")] double ForkMsMedian,
        [property: JsonPropertyName("vmpte_kb_parent")] long VmpteKbParent,
        [property: JsonPropertyName("vmpte_kb_child")] long VmpteKbChild,
        [property: JsonPropertyName("host"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] HostRun? Host,
        [property: JsonPropertyName("runs")] IReadOnlyList<Run> Runs);

    /// <summary>The emulated run's figures: every fork's time, VmPTE of the parent and of the (first) child, and that child's VmRSS.</summary>
    public sealed record EmulatedRun(double[] ForkMs, long VmpteKbParent, long VmpteKbChild, long RssKbChild = 0);

    /// <summary>The emulated fork modes, by their command-line names, in the order they run and print.</summary>
    public static readonly IReadOnlyList<(string Name, CowPteMode CowPte)> Modes =
        [("copy", CowPteMode.Off), ("cow-pte-lazy", CowPteMode.Lazy), ("cow-pte-eager", CowPteMode.Eager)];

    public static Command Create()
    {
        var size = new Option<string>("--size") { Description = "Comma-separated sizes of anonymous memory populated with 4 KiB pages before forking (e.g. 64M,256M,1G,4G)", DefaultValueFactory = _ => "1G" };
        var mode = new Option<string>("--mode") { Description = "copy (copy_page_range copies every PTE table) | cow-pte-lazy (On-Demand-Fork, COW PTE RFC v1-v2) | cow-pte-eager (COW PTE v3-v5) | all", DefaultValueFactory = _ => "all" };
        mode.AcceptOnlyFromAmong("copy", "cow-pte-lazy", "cow-pte-eager", "all");
        var repeat = new Option<int>("--repeat") { Description = "Forks (each child exits at once); the median is reported", DefaultValueFactory = _ => 10 };
        var noHost = new Option<bool>("--no-host") { Description = "Skip the host-kernel run" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var plot = new Option<string?>("--plot") { Description = "Also draw the median fork time against the size, per mode and host kernel, to FILE.png or FILE.svg" };
        var cmd = new Command("fork", "Fork cost: populate --size of anonymous 4 KiB pages, fork --repeat times; median fork time and VmPTE of parent and child, per mode and host kernel")
        {
            size, mode, repeat, noHost, json, plot,
        };
        cmd.SetAction(r =>
        {
            try
            {
                return Execute(ParseSizes(r.GetValue(size)!), r.GetValue(mode)!, r.GetValue(repeat), r.GetValue(noHost), r.GetValue(json), r.GetValue(plot));
            }
            catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
            {
                Console.Error.WriteLine($"fork: {e.Message}");
                return 1;
            }
        });
        return cmd;
    }

    /// <summary>"64M,256M,1G": each a positive multiple of 4 KiB, in the order given, no size twice.</summary>
    public static ulong[] ParseSizes(string spec)
    {
        ulong[] sizes = [.. spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Select(Size.Parse)];
        if (sizes.Length == 0) throw new ArgumentException("--size needs at least one size");
        foreach (ulong s in sizes)
            if (s == 0 || s % Geometry.PageSize != 0) throw new ArgumentException($"--size {Size.Format(s)}: each size must be a positive multiple of 4 KiB");
        if (sizes.Distinct().Count() != sizes.Length) throw new ArgumentException("--size lists a size twice");
        return sizes;
    }

    /// <summary>The modes "copy", "cow-pte-lazy", "cow-pte-eager" or "all" selects, in the order they run.</summary>
    public static IReadOnlyList<(string Name, CowPteMode CowPte)> SelectModes(string mode)
    {
        var picked = Modes.Where(m => mode == "all" || mode == m.Name).ToList();
        return picked.Count > 0 ? picked : throw new ArgumentException($"--mode {mode}: expected copy, cow-pte-lazy, cow-pte-eager or all");
    }

    public static int Execute(IReadOnlyList<ulong> sizes, string mode, int repeat, bool noHost, bool json, string? plotPath = null)
    {
        if (plotPath is not null) Figure.ValidatePath(plotPath);
        Report report = Measure(sizes, mode, repeat, noHost);
        if (json) Console.Out.WriteLine(ToJson(report));
        else Print(report, repeat);
        if (plotPath is not null) CommandPlots.Fork(PlotRows(report), plotPath);
        return 0;
    }

    /// <summary>The (series, size, median ms) rows the plot draws: each emulated mode, and the host kernel where it was measured.</summary>
    public static IReadOnlyList<(string Series, ulong SizeBytes, double ForkMs)> PlotRows(Report r)
        => [.. r.Runs.Where(x => x.ForkMsMedian is not null).Select(x => (Legend(x.Mode), x.SizeBytes, x.ForkMsMedian!.Value))];

    private static string Legend(string mode) => mode switch
    {
        "copy" => "emulated, copy (copy_page_range copies every PTE table)",
        "cow-pte-lazy" => "emulated, cow-pte-lazy (On-Demand-Fork, COW PTE RFC v1-v2)",
        "cow-pte-eager" => "emulated, cow-pte-eager (COW PTE v3-v5, accounting at fork)",
        "host" => "host kernel",
        _ => mode,
    };

    /// <summary>For each size, each selected mode on its own emulated kernel, then (its arena freed, so the host does not copy it too) the host run.</summary>
    public static Report Measure(IReadOnlyList<ulong> sizes, string mode, int repeat, bool noHost)
    {
        if (sizes.Count == 0) throw new ArgumentException("--size needs at least one size");
        foreach (ulong s in sizes)
            if (s == 0 || s % Geometry.PageSize != 0) throw new ArgumentException("--size must be a positive multiple of 4 KiB");
        if (repeat < 1) throw new ArgumentException("--repeat must be at least 1");
        var modes = SelectModes(mode);
        ForkServerCommand.WarmUp(modes.Select(m => m.CowPte));
        var runs = new List<Run>();
        HostRun? firstHost = null;
        foreach (ulong size in sizes)
        {
            EmulatedRun[] emus = EmulatedTurns(size, repeat, [.. modes.Select(m => m.CowPte)], out bool turns);
            for (int m = 0; m < modes.Count; m++)
            {
                EmulatedRun emu = emus[m];
                runs.Add(new Run(modes[m].Name, size, Math.Round(Median(emu.ForkMs), 3), emu.VmpteKbParent, emu.VmpteKbChild, emu.RssKbChild, null, emu.ForkMs, turns));
            }
            if (noHost) continue;
            HostRun h = Host(size, repeat, out _);
            firstHost ??= h;
            runs.Add(new Run("host", size, h.ForkMsMedian, h.VmpteKb, h.VmpteKbChild, h.RssKbChild, h.Error, h.ForkMs));
        }
        Run top = runs[0];
        return new Report("fork", top.SizeBytes, top.Mode, top.ForkMsMedian!.Value, top.VmpteKbParent!.Value, top.VmpteKbChild!.Value, firstHost, runs);
    }

    public static string ToJson(Report report) => JsonSerializer.Serialize(report);

    /// <summary>
    /// Arena for the emulated run: the populated pages, their page tables twice (parent and child,
    /// 1/512 each), the vmemmap (1/64 of the arena) and room for the boot-time reservations.
    /// </summary>
    public static ulong MemoryBytesFor(ulong sizeBytes)
    {
        ulong bytes = sizeBytes + sizeBytes / 8 + (64UL << 20);
        return (bytes + Geometry.PmdSize - 1) & Geometry.PmdMask;
    }

    /// <summary>
    /// A kernel for one fork mode: copy-on-write PTE tables (when not Off) for every process, as if each had
    /// called prctl(PR_SET_COW_PTE) before its fork.
    /// </summary>
    public static KernelConfig ConfigFor(ulong sizeBytes, CowPteMode cowPte) => new()
    {
        MemoryBytes = MemoryBytesFor(sizeBytes),
        Cpus = Math.Max(2, Environment.ProcessorCount),
        CowPte = cowPte,
        CowPteAllProcesses = cowPte != CowPteMode.Off,
    };

    /// <summary>fork on the emulator with every PTE table copied.</summary>
    public static EmulatedRun Emulated(ulong sizeBytes, int repeat) => Emulated(sizeBytes, repeat, CowPteMode.Off);

    /// <summary>fork on the emulator: one process, --size mapped and written page by page, then the forks.</summary>
    public static EmulatedRun Emulated(ulong sizeBytes, int repeat, CowPteMode cowPte) => EmulatedTurns(sizeBytes, repeat, [cowPte], out _)[0];

    /// <summary>
    /// fork on the emulator for several modes, each on its own kernel with its own populated process. When
    /// their arenas fit in memory together (<see cref="ModeKernel.FitTogether"/>, <paramref name="tookTurns"/>)
    /// the modes take turns fork by fork (A B C A B C ...), so that whatever else loads the machine falls on
    /// all of them alike; otherwise they run one after another. VmPTE of the parent is taken before its first
    /// fork, VmPTE and VmRSS of the child after its parent's first.
    /// </summary>
    public static EmulatedRun[] EmulatedTurns(ulong sizeBytes, int repeat, IReadOnlyList<CowPteMode> modes, out bool tookTurns)
    {
        tookTurns = modes.Count > 1 && ModeKernel.FitTogether(sizeBytes, modes.Count);
        if (modes.Count > 1 && !tookTurns) return [.. modes.Select(m => Emulated(sizeBytes, repeat, m))];
        var kernels = new List<ModeKernel>();
        try
        {
            foreach (CowPteMode m in modes) kernels.Add(new ModeKernel(sizeBytes, m, "fork"));
            long[] vmpteParent = [.. kernels.Select(k => k.Process.Mm.PgtablesBytes >> 10)];
            long[] vmpteChild = new long[modes.Count], rssChild = new long[modes.Count];
            double[][] ms = [.. modes.Select(_ => new double[repeat])];
            for (int i = 0; i < repeat; i++)
                for (int m = 0; m < kernels.Count; m++)
                {
                    using Cpu cpu = kernels[m].Attach();
                    ms[m][i] = TimeFork(kernels[m].Process, out Process child);
                    if (i == 0)
                    {
                        vmpteChild[m] = child.Mm.PgtablesBytes >> 10;
                        rssChild[m] = child.Mm.GetMmRss() * (long)(Geometry.PageSize >> 10);
                    }
                    child.Exit();
                }
            return [.. Enumerable.Range(0, modes.Count).Select(m => new EmulatedRun(ms[m], vmpteParent[m], vmpteChild[m], rssChild[m]))];
        }
        finally
        {
            foreach (ModeKernel k in kernels) k.Dispose();
        }
    }

    /// <summary>The wall time of one fork of <paramref name="p"/>, in ms.</summary>
    private static double TimeFork(Process p, out Process child)
    {
        long t0 = Stopwatch.GetTimestamp();
        child = p.Fork("fork-child");
        long t1 = Stopwatch.GetTimestamp();
        return Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds;
    }

    /// <summary>
    /// One mode's emulated kernel and its parent process with --size populated, kept alive while the modes
    /// take turns; a turn attaches one of its CPUs to the calling thread and runs the parent on it.
    /// </summary>
    public sealed class ModeKernel : IDisposable
    {
        public ModeKernel(ulong sizeBytes, CowPteMode cowPte, string name)
        {
            Kernel = new Kernel(ConfigFor(sizeBytes, cowPte));
            try
            {
                Process = Kernel.CreateProcess(name);
                using Cpu cpu = Attach();
                Address = Populate(Process, cpu, sizeBytes);
            }
            catch
            {
                Kernel.Dispose();
                throw;
            }
        }

        public Kernel Kernel { get; }
        public Process Process { get; }
        /// <summary>Where the populated region starts in the parent.</summary>
        public ulong Address { get; }

        /// <summary>A CPU of this kernel, attached to the calling thread and running the parent; dispose it to end the turn.</summary>
        public Cpu Attach()
        {
            Cpu cpu = Kernel.AttachCpu();
            Process.Enter(cpu);
            return cpu;
        }

        public void Dispose() => Kernel.Dispose(); // exits the parent, freeing every frame

        /// <summary>
        /// Whether <paramref name="modes"/> arenas for <paramref name="sizeBytes"/> fit in half the host's
        /// MemAvailable (the populated part of each arena is resident); true where /proc/meminfo cannot be read.
        /// </summary>
        public static bool FitTogether(ulong sizeBytes, int modes)
        {
            long? availableKb = File.Exists("/proc/meminfo") ? ProcStatus.ParseKb(File.ReadAllText("/proc/meminfo"), "MemAvailable", "/proc/meminfo") : null;
            return availableKb is not { } kb || (double)MemoryBytesFor(sizeBytes) * modes <= kb * 1024.0 / 2;
        }
    }

    /// <summary>mmap --size private anonymous, MADV_NOHUGEPAGE (4 KiB pages, never a THP), one byte written to every page; returns the address.</summary>
    public static ulong Populate(Process p, Cpu cpu, ulong sizeBytes)
    {
        Size.Check(p.Mmap(0, sizeBytes, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong a), "mmap");
        Size.Check(p.Madvise(a, sizeBytes, Advice.NoHugePage), "madvise");
        for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) cpu.Store<byte>(a + off, 1);
        return a;
    }

    /// <summary>Forks <paramref name="p"/> <paramref name="repeat"/> times, each child exiting at once; the wall time of each fork, and the first child's VmPTE.</summary>
    public static double[] TimeForks(Process p, int repeat, out long vmpteChildKb)
    {
        vmpteChildKb = 0;
        var ms = new double[repeat];
        for (int i = 0; i < repeat; i++)
        {
            ms[i] = TimeFork(p, out Process child);
            if (i == 0) vmpteChildKb = child.Mm.PgtablesBytes >> 10;
            child.Exit();
        }
        return ms;
    }

    /// <summary>
    /// fork on the host kernel: --size of real anonymous memory (MADV_NOHUGEPAGE) written page by page in
    /// this process, then real forks whose children _exit at once. VmPTE is this process's own, so it also
    /// counts the runtime's mappings.
    /// </summary>
    public static unsafe HostRun Host(ulong sizeBytes, int repeat, out double[]? forkMs)
    {
        forkMs = null;
        if (!HostFork.Supported) return new HostRun(null, null, null, "the host fork stub needs x86-64 Linux");
        byte* a = null;
        try
        {
            a = HostMemory.Map(sizeBytes);
            HostMemory.Advise(a, sizeBytes, HostMemory.MADV_NOHUGEPAGE);
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) a[off] = 1;
            long? vmpte = ProcStatus.ReadKb("VmPTE");
            (long? vmpteChild, long? rssChild) = HostFork.ChildStatusKb("VmPTE", "VmRSS");
            double[] ms = HostFork.TimeForks(repeat);
            forkMs = ms;
            return new HostRun(Math.Round(Median(ms), 3), vmpte, vmpteChild, null, rssChild, ms);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or UnauthorizedAccessException or FormatException)
        {
            return new HostRun(null, null, null, e.Message);
        }
        finally
        {
            if (a != null) HostMemory.Unmap(a, sizeBytes);
        }
    }

    internal static double Median(double[] xs)
    {
        double[] s = [.. xs];
        Array.Sort(s);
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    private static void Print(Report r, int repeat)
    {
        var c = CultureInfo.InvariantCulture;
        string sizes = string.Join(", ", r.Runs.Select(x => x.SizeBytes).Distinct().Select(Size.Format));
        Console.WriteLine();
        Console.WriteLine($" Performance counter stats for 'fork' ({sizes} of 4 KiB pages populated, {repeat.ToString(c)} fork{(repeat == 1 ? "" : "s")} each, child exits at once):");
        foreach (var group in r.Runs.GroupBy(x => x.SizeBytes))
        {
            Console.WriteLine();
            Run? copy = group.FirstOrDefault(x => x.Mode == "copy");
            foreach (Run x in group)
            {
                string who = x.Mode == "host" ? "host kernel" : "emulated, " + x.Mode;
                if (x.Error is not null)
                {
                    Console.WriteLine($"  {Size.Format(x.SizeBytes),7}  {who,-24}  not measured: {x.Error}");
                    continue;
                }
                string ratio = copy is not null && x != copy && copy.ForkMsMedian is double cm && x.ForkMsMedian > 0
                    ? $"   copy/this {cm / x.ForkMsMedian!.Value,8:F2}x" : "";
                Console.WriteLine($"  {Size.Format(x.SizeBytes),7}  {who,-24} {x.ForkMsMedian,10:F3} ms  fork (median)  ( {x.ForkMs!.Min(),8:F3} .. {x.ForkMs!.Max(),8:F3} ms )"
                    + $"   VmPTE parent {x.VmpteKbParent,7:N0} kB  child {x.VmpteKbChild,7:N0} kB   child VmRSS {x.RssKbChild,10:N0} kB{ratio}");
            }
        }
        Console.WriteLine();
        Console.WriteLine("  copy/this: copy's median fork time over this row's, at the same size.");
        if (r.Runs.Any(x => x.TookTurns)) Console.WriteLine("  The emulated modes took turns fork by fork (A B C A B C ...), each on its own kernel.");
        if (r.Runs.Any(x => x.Mode != "host" && !x.TookTurns) && r.Runs.Select(x => x.Mode).Distinct().Count(m => m != "host") > 1)
            Console.WriteLine("  At some sizes the emulated modes ran one after another: their arenas would not fit in memory together.");
        Console.WriteLine("  The host's VmPTE and VmRSS count this process's other mappings (the runtime's) as well.");
        Console.WriteLine();
    }
}
