using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Cli.Host;
using NativeMmu.Fuzz;

namespace NativeMmu.Cli.Commands;

/// <summary>`nativemmu fuzz host`: random programs on the real kernel and on the emulator, compared.</summary>
public static class FuzzHostCommand
{
    public sealed record DifferenceJson(
        [property: JsonPropertyName("description")] string Description,
        [property: JsonPropertyName("program")] string Program);

    public sealed record Report(
        [property: JsonPropertyName("fuzzer")] string Fuzzer,
        [property: JsonPropertyName("seed")] ulong Seed,
        [property: JsonPropertyName("programs")] long Programs,
        [property: JsonPropertyName("operations")] long Operations,
        [property: JsonPropertyName("exclusions")] IReadOnlyList<string> Exclusions,
        [property: JsonPropertyName("differences")] IReadOnlyList<DifferenceJson> Differences);

    public static Command Create()
    {
        var seconds = new Option<double>("--seconds") { Description = "How long to fuzz", DefaultValueFactory = _ => 30, HelpName = "N" };
        var seed = new Option<string?>("--seed") { Description = "Session seed, decimal or 0x-hex (default: random, printed)", HelpName = "S" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var replay = new Option<FileInfo?>("--replay") { Description = "Run the program in FILE (as printed for a difference) on both sides once and report", HelpName = "FILE" };
        var cmd = new Command("host", "The same programs on this machine's kernel (real processes, raw system calls, real loads and stores) and on the emulator")
        {
            seconds, seed, json, replay,
        };
        cmd.SetAction(r => Run(r.GetValue(seconds), r.GetValue(seed), r.GetValue(json), r.GetValue(replay)));
        return cmd;
    }

    public static int Run(double seconds, string? seedText, bool json, FileInfo? replay)
    {
        if (HostExecutor.Unavailable() is { } why)
        {
            Console.Error.WriteLine($"fuzz host: {why}");
            return 2;
        }
        using var fuzzer = new HostFuzzer();
        var clock = Stopwatch.StartNew();
        SystemFuzzResult result;
        if (replay is not null)
        {
            result = fuzzer.Replay(File.ReadAllText(replay.FullName));
        }
        else
        {
            ulong seed = seedText is null ? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)) : FuzzCommand.ParseSeed(seedText);
            if (!json) Console.WriteLine($"fuzz host: seed 0x{seed:x} ({seed}), {seconds.ToString(CultureInfo.InvariantCulture)} s, kernel {Environment.OSVersion.Version}");
            else Console.Error.WriteLine($"fuzz host: seed {seed}");
            long lastShown = 0;
            fuzzer.Progress = (programs, ops) =>
            {
                if (Console.IsErrorRedirected || clock.ElapsedMilliseconds - lastShown < 250) return;
                lastShown = clock.ElapsedMilliseconds;
                double perMin = programs * 60 / Math.Max(clock.Elapsed.TotalSeconds, 1e-9);
                Console.Error.Write($"\r  {programs,10:N0} programs  {ops,12:N0} operations  {perMin,10:N0} programs/min   ");
            };
            result = fuzzer.Run(seed, TimeSpan.FromSeconds(seconds));
            if (!Console.IsErrorRedirected) Console.Error.Write("\r" + new string(' ', 90) + "\r");
        }
        double elapsed = clock.Elapsed.TotalSeconds;
        if (json)
        {
            var report = new Report("host", result.Seed, result.Programs, result.Operations, fuzzer.Config.Exclusions,
                result.Failures.Select(f => new DifferenceJson(f.Description, f.Program)).ToList());
            Console.Out.WriteLine(JsonSerializer.Serialize(report));
        }
        else
        {
            Console.WriteLine($"{result.Programs:N0} program(s), {result.Operations:N0} operations in {elapsed:F1} s ({result.Programs * 60 / Math.Max(elapsed, 1e-9):N0} programs/min), {result.Failures.Count} difference(s)");
            Console.WriteLine("exclusions:");
            foreach (string e in fuzzer.Config.Exclusions) Console.WriteLine($"  - {e}");
            foreach (SystemFailure f in result.Failures)
            {
                Console.WriteLine();
                Console.WriteLine(f.Description);
                Console.WriteLine(f.Program);
            }
        }
        return result.Failures.Count == 0 ? 0 : 1;
    }
}
