using System.CommandLine;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Fuzz;

namespace NativeMmu.Cli.Commands;

/// <summary>`nativemmu fuzz encodings`: production entry helpers against the independent oracle.</summary>
public static class FuzzEncodingsCommand
{
    public sealed record Failure(
        [property: JsonPropertyName("level")] string Level,
        [property: JsonPropertyName("start_value")] string StartValue,
        [property: JsonPropertyName("steps")] IReadOnlyList<string> Steps,
        [property: JsonPropertyName("observable")] string Observable,
        [property: JsonPropertyName("expected")] string Expected,
        [property: JsonPropertyName("actual")] string Actual,
        [property: JsonPropertyName("detail")] string Detail);

    public sealed record Report(
        [property: JsonPropertyName("fuzzer")] string Fuzzer,
        [property: JsonPropertyName("seed")] ulong Seed,
        [property: JsonPropertyName("executions")] long Executions,
        [property: JsonPropertyName("failures")] IReadOnlyList<Failure> Failures);

    public static Command Create()
    {
        var seconds = new Option<double>("--seconds") { Description = "How long to fuzz", DefaultValueFactory = _ => 10 };
        var seed = new Option<ulong?>("--seed") { Description = "Random seed (default: random, printed)" };
        var threads = new Option<int>("--threads") { Description = "Fuzzing threads", DefaultValueFactory = _ => 1 };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var cmd = new Command("encodings", "Fuzz the PTE/PMD/PUD/P4D/PGD helpers, swap entries and #PF error codes against an independent oracle")
        {
            seconds, seed, threads, json,
        };
        cmd.SetAction(r => Run(r.GetValue(seed) ?? (ulong)Random.Shared.NextInt64(), r.GetValue(seconds), r.GetValue(threads), r.GetValue(json)));
        return cmd;
    }

    public static int Run(ulong seed, double seconds, int threads, bool json)
    {
        if (!json) Console.WriteLine($"fuzz encodings: seed {seed}, {seconds} s, {threads} thread(s)");
        EncodingFuzzResult result = new EncodingFuzzer().Run(seed, TimeSpan.FromSeconds(seconds), default, threads);
        var failures = result.Failures.Select(f => new Failure(f.Level, $"0x{f.StartValue:x16}", f.Steps, f.Observable,
            $"0x{f.Expected:x16}", $"0x{f.Actual:x16}", f.Detail)).ToList();
        if (json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Report("encodings", seed, result.Executions, failures)));
        }
        else
        {
            Console.WriteLine($"{result.Executions:N0} executions, {failures.Count} failure(s) ({result.Executions * 60.0 / Math.Max(seconds, 1e-9):N0} per minute)");
            foreach (Failure f in failures)
            {
                Console.WriteLine($"FAIL {f.Level} start {f.StartValue}: {string.Join(" ; ", f.Steps)}");
                Console.WriteLine($"     {f.Observable}: expected {f.Expected}, got {f.Actual}   {f.Detail}");
            }
        }
        return failures.Count == 0 ? 0 : 1;
    }
}
