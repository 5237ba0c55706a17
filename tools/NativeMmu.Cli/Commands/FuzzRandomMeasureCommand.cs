using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Fuzz;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `fuzz afl-random` (hidden): the random fuzzers as the measurement's other side. For system it runs
/// the programs `fuzz system --seed S` runs, in the same order, against the reference model (no
/// shrinking), optionally writing each one's recorded choices to a directory (the inputs the byte
/// target decodes to the same programs, for afl-showmap); for encodings it is `fuzz encodings`
/// stopping at its first failure. On an instrumented build it also counts the coverage-map entries
/// hit. It reports the executions, the edges and when the first difference appeared.
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
        var cmd = new Command("afl-random", "The random fuzzers, measured as fuzz afl is (internal)") { target, seconds, seed, record, untilFailure };
        cmd.Hidden = true;
        cmd.SetAction(r => Run(r.GetValue(target)!, r.GetValue(seconds), r.GetValue(seed) is { } s ? FuzzCommand.ParseSeed(s) : 1,
            r.GetValue(record)?.FullName, r.GetValue(untilFailure)));
        return cmd;
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
            var fuzzer = new SystemFuzzer();
            for (ulong i = 0; clock.Elapsed < duration; i++)
            {
                SysProgram program;
                if (record is not null)
                {
                    (program, byte[] bytes) = t.Record(seed, i);
                    File.WriteAllBytes(Path.Combine(record, $"p{i:D7}"), bytes);
                }
                else
                {
                    program = fuzzer.Generate(seed, i);
                }
                string? d = t.FirstDifference(program);
                executions++;
                if (instrumented) FuzzAflCommand.Coverage.Collect();
                if (d is not null && first is null)
                {
                    firstAt = clock.Elapsed.TotalSeconds;
                    first = d + "\n" + program;
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
