using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Cli.Emulated;
using NativeMmu.Cli.Host;
using NativeMmu.Cli.Plots;
using NativeMmu;

namespace NativeMmu.Cli.Commands;

/// <summary>`nativemmu multi-fault`: page faults per minute at N threads, emulator beside the host kernel and the zeroing ceiling.</summary>
public static class MultiFaultCommand
{
    public sealed record Point(
        [property: JsonPropertyName("threads")] int Threads,
        [property: JsonPropertyName("emulated_pf_per_min")] double EmulatedPfPerMin,
        [property: JsonPropertyName("host_pf_per_min")] double? HostPfPerMin,
        [property: JsonPropertyName("ceiling_pf_per_min")] double? CeilingPfPerMin,
        [property: JsonPropertyName("emulated_cpu_ns_per_fault")] double? EmulatedCpuNsPerFault = null,
        [property: JsonPropertyName("host_cpu_ns_per_fault")] double? HostCpuNsPerFault = null);

    public sealed record Report(
        [property: JsonPropertyName("benchmark")] string Benchmark,
        [property: JsonPropertyName("loop")] string Loop,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("points")] IReadOnlyList<Point> Points);

    public static Command Create()
    {
        var threads = new Option<string?>("--threads") { Description = "Comma-separated thread counts (default 1..nproc)" };
        var seconds = new Option<double>("--seconds") { Description = "Measured seconds per side and thread count", DefaultValueFactory = _ => 10 };
        var loop = new Option<string>("--loop") { Description = "multi-fault | page-fault1", DefaultValueFactory = _ => "multi-fault" };
        loop.AcceptOnlyFromAmong("multi-fault", "page-fault1");
        var noHost = new Option<bool>("--no-host") { Description = "Skip the host-kernel run" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var ptReclaim = new Option<string>("--pt-reclaim") { Description = "Empty PTE-table reclaim of the emulated kernel: off | refcount | sync", DefaultValueFactory = _ => "sync" };
        ptReclaim.AcceptOnlyFromAmong("off", "refcount", "sync");
        var compare = new Option<bool>("--compare-pt-reclaim") { Description = "Run the three reclaim modes interleaved (at least 5 rounds) and compare medians" };
        var rounds = new Option<int>("--rounds") { Description = "Rounds for --compare-pt-reclaim", DefaultValueFactory = _ => 5 };
        var noCeiling = new Option<bool>("--no-ceiling") { Description = "Skip the zeroing-ceiling run (ceiling_pf_per_min is null)" };
        var plot = new Option<string?>("--plot") { Description = "Also draw pf/min per thread count (emulated, host kernel, ceiling) to FILE.png or FILE.svg" };
        var serve = new Option<bool>("--serve") { Description = "Run the loop per 'THREADS SECONDS' line on stdin, one JSON line each (the compare's children)", Hidden = true };
        var cmd = new Command("multi-fault", "Page faults per minute at N threads: emulator, host kernel, zeroing ceiling")
        {
            threads, seconds, loop, noHost, json, ptReclaim, compare, rounds, noCeiling, plot, serve,
        };
        cmd.SetAction(r => r.GetValue(serve) ? Serve(r.GetValue(loop)!, ParseMode(r.GetValue(ptReclaim)!))
            : r.GetValue(compare)
            ? ComparePtReclaim(ParseThreads(r.GetValue(threads)), r.GetValue(seconds), r.GetValue(loop)!, Math.Max(5, r.GetValue(rounds)), r.GetValue(json))
            : Run(ParseThreads(r.GetValue(threads)), r.GetValue(seconds), r.GetValue(loop)!, r.GetValue(noHost), r.GetValue(json), ParseMode(r.GetValue(ptReclaim)!), r.GetValue(noCeiling), r.GetValue(plot)));
        return cmd;
    }

    internal static PtReclaimMode ParseMode(string s) => s switch
    {
        "off" => PtReclaimMode.Off,
        "refcount" => PtReclaimMode.Refcount,
        "sync" => PtReclaimMode.Sync,
        _ => throw new ArgumentException($"unknown reclaim mode '{s}'"),
    };

    internal static string ModeName(PtReclaimMode m) => m.ToString().ToLowerInvariant();

    public sealed record ComparePoint(
        [property: JsonPropertyName("threads")] int Threads,
        [property: JsonPropertyName("median_pf_per_min")] IReadOnlyDictionary<string, double> MedianPfPerMin,
        [property: JsonPropertyName("median_ratio_to_off")] IReadOnlyDictionary<string, double> MedianRatioToOff,
        [property: JsonPropertyName("added_ns_per_fault")] IReadOnlyDictionary<string, double> AddedNsPerFault);

    public sealed record CompareReport(
        [property: JsonPropertyName("benchmark")] string Benchmark,
        [property: JsonPropertyName("compare")] string Compare,
        [property: JsonPropertyName("loop")] string Loop,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("rounds")] int Rounds,
        [property: JsonPropertyName("slice_seconds")] double SliceSeconds,
        [property: JsonPropertyName("points")] IReadOnlyList<ComparePoint> Points);

    /// <summary>The longest stretch one side (a mode, the emulator, the host kernel, the ceiling) runs before the next takes its turn.</summary>
    internal const double MaxSliceSeconds = 0.5;

    /// <summary>
    /// The modes interleaved A B C A B C …, each in a process of its own; per round, each mode's pf/min,
    /// and per mode the median over the rounds and the median of its per-round ratio to off.
    /// </summary>
    /// <remarks>
    /// A reclaim mode is a kernel configuration, and each gets a process, as each would get a kernel build:
    /// the JIT's dynamic PGO profiles the fault path of whichever mode runs first in a process and lays out
    /// the others' branches as cold, which in one shared process cost the later modes 5-12 % here.
    /// Each round starts the three processes afresh (a process's own luck - code placement, where its
    /// memory lands - moved one identical mode by up to 6 %) and, once they are warm, lets them take
    /// turns in slices of at most <see cref="MaxSliceSeconds"/>, so the three modes of a round share the
    /// same stretch of a shared machine's load: here a loop's rate swings by ±15 % from one half second
    /// to the next. The paired figure, the median of each round's ratio to off, cancels what a round's
    /// modes share; the ratio of the medians does not.
    /// </remarks>
    public static int ComparePtReclaim(int[] threadCounts, double seconds, string loop, int rounds, bool json)
    {
        CompareReport report = MeasureComparePtReclaim(threadCounts, seconds, loop, rounds, out var samples);
        ClearProgress();
        if (json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(report));
            return 0;
        }
        foreach (ComparePoint p in report.Points)
        {
            Console.WriteLine();
            Console.WriteLine($" '{loop}' by PT-reclaim mode ({p.Threads} thread{(p.Threads == 1 ? "" : "s")}, {rounds} rounds of {seconds} s per mode in interleaved slices of {report.SliceSeconds:0.###} s, a process per mode, medians):");
            Console.WriteLine();
            Console.WriteLine($"  {"mode",-9} {"pf/min",16}          {"vs off",8}   {"paired",8}   {"ns/fault",8}   rounds (M pf/min)");
            foreach ((string mode, double median) in p.MedianPfPerMin)
                Console.WriteLine($"  {mode,-9} {median,16:N0} pf/min   {Percent(median / p.MedianPfPerMin["off"])}   {Percent(p.MedianRatioToOff[mode])}   {p.AddedNsPerFault[mode],8:+0.0;-0.0;0.0}   {string.Join(", ", samples[p.Threads][mode].Select(x => (x / 1e6).ToString("F1")))}");
            Console.WriteLine();
        }
        Console.WriteLine("  vs off: the ratio of the medians; paired: the median of each round's ratio to off in that round;");
        Console.WriteLine("  ns/fault: the median of each round's added time per fault on one CPU (threads x 60e9 / pf_per_min) over off.");
        return 0;
    }

    private static string Percent(double ratio) => $"{(ratio - 1) * 100,7:+0.00;-0.00}%";

    /// <summary>The rounds of <see cref="ComparePtReclaim"/>: per thread count, each mode's per-round pf/min, and the medians.</summary>
    public static CompareReport MeasureComparePtReclaim(int[] threadCounts, double seconds, string loop, int rounds, out Dictionary<int, Dictionary<string, List<double>>> samples)
    {
        PtReclaimMode[] modes = [PtReclaimMode.Off, PtReclaimMode.Refcount, PtReclaimMode.Sync];
        samples = threadCounts.ToDictionary(t => t, _ => modes.ToDictionary(ModeName, _ => new List<double>()));
        for (int r = 0; r < rounds; r++)
        {
            var children = new List<ModeChild>();
            try
            {
                foreach (PtReclaimMode m in modes) children.Add(new ModeChild(m, loop));
                foreach (int t in threadCounts)
                {
                    foreach (ModeChild c in children) c.Run(t, Math.Min(1.0, seconds / 4)); // JIT warm-up, as Run does
                    LoopResult[] totals = Interleave(seconds, [.. children.Select(c => (Func<double, LoopResult>)(s => c.Run(t, s)))], (s, n) =>
                    {
                        if (!Console.IsErrorRedirected) Console.Error.Write($"\r  round {r + 1}/{rounds}, {t} thread(s), slice {s}/{n}   ");
                    });
                    for (int i = 0; i < modes.Length; i++)
                        samples[t][ModeName(modes[i])].Add(totals[i].PerMinute);
                }
            }
            finally
            {
                foreach (ModeChild c in children) c.Dispose();
            }
        }
        var points = new List<ComparePoint>();
        foreach (int t in threadCounts)
        {
            Dictionary<string, List<double>> byMode = samples[t];
            double NsPerFault(double pfPerMin) => t * 60e9 / pfPerMin; // one CPU's time per fault
            points.Add(new ComparePoint(t,
                byMode.ToDictionary(kv => kv.Key, kv => Math.Round(Median(kv.Value))),
                byMode.ToDictionary(kv => kv.Key, kv => Math.Round(Median(kv.Value.Select((x, r) => x / byMode["off"][r]).ToList()), 4)),
                byMode.ToDictionary(kv => kv.Key, kv => Math.Round(Median(kv.Value.Select((x, r) => NsPerFault(x) - NsPerFault(byMode["off"][r])).ToList()), 2))));
        }
        return new CompareReport("multi-fault", "pt-reclaim", loop, seconds, rounds, Math.Round(seconds / SliceCount(seconds), 3), points);
    }

    /// <summary>
    /// `nativemmu multi-fault --serve`: for each request on standard input (`THREADS SECONDS`), boot a kernel
    /// of the given mode, run the loop on it, and answer with one JSON line, `{"faults":F,"seconds":S}`.
    /// </summary>
    /// <remarks>
    /// A fresh kernel per request, as a benchmark reboots between runs: three identical `off` processes
    /// that each kept one kernel across 100 interleaved slices ended up to 6 % apart; booting a kernel
    /// per slice brought them to within 2-3 %.
    /// </remarks>
    private static int Serve(string loop, PtReclaimMode mode)
    {
        bool pf1 = loop == "page-fault1";
        for (string? line; (line = Console.In.ReadLine()) is not null;)
        {
            string[] words = line.Split(' ', StringSplitOptions.RemoveEmptyEntries);
            if (words.Length != 2 || !int.TryParse(words[0], out int t) || t < 1
                || !double.TryParse(words[1], NumberStyles.Float, CultureInfo.InvariantCulture, out double s))
            {
                Console.Error.WriteLine($"multi-fault --serve: expected 'THREADS SECONDS', got '{line}'");
                return 2;
            }
            LoopResult r;
            using (var kernel = new Kernel(new KernelConfig { PtReclaim = mode }))
                r = Emulated(kernel, pf1, t, s);
            Console.Out.WriteLine(JsonSerializer.Serialize(new ServedSlice(r.Faults, r.Seconds)));
            Console.Out.Flush();
        }
        return 0;
    }

    private sealed record ServedSlice(
        [property: JsonPropertyName("faults")] long Faults,
        [property: JsonPropertyName("seconds")] double Seconds);

    /// <summary>
    /// A `multi-fault --serve` child: this command's own executable, or `dotnet` with its assembly when it
    /// runs under another host (the test runner).
    /// </summary>
    private sealed class ModeChild : IDisposable
    {
        private readonly System.Diagnostics.Process _process;
        private readonly Task<string> _stderr;
        private readonly PtReclaimMode _mode;

        public ModeChild(PtReclaimMode mode, string loop)
        {
            _mode = mode;
            string cli = typeof(MultiFaultCommand).Assembly.Location;
            string self = Environment.ProcessPath ?? "dotnet";
            bool apphost = Path.GetFileNameWithoutExtension(self) == Path.GetFileNameWithoutExtension(cli);
            var psi = new System.Diagnostics.ProcessStartInfo(apphost ? self : Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? DotnetHost(self))
            {
                RedirectStandardInput = true,
                RedirectStandardOutput = true,
                RedirectStandardError = true,
                UseShellExecute = false,
            };
            if (!apphost) psi.ArgumentList.Add(cli);
            foreach (string arg in new[] { "multi-fault", "--serve", "--pt-reclaim", ModeName(mode), "--loop", loop })
                psi.ArgumentList.Add(arg);
            _process = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
            _stderr = _process.StandardError.ReadToEndAsync();
        }

        /// <summary>The loop at <paramref name="threads"/> threads for <paramref name="seconds"/>, measured by the child.</summary>
        public LoopResult Run(int threads, double seconds)
        {
            _process.StandardInput.WriteLine($"{threads} {seconds.ToString("R", CultureInfo.InvariantCulture)}");
            _process.StandardInput.Flush();
            string? line = _process.StandardOutput.ReadLine();
            if (line is null)
            {
                _process.WaitForExit();
                throw new InvalidOperationException($"the {ModeName(_mode)} run exited with {_process.ExitCode}: {_stderr.Result.Trim()}");
            }
            ServedSlice slice = JsonSerializer.Deserialize<ServedSlice>(line) ?? throw new InvalidOperationException($"the {ModeName(_mode)} run answered '{line}'");
            return new LoopResult(slice.Faults, slice.Seconds);
        }

        public void Dispose()
        {
            try
            {
                _process.StandardInput.Close(); // end of requests: the child exits
                if (!_process.WaitForExit(30_000)) _process.Kill();
            }
            finally
            {
                _process.Dispose();
            }
        }
    }

    /// <summary>The dotnet host: the running process when it is one, else `dotnet` from PATH.</summary>
    private static string DotnetHost(string self) => Path.GetFileNameWithoutExtension(self) == "dotnet" ? self : "dotnet";

    private static double Median(List<double> xs)
    {
        var sorted = xs.OrderBy(x => x).ToArray();
        return sorted.Length % 2 == 1 ? sorted[sorted.Length / 2] : (sorted[sorted.Length / 2 - 1] + sorted[sorted.Length / 2]) / 2;
    }

    internal static int[] ParseThreads(string? spec)
    {
        if (string.IsNullOrWhiteSpace(spec)) return Enumerable.Range(1, Environment.ProcessorCount).ToArray();
        return spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries)
            .Select(s => int.TryParse(s, out int n) && n > 0 ? n : throw new ArgumentException($"bad thread count '{s}'"))
            .ToArray();
    }

    public static int Run(int[] threadCounts, double seconds, string loop, bool noHost, bool json, PtReclaimMode mode = PtReclaimMode.Sync, bool noCeiling = false, string? plotPath = null)
    {
        if (plotPath is not null) Figure.ValidatePath(plotPath);
        bool pf1 = loop == "page-fault1";
        ulong ceilingBuffer = pf1 ? 128UL << 20 : 2UL << 20;
        var points = new List<Point>();
        using var kernel = new Kernel(new KernelConfig { PtReclaim = mode });
        foreach (int t in threadCounts)
        {
            // JIT warm-up: the first second of a fresh process runs unoptimised code.
            Emulated(kernel, pf1, t, Math.Min(1.0, seconds / 4));
            var sides = new List<Func<double, LoopResult>> { s => Emulated(kernel, pf1, t, s) };
            if (!noHost) sides.Add(s => pf1 ? HostLoops.PageFault1(t, s) : HostLoops.MultiFault(t, s));
            if (!noCeiling) sides.Add(s => HostLoops.Ceiling(t, s, ceilingBuffer));
            string names = "emulated" + (noHost ? "" : ", host kernel") + (noCeiling ? "" : ", zeroing ceiling");
            LoopResult[] r = Interleave(seconds, sides, (slice, slices) =>
            {
                if (!Console.IsErrorRedirected) Console.Error.Write($"\r  {t} thread(s): {names} in turns, slice {slice}/{slices}   ");
            });
            ClearProgress();
            LoopResult emu = r[0];
            LoopResult? host = noHost ? null : r[1];
            LoopResult? ceiling = noCeiling ? null : r[^1];
            var point = new Point(t, Math.Round(emu.PerMinute), host is { } h ? Math.Round(h.PerMinute) : null, ceiling is { } c ? Math.Round(c.PerMinute) : null,
                Math.Round(emu.CpuNsPerFault, 1), host is { } hc ? Math.Round(hc.CpuNsPerFault, 1) : null);
            points.Add(point);
            if (!json) PrintPoint(loop, seconds, point, emu, host, ceiling);
        }
        var report = new Report("multi-fault", loop, seconds, points);
        if (json) Console.Out.WriteLine(JsonSerializer.Serialize(report));
        if (plotPath is not null) CommandPlots.MultiFault(report, plotPath);
        return 0;
    }

    /// <summary>
    /// Runs every side for <paramref name="seconds"/> in all, in turns (A B C A B C …) of equal slices of
    /// at most <see cref="MaxSliceSeconds"/>, and sums each side's slices. The emulator, the host kernel and
    /// the ceiling are compared as ratios; on a shared machine whose speed drifts by ±15 % from one half
    /// second to the next, sides run one after the other for seconds each would each meet a different
    /// machine, and their ratio would carry the drift. Taking turns, they share it.
    /// </summary>
    internal static LoopResult[] Interleave(double seconds, IReadOnlyList<Func<double, LoopResult>> sides, Action<int, int>? progress = null)
    {
        int slices = SliceCount(seconds);
        double slice = seconds / slices;
        var totals = new LoopResult[sides.Count];
        for (int s = 0; s < slices; s++)
        {
            progress?.Invoke(s + 1, slices);
            for (int i = 0; i < sides.Count; i++) totals[i] += sides[i](slice);
        }
        return totals;
    }

    /// <summary>How many slices of at most <see cref="MaxSliceSeconds"/> make up <paramref name="seconds"/>.</summary>
    internal static int SliceCount(double seconds) => Math.Max(1, (int)Math.Ceiling(seconds / MaxSliceSeconds - 1e-9));

    private static LoopResult Emulated(Kernel kernel, bool pf1, int threads, double seconds)
        => pf1 ? EmuLoops.PageFault1(kernel, threads, seconds) : EmuLoops.MultiFault(kernel, threads, seconds);

    private static void ClearProgress()
    {
        if (!Console.IsErrorRedirected) Console.Error.Write("\r" + new string(' ', 90) + "\r");
    }

    private static void PrintPoint(string loop, double seconds, Point p, LoopResult emu, LoopResult? host, LoopResult? ceiling)
    {
        var c = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine($" Performance counter stats for '{loop}' ({p.Threads} thread{(p.Threads == 1 ? "" : "s")}, {seconds.ToString(c)} s each):");
        Console.WriteLine();
        Console.WriteLine($"  {emu.Faults,16:N0}      page-faults    emulated      # {p.EmulatedPfPerMin,16:N0} pf/min");
        if (host is { } h)
            Console.WriteLine($"  {h.Faults,16:N0}      page-faults    host kernel   # {p.HostPfPerMin,16:N0} pf/min   emulated/host    {p.EmulatedPfPerMin / p.HostPfPerMin!.Value,6:F2}x");
        Console.WriteLine($"  {emu.CpuSeconds * 1e3,16:N2} msec task-clock     emulated      # {emu.CpuNsPerFault,16:N1} ns/fault");
        if (host is { } hc)
            Console.WriteLine($"  {hc.CpuSeconds * 1e3,16:N2} msec task-clock     host kernel   # {hc.CpuNsPerFault,16:N1} ns/fault");
        if (ceiling is { } z)
            Console.WriteLine($"  {z.Faults,16:N0}      frames-zeroed  ceiling       # {p.CeilingPfPerMin,16:N0} /min     emulated/ceiling {p.EmulatedPfPerMin / p.CeilingPfPerMin!.Value,6:F2}x");
        Console.WriteLine();
    }
}
