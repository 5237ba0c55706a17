using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Fuzz;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `fuzz afl-random` (hidden): the random fuzzers as the measurement's other side. For system it runs
/// the programs `fuzz system --seed S` runs, in the same order (no shrinking), each recorded as the
/// generator's choices and run through the same byte target afl-fuzz runs, so both sides are counted
/// on one harness; --record also writes the inputs to a directory. For encodings it is
/// `fuzz encodings` stopping at its first failure. With --replay DIR it instead runs every input in
/// DIR through the byte target once (e.g. afl's queue). On an instrumented build it counts the
/// coverage-map entries hit (afl's edges_found). It reports the executions, the edges and when the
/// first difference appeared.
/// </summary>
public static class FuzzRandomMeasureCommand
{
    public sealed record Report(
        [property: JsonPropertyName("fuzzer")] string Fuzzer,
        [property: JsonPropertyName("target")] string Target,
        [property: JsonPropertyName("seed")] ulong Seed,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("executions")] long Executions,
        [property: JsonPropertyName("instrumented")] bool Instrumented,
        [property: JsonPropertyName("edges")] int Edges,
        [property: JsonPropertyName("first_failure_seconds")] double? FirstFailureSeconds,
        [property: JsonPropertyName("first_failure")] string? FirstFailure);

    public static Command Create()
    {
        var target = new Option<string>("--target") { Required = true };
        target.AcceptOnlyFromAmong(FuzzAflCommand.Targets);
        var seconds = new Option<double>("--seconds") { DefaultValueFactory = _ => 60 };
        var seed = new Option<string?>("--seed");
        var record = new Option<DirectoryInfo?>("--record") { Description = "Write every system program's choices here as an input file" };
        var untilFailure = new Option<bool>("--until-failure") { Description = "Stop at the first difference" };
        var replay = new Option<DirectoryInfo?>("--replay") { Description = "Run every input in DIR through the byte target once instead" };
        var cmd = new Command("afl-random", "The random fuzzers, measured as fuzz afl is (internal)") { target, seconds, seed, record, untilFailure, replay };
        cmd.Hidden = true;
        cmd.SetAction(r => r.GetValue(replay) is { } dir
            ? Replay(r.GetValue(target)!, dir.FullName)
            : Run(r.GetValue(target)!, r.GetValue(seconds), r.GetValue(seed) is { } s ? FuzzCommand.ParseSeed(s) : 1,
                r.GetValue(record)?.FullName, r.GetValue(untilFailure)));
        return cmd;
    }

    public static int Replay(string target, string dir)
    {
        bool instrumented = FuzzAflCommand.IsInstrumented();
        if (instrumented) FuzzAflCommand.Coverage.Install();
        var clock = Stopwatch.StartNew();
        var system = target == "system" ? new SystemBytesTarget() : null;
        var encodings = target == "system" ? null : new EncodingBytesTarget();
        long executions = 0, differences = 0;
        string? first = null;
        foreach (string file in Directory.EnumerateFiles(dir).Order(StringComparer.Ordinal))
        {
            byte[] bytes = File.ReadAllBytes(file);
            try
            {
                if (system is not null) system.Run(bytes); else encodings!.Run(bytes);
            }
            catch (FuzzDifferenceException e)
            {
                differences++;
                first ??= e.Message;
            }
            executions++;
            if (instrumented) FuzzAflCommand.Coverage.Collect();
        }
        var report = new Report("replay", target, 0, clock.Elapsed.TotalSeconds, executions, instrumented,
            instrumented ? FuzzAflCommand.Coverage.Edges : 0, null, first);
        Console.Out.WriteLine(JsonSerializer.Serialize(report));
        return differences == 0 ? 0 : 1;
    }

    public static int Run(string target, double seconds, ulong seed, string? record, bool untilFailure)
    {
        bool instrumented = FuzzAflCommand.IsInstrumented();
        if (instrumented) FuzzAflCommand.Coverage.Install();
        if (record is not null) Directory.CreateDirectory(record);
        var clock = Stopwatch.StartNew();
        var duration = TimeSpan.FromSeconds(seconds);
        long executions = 0;
        double? firstAt = null;
        string? first = null;

        if (target == "system")
        {
            var t = new SystemBytesTarget();
            for (ulong i = 0; clock.Elapsed < duration; i++)
            {
                (SysProgram program, byte[] bytes) = t.Record(seed, i);
                if (record is not null) File.WriteAllBytes(Path.Combine(record, $"p{i:D7}"), bytes);
                string? d = null;
                try
                {
                    t.Run(bytes);
                }
                catch (FuzzDifferenceException e)
                {
                    d = e.Message;
                }
                executions++;
                if (instrumented) FuzzAflCommand.Coverage.Collect();
                if (d is not null && first is null)
                {
                    firstAt = clock.Elapsed.TotalSeconds;
                    first = d;
                    if (untilFailure) break;
                }
            }
        }
        else
        {
            // The encoding fuzzer's own loop; coverage is collected once at the end (its map bytes
            // are counters that rarely wrap to exactly zero, and the run is one execution per case).
            var fuzzer = new EncodingFuzzer { MaxFailures = untilFailure ? 1 : 16 };
            EncodingFuzzResult r = fuzzer.Run(seed, duration);
            executions = r.Executions;
            if (r.Failures.Count > 0)
            {
                firstAt = untilFailure ? clock.Elapsed.TotalSeconds : null;
                first = r.Failures[0].Detail + "\n" + r.Failures[0].Case;
            }
            if (instrumented) FuzzAflCommand.Coverage.Collect();
        }

        var report = new Report("random", target, seed, clock.Elapsed.TotalSeconds, executions, instrumented,
            instrumented ? FuzzAflCommand.Coverage.Edges : 0, firstAt, first);
        Console.Out.WriteLine(JsonSerializer.Serialize(report));
        return first is null ? 0 : 1;
    }
}
