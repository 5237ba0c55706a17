using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Security.Cryptography;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Fuzz;

namespace NativeMmu.Cli.Commands;

/// <summary>`nativemmu fuzz`: differential fuzzers, one subcommand each.</summary>
public static class FuzzCommand
{
    public sealed record FailureJson(
        [property: JsonPropertyName("description")] string Description,
        [property: JsonPropertyName("program")] string Program);

    public sealed record Report(
        [property: JsonPropertyName("fuzzer")] string Fuzzer,
        [property: JsonPropertyName("seed")] ulong Seed,
        [property: JsonPropertyName("programs")] long Programs,
        [property: JsonPropertyName("operations")] long Operations,
        [property: JsonPropertyName("failures")] IReadOnlyList<FailureJson> Failures)
    {
        /// <summary>The programs that booted with copy-on-write page tables and what their tables went through.</summary>
        [JsonPropertyName("cow_pte")]
        public CowPteJson? CowPte { get; init; }
    }

    /// <summary>fuzz system's copy-on-write page-table share: programs, prctl operations, and the cow_pte_* vmstat events summed over all programs.</summary>
    public sealed record CowPteJson(
        [property: JsonPropertyName("programs")] long Programs,
        [property: JsonPropertyName("prctl_ops")] long PrctlOps,
        [property: JsonPropertyName("cow_pte_share")] long Share,
        [property: JsonPropertyName("cow_pte_fallback")] long Fallback,
        [property: JsonPropertyName("cow_pte_break_copy")] long BreakCopy,
        [property: JsonPropertyName("cow_pte_break_reuse")] long BreakReuse,
        [property: JsonPropertyName("cow_pte_drop")] long Drop);

    /// <summary>The `fuzz` command group; each fuzzer adds its subcommand here.</summary>
    public static Command Create()
    {
        var fuzz = new Command("fuzz", "Differential fuzzers: the emulator against reference models");
        fuzz.Subcommands.Add(FuzzEncodingsCommand.Create());
        fuzz.Subcommands.Add(CreateSystem());
        fuzz.Subcommands.Add(FuzzHostCommand.Create());
        fuzz.Subcommands.Add(FuzzAflCommand.Create());
        fuzz.Subcommands.Add(FuzzAflCommand.CreateTarget());
        fuzz.Subcommands.Add(FuzzRandomMeasureCommand.Create());
        return fuzz;
    }

    /// <summary>`fuzz system`: random system-call programs against the reference model.</summary>
    public static Command CreateSystem()
    {
        var seconds = new Option<double>("--seconds") { Description = "How long to fuzz", DefaultValueFactory = _ => 30, HelpName = "N" };
        var seed = new Option<string?>("--seed") { Description = "Session seed, decimal or 0x-hex (default: random, printed)", HelpName = "S" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var replay = new Option<FileInfo?>("--replay") { Description = "Run the program in FILE (as printed for a failure) once and report", HelpName = "FILE" };
        var cmd = new Command("system", "mmap/munmap/mprotect/madvise/loads/stores/fork/exit programs: emulator against the reference model")
        {
            seconds, seed, json, replay,
        };
        cmd.SetAction(r => RunSystem(r.GetValue(seconds), r.GetValue(seed), r.GetValue(json), r.GetValue(replay)));
        return cmd;
    }

    /// <summary>`fuzz system --json`'s object for a result.</summary>
    internal static Report SystemReport(SystemFuzzResult result)
    {
        CowPteCounts c = result.CowPte;
        return new Report("system", result.Seed, result.Programs, result.Operations,
            result.Failures.Select(f => new FailureJson(f.Description, f.Program)).ToList())
        {
            CowPte = new CowPteJson(result.CowPtePrograms, result.PrctlOps, c.Share, c.Fallback, c.BreakCopy, c.BreakReuse, c.Drop),
        };
    }

    internal static ulong ParseSeed(string s)
        => s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.Parse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture)
            : ulong.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture);

    public static int RunSystem(double seconds, string? seedText, bool json, FileInfo? replay)
    {
        var fuzzer = new SystemFuzzer();
        SystemFuzzResult result;
        var clock = Stopwatch.StartNew();
        if (replay is not null)
        {
            result = fuzzer.Replay(File.ReadAllText(replay.FullName));
        }
        else
        {
            ulong seed = seedText is null ? BitConverter.ToUInt64(RandomNumberGenerator.GetBytes(8)) : ParseSeed(seedText);
            if (!json) Console.WriteLine($"fuzz system: seed 0x{seed:x} ({seed}), {seconds.ToString(CultureInfo.InvariantCulture)} s, fork {(fuzzer.CanFork ? "on" : "off (Process has no Fork)")}");
            else Console.Error.WriteLine($"fuzz system: seed {seed}");
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
            Console.Out.WriteLine(JsonSerializer.Serialize(SystemReport(result)));
        }
        else
        {
            Console.WriteLine($"{result.Programs:N0} program(s), {result.Operations:N0} operations in {elapsed:F1} s ({result.Programs * 60 / Math.Max(elapsed, 1e-9):N0} programs/min), {result.Failures.Count} failure(s)");
            CowPteCounts c = result.CowPte;
            Console.WriteLine($"copy-on-write page tables: {result.CowPtePrograms:N0} program(s), {result.PrctlOps:N0} prctl(PR_SET_COW_PTE); cow_pte_share {c.Share:N0}, cow_pte_fallback {c.Fallback:N0}, cow_pte_break_copy {c.BreakCopy:N0}, cow_pte_break_reuse {c.BreakReuse:N0}, cow_pte_drop {c.Drop:N0}");
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
