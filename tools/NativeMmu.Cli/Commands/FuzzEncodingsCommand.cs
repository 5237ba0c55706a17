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
        var replay = new Option<FileInfo?>("--replay") { Description = "Run the case in FILE (as fuzz afl saves one) once and report", HelpName = "FILE" };
        var cmd = new Command("encodings", "Fuzz the PTE/PMD/PUD/P4D/PGD helpers, swap entries and #PF error codes against an independent oracle")
        {
            seconds, seed, threads, json, replay,
        };
        cmd.SetAction(r => r.GetValue(replay) is { } file
            ? Replay(file, r.GetValue(json))
            : Run(r.GetValue(seed) ?? (ulong)Random.Shared.NextInt64(), r.GetValue(seconds), r.GetValue(threads), r.GetValue(json)));
        return cmd;
    }

    /// <summary>Runs one saved case; exit code 1 when production and the oracle disagree on it.</summary>
    public static int Replay(FileInfo file, bool json)
    {
        EncodingCase c = EncodingCase.Parse(File.ReadAllText(file.FullName));
        EncodingFailure? f = new EncodingFuzzer().Replay(c);
        var failures = f is null ? new List<Failure>() : [ToJson(f)];
        if (json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Report("encodings", 0, 1 + c.StepTexts.Count, failures)));
        }
        else
        {
            Console.WriteLine($"fuzz encodings --replay {file.Name}: {c.LevelName} 0x{c.Start:x16}, {c.StepTexts.Count} step(s): {(f is null ? "production agrees with the oracle" : "differs")}");
            if (f is not null) Print(ToJson(f));
        }
        return f is null ? 0 : 1;
    }

    private static Failure ToJson(EncodingFailure f) => new(f.Level, $"0x{f.StartValue:x16}", f.Steps, f.Observable,
        $"0x{f.Expected:x16}", $"0x{f.Actual:x16}", f.Detail);

    private static void Print(Failure f)
    {
        Console.WriteLine($"FAIL {f.Level} start {f.StartValue}: {string.Join(" ; ", f.Steps)}");
        Console.WriteLine($"     {f.Observable}: expected {f.Expected}, got {f.Actual}   {f.Detail}");
    }

    public static int Run(ulong seed, double seconds, int threads, bool json)
    {
        if (!json) Console.WriteLine($"fuzz encodings: seed {seed}, {seconds} s, {threads} thread(s)");
        EncodingFuzzResult result = new EncodingFuzzer().Run(seed, TimeSpan.FromSeconds(seconds), default, threads);
        var failures = result.Failures.Select(ToJson).ToList();
        if (json)
        {
            Console.Out.WriteLine(JsonSerializer.Serialize(new Report("encodings", seed, result.Executions, failures)));
        }
        else
        {
            Console.WriteLine($"{result.Executions:N0} executions, {failures.Count} failure(s) ({result.Executions * 60.0 / Math.Max(seconds, 1e-9):N0} per minute)");
            foreach (Failure f in failures) Print(f);
        }
        return failures.Count == 0 ? 0 : 1;
    }
}
