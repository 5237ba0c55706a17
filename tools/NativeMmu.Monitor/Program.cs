using System.CommandLine;

namespace NativeMmu.Monitor;

/// <summary>`nativemmu-monitor`: find, watch and record processes that publish the NativeMmu EventSource.</summary>
public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("nativemmu-monitor: live counters and traces of processes running the NativeMmu emulator")
        {
            PsCommand(), TopCommand(), RecordCommand(), SummaryCommand(),
        };
        return root.Parse(args).Invoke();
    }

    private static Option<int?> PidOption() => new("--pid", "-p") { Description = "Process id to attach to" };
    private static Option<string?> NameOption() => new("--name", "-n") { Description = "Process name (or the .dll/executable `dotnet` runs) to attach to" };

    /// <summary>Cancelled by Ctrl+C, and after <paramref name="seconds"/> when given.</summary>
    private static CancellationTokenSource StopSource(double? seconds)
    {
        var cts = new CancellationTokenSource();
        Console.CancelKeyPress += (_, e) => { e.Cancel = true; cts.Cancel(); };
        if (seconds is > 0) cts.CancelAfter(TimeSpan.FromSeconds(seconds.Value));
        return cts;
    }

    private static int Fail(string message)
    {
        Console.Error.WriteLine($"nativemmu-monitor: {message}");
        return 1;
    }

    private static Command PsCommand()
    {
        var probe = new Option<double>("--probe-seconds") { Description = "How long to wait for a process's first NativeMmu counters", DefaultValueFactory = _ => 2.5 };
        var cmd = new Command("ps", "List the .NET processes that publish the NativeMmu provider") { probe };
        cmd.SetAction(r =>
        {
            IReadOnlyList<TargetProcess> found = NativeMmuMonitor.FindPublishersAsync(TimeSpan.FromSeconds(r.GetValue(probe))).GetAwaiter().GetResult();
            Console.Out.WriteLine($"{"PID",8}  {"NAME",-16}  COMMAND LINE");
            foreach (TargetProcess t in found)
                Console.Out.WriteLine($"{t.Pid,8}  {t.Name,-16}  {t.CommandLine}");
            return 0;
        });
        return cmd;
    }

    private static Command TopCommand()
    {
        Option<int?> pid = PidOption();
        Option<string?> name = NameOption();
        var json = new Option<bool>("--json") { Description = "One JSON line per interval: {\"time\":...,\"pid\":P,\"counters\":{name:value}} (rates per second)" };
        var seconds = new Option<double?>("--seconds") { Description = "Stop after this many seconds (default: until Ctrl+C or the process exits)" };
        var cmd = new Command("top", "Show the NativeMmu counters of a process live, refreshed each second") { pid, name, json, seconds };
        cmd.SetAction(r =>
        {
            int target;
            try { target = Targets.Resolve(r.GetValue(pid), r.GetValue(name)); }
            catch (ArgumentException e) { return Fail(e.Message); }
            using CancellationTokenSource stop = StopSource(r.GetValue(seconds));
            try
            {
                int shown = TopView.RunAsync(target, r.GetValue(json), Console.Out, stop.Token).GetAwaiter().GetResult();
                return shown > 0 ? 0 : Fail($"no NativeMmu counters from pid {target}: is it running the emulator (built without NativeMmuNoEvents)?");
            }
            catch (Exception e) when (e is Microsoft.Diagnostics.NETCore.Client.ServerNotAvailableException or UnauthorizedAccessException or IOException)
            {
                return Fail($"cannot attach to pid {target}: {e.Message}");
            }
        });
        return cmd;
    }

    private static Command RecordCommand()
    {
        Option<int?> pid = PidOption();
        Option<string?> name = NameOption();
        var seconds = new Option<double>("--seconds") { Description = "How long to record", DefaultValueFactory = _ => 10 };
        var output = new Option<string?>("--output", "-o") { Description = "The .nettrace to write (default nativemmu_PID_TIME.nettrace)" };
        var keywords = new Option<string>("--keywords") { Description = "NativeMmu keywords: 0x1 Fault, 0x2 Zap, 0x4 Fork, 0x8 TableReclaim", DefaultValueFactory = _ => "0xF" };
        var top = new Option<int>("--top") { Description = "How many leaf methods to list", DefaultValueFactory = _ => 10 };
        var cmd = new Command("record", "Record NativeMmu events and CPU samples to a .nettrace, then summarise it") { pid, name, seconds, output, keywords, top };
        cmd.SetAction(r =>
        {
            int target;
            long kw;
            try
            {
                target = Targets.Resolve(r.GetValue(pid), r.GetValue(name));
                kw = ParseKeywords(r.GetValue(keywords)!);
            }
            catch (ArgumentException e) { return Fail(e.Message); }
            string path = r.GetValue(output) ?? $"nativemmu_{target}_{DateTime.Now:yyyyMMdd_HHmmss}.nettrace";
            double secs = r.GetValue(seconds);
            using CancellationTokenSource stop = StopSource(null);
            long bytes;
            try
            {
                Console.Error.WriteLine($"Recording pid {target} for {secs:0.#} s to {path} (Ctrl+C stops early)...");
                bytes = NativeMmuMonitor.RecordAsync(target, path, TimeSpan.FromSeconds(secs), kw, stop.Token).GetAwaiter().GetResult();
            }
            catch (Exception e) when (e is Microsoft.Diagnostics.NETCore.Client.ServerNotAvailableException or UnauthorizedAccessException or IOException)
            {
                return Fail($"cannot record pid {target}: {e.Message}");
            }
            Console.Out.WriteLine($"Wrote {path} ({bytes / 1024.0 / 1024.0:F1} MiB)");
            return Summarise(path, r.GetValue(top));
        });
        return cmd;
    }

    private static Command SummaryCommand()
    {
        var file = new Argument<string>("trace") { Description = "A .nettrace (from `record` or `dotnet-trace collect`)" };
        var top = new Option<int>("--top") { Description = "How many leaf methods to list", DefaultValueFactory = _ => 10 };
        var cmd = new Command("summary", "Summarise a .nettrace: NativeMmu events by kind and the hottest leaf methods") { file, top };
        cmd.SetAction(r => Summarise(r.GetValue(file)!, r.GetValue(top)));
        return cmd;
    }

    private static int Summarise(string path, int top)
    {
        if (!File.Exists(path)) return Fail($"no such file: {path}");
        TraceSummary summary;
        try { summary = TraceSummary.Read(path, top); }
        catch (Exception e) when (e is not OutOfMemoryException) { return Fail($"cannot read {path}: {e.Message}"); }
        summary.Print(Console.Out);
        return 0;
    }

    internal static long ParseKeywords(string s)
    {
        s = s.Trim();
        bool hex = s.StartsWith("0x", StringComparison.OrdinalIgnoreCase);
        return long.TryParse(hex ? s[2..] : s, hex ? System.Globalization.NumberStyles.HexNumber : System.Globalization.NumberStyles.Integer,
            System.Globalization.CultureInfo.InvariantCulture, out long v) ? v : throw new ArgumentException($"bad keywords '{s}'");
    }
}
