using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Cli.Emulated;
using NativeMmu.Cli.Host;
using NativeMmu;

namespace NativeMmu.Cli.Commands;

/// <summary>`nativemmu multi-fault`: page faults per minute at N threads, emulator beside the host kernel and the zeroing ceiling.</summary>
public static class MultiFaultCommand
{
    public sealed record Point(
        [property: JsonPropertyName("threads")] int Threads,
        [property: JsonPropertyName("emulated_pf_per_min")] double EmulatedPfPerMin,
        [property: JsonPropertyName("host_pf_per_min")] double? HostPfPerMin,
        [property: JsonPropertyName("ceiling_pf_per_min")] double? CeilingPfPerMin);

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
        var cmd = new Command("multi-fault", "Page faults per minute at N threads: emulator, host kernel, zeroing ceiling")
        {
            threads, seconds, loop, noHost, json, ptReclaim, compare, rounds, noCeiling,
        };
        cmd.SetAction(r => r.GetValue(compare)
            ? ComparePtReclaim(ParseThreads(r.GetValue(threads)), r.GetValue(seconds), r.GetValue(loop)!, Math.Max(5, r.GetValue(rounds)), r.GetValue(json))
            : Run(ParseThreads(r.GetValue(threads)), r.GetValue(seconds), r.GetValue(loop)!, r.GetValue(noHost), r.GetValue(json), ParseMode(r.GetValue(ptReclaim)!), r.GetValue(noCeiling)));
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
        [property: JsonPropertyName("median_pf_per_min")] IReadOnlyDictionary<string, double> MedianPfPerMin);

    public sealed record CompareReport(
        [property: JsonPropertyName("benchmark")] string Benchmark,
        [property: JsonPropertyName("compare")] string Compare,
        [property: JsonPropertyName("loop")] string Loop,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("rounds")] int Rounds,
        [property: JsonPropertyName("points")] IReadOnlyList<ComparePoint> Points);

    /// <summary>
    /// The modes interleaved A B C A B C …, each round of each mode in a process of its own; medians per mode.
    /// </summary>
    /// <remarks>
    /// A reclaim mode is a kernel configuration, and each gets a process, as each would get a kernel build:
    /// the JIT's dynamic PGO profiles the fault path of whichever mode runs first in a process and lays out
    /// the others' branches as cold, which in one shared process cost the later modes 5-12 % here.
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
            Console.WriteLine($" '{loop}' by PT-reclaim mode ({p.Threads} thread{(p.Threads == 1 ? "" : "s")}, {rounds} interleaved rounds of {seconds} s, a process each, medians):");
            Console.WriteLine();
            foreach ((string mode, double median) in p.MedianPfPerMin)
                Console.WriteLine($"  {mode,-9} {median,16:N0} pf/min   {(median / p.MedianPfPerMin["off"] - 1) * 100,7:+0.00;-0.00}% vs off   (rounds: {string.Join(", ", samples[p.Threads][mode].Select(x => (x / 1e6).ToString("F1")))} M)");
            Console.WriteLine();
        }
        return 0;
    }

    /// <summary>The rounds of <see cref="ComparePtReclaim"/>: per thread count, each mode's samples (pf/min) and their medians.</summary>
    public static CompareReport MeasureComparePtReclaim(int[] threadCounts, double seconds, string loop, int rounds, out Dictionary<int, Dictionary<string, List<double>>> samples)
    {
        PtReclaimMode[] modes = [PtReclaimMode.Off, PtReclaimMode.Refcount, PtReclaimMode.Sync];
        samples = threadCounts.ToDictionary(t => t, _ => modes.ToDictionary(ModeName, _ => new List<double>()));
        for (int r = 0; r < rounds; r++)
        {
            foreach (PtReclaimMode m in modes)
            {
                if (!Console.IsErrorRedirected) Console.Error.Write($"\r  round {r + 1}/{rounds}: {ModeName(m),-9}");
                foreach (Point point in RunInChildProcess(m, threadCounts, seconds, loop))
                    samples[point.Threads][ModeName(m)].Add(point.EmulatedPfPerMin);
            }
        }
        var points = new List<ComparePoint>();
        foreach (int t in threadCounts)
            points.Add(new ComparePoint(t, samples[t].ToDictionary(kv => kv.Key, kv => Math.Round(Median(kv.Value)))));
        return new CompareReport("multi-fault", "pt-reclaim", loop, seconds, rounds, points);
    }

    /// <summary>
    /// `nativemmu multi-fault --pt-reclaim M --threads T --no-host --no-ceiling --json` in a new process:
    /// this command's own executable, or `dotnet` with its assembly when it runs under another host.
    /// </summary>
    private static IReadOnlyList<Point> RunInChildProcess(PtReclaimMode mode, int[] threadCounts, double seconds, string loop)
    {
        string cli = typeof(MultiFaultCommand).Assembly.Location;
        string self = Environment.ProcessPath ?? "dotnet";
        bool apphost = Path.GetFileNameWithoutExtension(self) == Path.GetFileNameWithoutExtension(cli);
        var psi = new System.Diagnostics.ProcessStartInfo(apphost ? self : Environment.GetEnvironmentVariable("DOTNET_HOST_PATH") ?? DotnetHost(self))
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        if (!apphost) psi.ArgumentList.Add(cli);
        foreach (string arg in new[]
        {
            "multi-fault", "--pt-reclaim", ModeName(mode), "--threads", string.Join(",", threadCounts),
            "--seconds", seconds.ToString(CultureInfo.InvariantCulture), "--loop", loop, "--no-host", "--no-ceiling", "--json",
        })
            psi.ArgumentList.Add(arg);
        using var child = System.Diagnostics.Process.Start(psi) ?? throw new InvalidOperationException($"could not start {psi.FileName}");
        Task<string> stderr = child.StandardError.ReadToEndAsync();
        string stdout = child.StandardOutput.ReadToEnd();
        child.WaitForExit();
        if (child.ExitCode != 0)
            throw new InvalidOperationException($"the {ModeName(mode)} run exited with {child.ExitCode}: {stderr.Result.Trim()}");
        Report report = JsonSerializer.Deserialize<Report>(stdout) ?? throw new InvalidOperationException($"the {ModeName(mode)} run printed no report");
        return report.Points;
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

    public static int Run(int[] threadCounts, double seconds, string loop, bool noHost, bool json, PtReclaimMode mode = PtReclaimMode.Sync, bool noCeiling = false)
    {
        bool pf1 = loop == "page-fault1";
        ulong ceilingBuffer = pf1 ? 128UL << 20 : 2UL << 20;
        var points = new List<Point>();
        using var kernel = new Kernel(new KernelConfig { PtReclaim = mode });
        foreach (int t in threadCounts)
        {
            // JIT warm-up: the first second of a fresh process runs unoptimised code.
            Emulated(kernel, pf1, t, Math.Min(1.0, seconds / 4), null);
            LoopResult emu = Emulated(kernel, pf1, t, seconds, Progress($"{t} thread(s): emulated"));
            LoopResult? host = noHost ? null : (pf1 ? HostLoops.PageFault1(t, seconds, Progress($"{t} thread(s): host kernel"))
                                                    : HostLoops.MultiFault(t, seconds, Progress($"{t} thread(s): host kernel")));
            LoopResult? ceiling = noCeiling ? null : HostLoops.Ceiling(t, seconds, ceilingBuffer, Progress($"{t} thread(s): zeroing ceiling"));
            ClearProgress();
            var point = new Point(t, Math.Round(emu.PerMinute), host is { } h ? Math.Round(h.PerMinute) : null, ceiling is { } c ? Math.Round(c.PerMinute) : null);
            points.Add(point);
            if (!json) PrintPoint(loop, seconds, point, emu, host, ceiling);
        }
        if (json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Report("multi-fault", loop, seconds, points)));
        }
        return 0;
    }

    private static LoopResult Emulated(Kernel kernel, bool pf1, int threads, double seconds, Action<long>? progress)
        => pf1 ? EmuLoops.PageFault1(kernel, threads, seconds, progress) : EmuLoops.MultiFault(kernel, threads, seconds, progress);

    private static Action<long> Progress(string what)
    {
        var sw = System.Diagnostics.Stopwatch.StartNew();
        return n =>
        {
            if (Console.IsErrorRedirected) return;
            double perMin = sw.Elapsed.TotalSeconds > 0 ? n * 60 / sw.Elapsed.TotalSeconds : 0;
            Console.Error.Write($"\r  {what}: {n,14:N0} faults  {perMin,16:N0} /min   ");
        };
    }

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
        if (ceiling is { } z)
            Console.WriteLine($"  {z.Faults,16:N0}      frames-zeroed  ceiling       # {p.CeilingPfPerMin,16:N0} /min     emulated/ceiling {p.EmulatedPfPerMin / p.CeilingPfPerMin!.Value,6:F2}x");
        Console.WriteLine();
    }
}
