using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Security.Cryptography;
using System.Text;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Fuzz;
using SharpFuzz;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu fuzz afl`: coverage-guided fuzzing of the byte-driven targets with AFL++. SharpFuzz
/// instruments copies of NativeMmu.dll and NativeMmu.Fuzz.dll; afl-fuzz runs the hidden
/// `fuzz afl-target` subcommand of that instrumented copy, whose Fuzzer.Run loop executes input after
/// input in one process (persistent mode). Crashes are differences, turned into replayable cases.
/// </summary>
public static class FuzzAflCommand
{
    public const string MissingAfl = "afl-fuzz not found: install it with 'apt-get install afl++'";

    public static readonly string[] Targets = ["encodings", "system"];

    public sealed record CaseJson(
        [property: JsonPropertyName("file")] string File,
        [property: JsonPropertyName("input")] string Input,
        [property: JsonPropertyName("description")] string Description,
        [property: JsonPropertyName("case")] string Case);

    public sealed record Report(
        [property: JsonPropertyName("fuzzer")] string Fuzzer,
        [property: JsonPropertyName("target")] string Target,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("executions")] long Executions,
        [property: JsonPropertyName("execs_per_sec")] double ExecsPerSec,
        [property: JsonPropertyName("paths")] long Paths,
        [property: JsonPropertyName("paths_found")] long PathsFound,
        [property: JsonPropertyName("edges")] long Edges,
        [property: JsonPropertyName("total_edges")] long TotalEdges,
        [property: JsonPropertyName("stability")] string Stability,
        [property: JsonPropertyName("crashes")] long Crashes,
        [property: JsonPropertyName("hangs")] long Hangs,
        [property: JsonPropertyName("first_crash_seconds")] double? FirstCrashSeconds,
        [property: JsonPropertyName("output")] string Output,
        [property: JsonPropertyName("instrumented")] string Instrumented,
        [property: JsonPropertyName("cases")] IReadOnlyList<CaseJson> Cases,
        [property: JsonPropertyName("error")] string? Error);

    /// <summary>What a run needs besides the user's options (tests substitute the search path).</summary>
    public sealed record Options(string Target, double Seconds, string? Corpus, string? Output, bool Json)
    {
        /// <summary>The PATH afl-fuzz is looked up in; null for the process's.</summary>
        public string? SearchPath { get; init; }
        /// <summary>The build to instrument a copy of; null for the one running.</summary>
        public string? SourceDirectory { get; init; }
    }

    public static Command Create()
    {
        var target = new Option<string>("--target") { Description = "What to fuzz: encodings (entry helpers against the oracle) or system (programs against the reference model)", Required = true, HelpName = "encodings|system" };
        target.AcceptOnlyFromAmong(Targets);
        var seconds = new Option<double>("--seconds") { Description = "How long afl-fuzz runs (its -V)", DefaultValueFactory = _ => 60, HelpName = "N" };
        var corpus = new Option<DirectoryInfo?>("--corpus") { Description = "Seed inputs (default: generated from the random fuzzer's first programs or cases)", HelpName = "DIR" };
        var output = new Option<DirectoryInfo?>("--output") { Description = "Where seeds, afl's findings and the replayable cases go (default: artifacts/afl/TARGET)", HelpName = "DIR" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var cmd = new Command("afl", "Coverage-guided fuzzing with AFL++ (afl-fuzz) through SharpFuzz's instrumentation, in persistent mode")
        {
            target, seconds, corpus, output, json,
        };
        cmd.SetAction(r => Run(new Options(r.GetValue(target)!, r.GetValue(seconds), r.GetValue(corpus)?.FullName, r.GetValue(output)?.FullName, r.GetValue(json))));
        return cmd;
    }

    /// <summary>`fuzz afl-target`: the process afl-fuzz starts; runs inputs from stdin until afl stops it.</summary>
    public static Command CreateTarget()
    {
        var target = new Option<string>("--target") { Required = true };
        target.AcceptOnlyFromAmong(Targets);
        var cmd = new Command("afl-target", "The persistent SharpFuzz loop afl-fuzz runs (internal)") { target };
        cmd.Hidden = true;
        cmd.SetAction(r =>
        {
            if (r.GetValue(target) == "system")
            {
                var t = new SystemBytesTarget();
                Fuzzer.Run(stream => t.Run(stream));
            }
            else
            {
                var t = new EncodingBytesTarget();
                Fuzzer.Run(stream => t.Run(stream));
            }
            return 0;
        });
        return cmd;
    }

    public static int Run(Options o)
    {
        Report report = Execute(o, o.Json ? Console.Error : Console.Out);
        if (o.Json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(report));
        }
        else if (report.Error is null)
        {
            Console.WriteLine($"fuzz afl --target {report.Target}: {report.Executions:N0} executions in {report.Seconds:F0} s ({report.ExecsPerSec:N1}/s), "
                + $"{report.Paths:N0} paths ({report.PathsFound:N0} new), {report.Edges:N0} edges, stability {report.Stability}, "
                + $"{report.Crashes} crash(es), {report.Hangs} hang(s)"
                + (report.FirstCrashSeconds is { } fc ? $", first crash after {fc:F1} s" : ""));
            foreach (CaseJson c in report.Cases)
            {
                Console.WriteLine();
                Console.WriteLine($"{c.Description}");
                Console.WriteLine($"saved as {c.File} (from {c.Input})");
                Console.WriteLine(c.Case);
            }
            Console.WriteLine($"output: {report.Output}");
        }
        if (report.Error == MissingAfl) return 2;
        if (report.Error is not null) return 3;
        return report.Cases.Count > 0 || report.Crashes > 0 ? 1 : 0;
    }

    private static Report Fail(Options o, string output, string error, TextWriter log)
    {
        log.WriteLine(error);
        return new Report("afl", o.Target, 0, 0, 0, 0, 0, 0, 0, "", 0, 0, null, output, "", [], error);
    }

    public static Report Execute(Options o, TextWriter log)
    {
        string? afl = FindOnPath("afl-fuzz", o.SearchPath);
        if (afl is null) return Fail(o, "", MissingAfl, log);

        string source = Path.GetFullPath(o.SourceDirectory ?? AppContext.BaseDirectory);
        string? repo = FindRepo(source) ?? FindRepo(Environment.CurrentDirectory);
        if (repo is null) return Fail(o, "", "fuzz afl: cannot find the repository (.config/dotnet-tools.json with sharpfuzz) above " + source, log);
        string artifacts = Path.Combine(repo, "artifacts", "afl");
        string output = Path.GetFullPath(o.Output ?? Path.Combine(artifacts, o.Target));
        string dotnet = DotnetHost();

        // 1. An instrumented copy of this build (cached until the assemblies change).
        string work;
        try
        {
            work = Instrument(source, artifacts, repo, dotnet, log);
        }
        catch (Exception e) when (e is InvalidOperationException or IOException)
        {
            return Fail(o, output, "fuzz afl: " + e.Message, log);
        }

        // 2. Seeds: the random fuzzer's first programs or cases, recorded as bytes.
        Directory.CreateDirectory(output);
        string seeds = o.Corpus ?? Path.Combine(output, "seeds");
        if (o.Corpus is null)
        {
            if (Directory.Exists(seeds)) Directory.Delete(seeds, true);
            Directory.CreateDirectory(seeds);
            IReadOnlyList<byte[]> inputs = o.Target == "system" ? new SystemBytesTarget().Seeds(1, 32) : EncodingBytesTarget.Seeds(1, 48);
            for (int i = 0; i < inputs.Count; i++) File.WriteAllBytes(Path.Combine(seeds, $"seed-{i:D3}"), inputs[i]);
            log.WriteLine($"fuzz afl: {inputs.Count} seed inputs from the random {o.Target} fuzzer (session seed 1) in {seeds}");
        }
        else if (!Directory.Exists(seeds) || !Directory.EnumerateFiles(seeds).Any())
        {
            return Fail(o, output, $"fuzz afl: the corpus {seeds} is missing or empty", log);
        }

        string findings = Path.Combine(output, "findings");
        string casesDir = Path.Combine(output, "cases");
        if (Directory.Exists(findings)) Directory.Delete(findings, true);
        if (Directory.Exists(casesDir)) Directory.Delete(casesDir, true);
        Directory.CreateDirectory(casesDir);
        var converter = new CrashConverter(o.Target, casesDir);

        // A seed that already differs is a finding afl would skip (AFL_SKIP_CRASHES).
        foreach (string seed in Directory.EnumerateFiles(seeds).Order(StringComparer.Ordinal))
            converter.Add(seed, "seed");

        // 3. afl-fuzz, persistent: the instrumented CLI's afl-target loop.
        int seconds = Math.Max(1, (int)Math.Ceiling(o.Seconds));
        var psi = new ProcessStartInfo(afl)
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            UseShellExecute = false,
        };
        foreach (string a in new[]
        {
            "-i", seeds, "-o", findings, "-V", seconds.ToString(CultureInfo.InvariantCulture),
            "-t", o.Target == "system" ? "30000" : "10000", "-m", "none", "--",
            dotnet, Path.Combine(work, "NativeMmu.Cli.dll"), "fuzz", "afl-target", "--target", o.Target,
        })
            psi.ArgumentList.Add(a);
        foreach (var (k, v) in AflEnvironment) psi.Environment[k] = v;
        string logFile = Path.Combine(output, "afl-fuzz.log");
        log.WriteLine($"fuzz afl: afl-fuzz -V {seconds} on {o.Target} (log: {logFile})");

        var clock = Stopwatch.StartNew();
        double? firstCrashWall = null;
        int exitCode;
        using (var aflLog = new StreamWriter(logFile))
        using (var p = new System.Diagnostics.Process { StartInfo = psi })
        {
            var gate = new Lock();
            void Sink(object _, DataReceivedEventArgs e)
            {
                if (e.Data is null) return;
                lock (gate) aflLog.WriteLine(e.Data);
            }
            p.OutputDataReceived += Sink;
            p.ErrorDataReceived += Sink;
            p.Start();
            p.StandardInput.Close();
            p.BeginOutputReadLine();
            p.BeginErrorReadLine();
            string crashes = Path.Combine(findings, "default", "crashes");
            // afl spends time before -V starts counting (dry run, calibration); give it a generous margin.
            TimeSpan limit = TimeSpan.FromSeconds(seconds + 300);
            while (!p.WaitForExit(250))
            {
                if (firstCrashWall is null && Directory.Exists(crashes) && Directory.EnumerateFiles(crashes, "id:*").Any())
                    firstCrashWall = clock.Elapsed.TotalSeconds;
                if (clock.Elapsed > limit)
                {
                    log.WriteLine("fuzz afl: afl-fuzz did not stop in time; ending it");
                    p.Kill(entireProcessTree: true);
                    p.WaitForExit();
                    break;
                }
            }
            p.WaitForExit();
            exitCode = p.ExitCode;
        }

        string stats = Path.Combine(findings, "default", "fuzzer_stats");
        if (!File.Exists(stats))
        {
            string tail = string.Join('\n', File.ReadLines(logFile).TakeLast(25));
            return Fail(o, output, $"fuzz afl: afl-fuzz exited with {exitCode} without statistics; the end of {logFile}:\n{tail}", log);
        }
        Dictionary<string, string> s = ReadStats(stats);

        // 4. Every crash becomes a replayable case.
        string crashDir = Path.Combine(findings, "default", "crashes");
        double? firstCrash = null;
        if (Directory.Exists(crashDir))
        {
            foreach (string crash in Directory.EnumerateFiles(crashDir, "id:*").Order(StringComparer.Ordinal))
            {
                double? t = CrashTime(crash);
                if (t is { } v && (firstCrash is null || v < firstCrash)) firstCrash = v;
                converter.Add(crash, "afl");
            }
        }

        double runTime = Num(s, "run_time");
        long execs = (long)Num(s, "execs_done");
        return new Report("afl", o.Target, runTime, execs, runTime > 0 ? execs / runTime : Num(s, "execs_per_sec"),
            (long)Num(s, "corpus_count"), (long)Num(s, "corpus_found"), (long)Num(s, "edges_found"), (long)Num(s, "total_edges"),
            s.GetValueOrDefault("stability", ""), (long)Num(s, "saved_crashes"), (long)Num(s, "saved_hangs"),
            firstCrash ?? firstCrashWall, output, work, converter.Cases, null);
    }

    /// <summary>The environment afl-fuzz runs with: no terminal UI, a .NET host as the target, a shared machine.</summary>
    internal static readonly (string, string)[] AflEnvironment =
    [
        ("AFL_SKIP_BIN_CHECK", "1"), // the target binary is dotnet, not an instrumented executable
        ("AFL_NO_UI", "1"), // no status screen: runs without a terminal
        ("AFL_SKIP_CPUFREQ", "1"), // the CPU governor is not ours to set
        ("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1"), // core_pattern may pipe cores elsewhere
        ("AFL_NO_AFFINITY", "1"), // the cores are shared: do not bind one
        ("AFL_SKIP_CRASHES", "1"), // a seed that already differs is reported by the command itself
        ("AFL_FORKSRV_INIT_TMOUT", "120000"), // the .NET runtime starts and JIT-compiles before the first input
        ("AFL_MAP_SIZE", "65536"), // SharpFuzz's map
    ];

    /// <summary>Turns crashing inputs into replayable cases, one per distinct difference.</summary>
    private sealed class CrashConverter(string target, string dir)
    {
        private const int MaxShrunk = 8;
        private readonly HashSet<string> _seen = [];
        private readonly SystemBytesTarget _system = new() { ShrinkTime = TimeSpan.FromSeconds(20) };
        private readonly EncodingBytesTarget _encodings = new();
        public readonly List<CaseJson> Cases = [];

        public void Add(string input, string origin)
        {
            if (Cases.Count >= MaxShrunk) return;
            byte[] bytes = File.ReadAllBytes(input);
            string name = Path.GetFileName(input);
            if (target == "system")
            {
                if (_system.Check(bytes, shrink: false, out string sig) is null)
                {
                    // A crash a fresh run does not show depends on what earlier inputs left in afl's
                    // process: keep the program (once), marked as such.
                    if (origin == "seed" || !_seen.Add("unreproduced")) return;
                    string program = _system.Decode(bytes).ToString();
                    string desc = "afl-fuzz saw a difference that a fresh run of this program does not show (state left by earlier inputs in the same process)";
                    string file0 = Path.Combine(dir, $"crash-{Cases.Count:D3}.program");
                    File.WriteAllText(file0, Comment(desc, origin, name) + program);
                    Cases.Add(new CaseJson(file0, input, desc, program));
                    return;
                }
                if (!_seen.Add(sig)) return;
                SystemFailure f = _system.Check(bytes, shrink: true, out string shrunkSig)!;
                if (shrunkSig != sig && !_seen.Add(shrunkSig)) return;
                string file = Path.Combine(dir, $"crash-{Cases.Count:D3}.program");
                File.WriteAllText(file, Comment(f.Description, origin, name) + f.Program);
                Cases.Add(new CaseJson(file, input, f.Description, f.Program));
            }
            else
            {
                if (_encodings.Check(bytes, shrink: false, origin: "") is not { } first) return; // the encodings keep no state between inputs
                string sig = first.Level + "|" + first.Observable + "|" + (first.Steps.Count > 0 ? first.Steps[^1].Split('(')[0] : "");
                if (!_seen.Add(sig)) return;
                EncodingFailure f = _encodings.Check(bytes, shrink: true, origin: $"{origin} input {name}")!;
                string text = f.Case!.ToString();
                string file = Path.Combine(dir, $"crash-{Cases.Count:D3}.case");
                File.WriteAllText(file, Comment(f.Detail, origin, name) + text);
                Cases.Add(new CaseJson(file, input, f.Detail, text));
            }
        }

        private static string Comment(string description, string origin, string name)
            => string.Concat(description.Split('\n').Select(l => "# " + l + "\n")) + $"# from {origin} input {name}\n";
    }

    // ---------------------------------------------------------------------------------------------
    // Instrumentation
    // ---------------------------------------------------------------------------------------------

    private static readonly string[] Instrumented = ["NativeMmu.dll", "NativeMmu.Fuzz.dll"];

    /// <summary>
    /// Copies the build in <paramref name="source"/> to a work directory under artifacts/afl and
    /// instruments NativeMmu.dll and NativeMmu.Fuzz.dll there with `dotnet sharpfuzz` (the local tool);
    /// reuses the copy while the assemblies are unchanged. Returns the work directory.
    /// </summary>
    private static string Instrument(string source, string artifacts, string repo, string dotnet, TextWriter log)
    {
        foreach (string f in Instrumented.Append("NativeMmu.Cli.dll").Append("NativeMmu.Cli.runtimeconfig.json"))
        {
            if (!File.Exists(Path.Combine(source, f)))
                throw new InvalidOperationException($"{source} is not a build of the CLI (no {f})");
        }
        string key = Convert.ToHexStringLower(SHA256.HashData(Encoding.UTF8.GetBytes(source)))[..12];
        string work = Path.Combine(artifacts, "instrumented", key);
        string stampFile = Path.Combine(work, ".instrumented");
        var stamp = new StringBuilder();
        stamp.Append(source).Append('\n');
        foreach (string f in Instrumented.Append("NativeMmu.Cli.dll"))
        {
            using FileStream fs = File.OpenRead(Path.Combine(source, f));
            stamp.Append(f).Append(' ').Append(Convert.ToHexStringLower(SHA256.HashData(fs))).Append('\n');
        }
        if (File.Exists(stampFile) && File.ReadAllText(stampFile) == stamp.ToString())
        {
            log.WriteLine($"fuzz afl: instrumented build up to date in {work}");
            return work;
        }

        log.WriteLine($"fuzz afl: instrumenting a copy of {source} in {work}");
        if (Directory.Exists(work)) Directory.Delete(work, true);
        Directory.CreateDirectory(work);
        foreach (string f in Directory.EnumerateFiles(source))
            File.Copy(f, Path.Combine(work, Path.GetFileName(f)));
        // Sub-directories (native libraries per runtime, resources) are not instrumented: link them.
        foreach (string d in Directory.EnumerateDirectories(source))
            Directory.CreateSymbolicLink(Path.Combine(work, Path.GetFileName(d)), d);

        if (RunTool(dotnet, repo, log, "tool", "run", "sharpfuzz", "--help").Code != 0)
        {
            var restore = RunTool(dotnet, repo, log, "tool", "restore");
            if (restore.Code != 0) throw new InvalidOperationException("dotnet tool restore failed:\n" + restore.Output);
        }
        foreach (string f in Instrumented)
        {
            var r = RunTool(dotnet, repo, log, "tool", "run", "sharpfuzz", Path.Combine(work, f));
            if (r.Code != 0) throw new InvalidOperationException($"dotnet sharpfuzz {f} failed:\n{r.Output}");
        }
        File.WriteAllText(stampFile, stamp.ToString());
        return work;
    }

    private static (int Code, string Output) RunTool(string dotnet, string cwd, TextWriter log, params string[] args)
    {
        var psi = new ProcessStartInfo(dotnet)
        {
            WorkingDirectory = cwd,
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using System.Diagnostics.Process p = System.Diagnostics.Process.Start(psi)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        p.WaitForExit();
        return (p.ExitCode, output + err.Result);
    }

    // ---------------------------------------------------------------------------------------------
    // Helpers
    // ---------------------------------------------------------------------------------------------

    internal static string? FindOnPath(string name, string? searchPath = null)
    {
        foreach (string dir in (searchPath ?? Environment.GetEnvironmentVariable("PATH") ?? "").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            string candidate = Path.Combine(dir, name);
            if (File.Exists(candidate) && (OperatingSystem.IsWindows()
                || (File.GetUnixFileMode(candidate) & (UnixFileMode.UserExecute | UnixFileMode.GroupExecute | UnixFileMode.OtherExecute)) != 0))
                return candidate;
        }
        return null;
    }

    /// <summary>The dotnet host running us (or the one the SDK names, or the one on PATH).</summary>
    internal static string DotnetHost()
    {
        string? p = Environment.ProcessPath;
        if (p is not null && Path.GetFileNameWithoutExtension(p) == "dotnet") return p;
        string? host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(host) && File.Exists(host)) return host;
        return FindOnPath("dotnet") ?? "dotnet";
    }

    /// <summary>The directory above <paramref name="from"/> whose .config/dotnet-tools.json lists sharpfuzz.</summary>
    internal static string? FindRepo(string from)
    {
        for (var d = new DirectoryInfo(from); d is not null; d = d.Parent)
        {
            string manifest = Path.Combine(d.FullName, ".config", "dotnet-tools.json");
            if (File.Exists(manifest) && File.ReadAllText(manifest).Contains("sharpfuzz", StringComparison.OrdinalIgnoreCase))
                return d.FullName;
        }
        return null;
    }

    internal static Dictionary<string, string> ReadStats(string file)
    {
        var d = new Dictionary<string, string>();
        foreach (string line in File.ReadLines(file))
        {
            int colon = line.IndexOf(':');
            if (colon > 0) d[line[..colon].Trim()] = line[(colon + 1)..].Trim();
        }
        return d;
    }

    private static double Num(Dictionary<string, string> s, string key)
        => s.TryGetValue(key, out string? v) && double.TryParse(v.TrimEnd('%'), NumberStyles.Float, CultureInfo.InvariantCulture, out double x) ? x : 0;

    /// <summary>AFL++ names a crash id:N,sig:S,src:…,time:MS,…: the milliseconds since it started fuzzing.</summary>
    private static double? CrashTime(string file)
    {
        foreach (string part in Path.GetFileName(file).Split(','))
        {
            if (part.StartsWith("time:", StringComparison.Ordinal) && long.TryParse(part.AsSpan(5), NumberStyles.None, CultureInfo.InvariantCulture, out long ms))
                return ms / 1000.0;
        }
        return null;
    }

    /// <summary>Whether this process runs an instrumented NativeMmu.dll.</summary>
    internal static bool IsInstrumented()
        => typeof(Kernel).Assembly.GetReferencedAssemblies().Any(a => a.Name == "SharpFuzz.Common");

    /// <summary>
    /// A coverage map for instrumented code running outside afl-fuzz: SharpFuzz's instrumentation
    /// writes to SharpFuzz.Common.Trace.SharedMem, which must point somewhere before any of it runs.
    /// </summary>
    internal static unsafe class Coverage
    {
        public const int MapSize = 1 << 16;
        private static byte* _map;
        private static readonly byte[] Seen = new byte[MapSize];

        /// <summary>Points the instrumentation at a fresh map (and keeps the map it pointed at before).</summary>
        public static void Install()
        {
            _map = (byte*)NativeMemory.AllocZeroed(MapSize);
            SharpFuzz.Common.Trace.SharedMem = _map;
            SharpFuzz.Common.Trace.PrevLocation = 0;
        }

        /// <summary>Adds the edges hit since the last call to the seen set and starts the next execution afresh.</summary>
        public static void Collect()
        {
            var map = new Span<byte>(_map, MapSize);
            for (int i = 0; i < MapSize; i++) Seen[i] |= map[i];
            map.Clear();
            SharpFuzz.Common.Trace.PrevLocation = 0;
        }

        /// <summary>Map entries ever hit: what afl-fuzz reports as edges_found.</summary>
        public static int Edges => Seen.Count(b => b != 0);
    }
}
