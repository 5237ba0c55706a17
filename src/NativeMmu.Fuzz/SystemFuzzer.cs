using System.Diagnostics;
using System.Text.RegularExpressions;
using NativeMmu.Fuzz.Model;

namespace NativeMmu.Fuzz;

/// <summary>A difference the fuzzer found: what differed, and the shrunk program that shows it (replayable text).</summary>
public sealed record SystemFailure(string Description, string Program);

/// <summary>The outcome of a fuzzing session or a replay.</summary>
public sealed record SystemFuzzResult(ulong Seed, long Programs, long Operations, IReadOnlyList<SystemFailure> Failures)
{
    /// <summary>Programs that booted with copy-on-write page tables (CowPte Lazy or Eager).</summary>
    public long CowPtePrograms { get; init; }
    /// <summary>prctl operations in the programs run.</summary>
    public long PrctlOps { get; init; }
    /// <summary>The cow_pte_* counters summed over the programs that ran to the end.</summary>
    public CowPteCounts CowPte { get; init; }
}

/// <summary>
/// Differential fuzzer of the system-call surface: random programs (mmap, munmap, mprotect, madvise,
/// loads and stores of every width, spans, exit, and fork when the emulator has it) run on a fresh
/// emulated kernel and on the <see cref="ReferenceModel"/>, compared after every operation (see
/// <see cref="ProgramRunner"/>). A failing program is shrunk (<see cref="Shrinker"/>) and reported as
/// text in the format <see cref="SysProgram"/> documents; <see cref="Replay"/> runs such a text again.
/// Everything runs on the calling thread, which attaches one emulated CPU per program.
/// </summary>
public sealed partial class SystemFuzzer
{
    /// <summary>At most this many distinct failures are shrunk and reported per session.</summary>
    public const int MaxFailures = 20;

    private readonly ProgramRunner _runner;

    public SystemFuzzer() : this(modelFactory: null) { }

    /// <summary>
    /// A fuzzer against another model (tests plant a wrong one) and with another fork (tests supply a
    /// stand-in while Process has no Fork); by default the reference model and Process.Fork() if it exists.
    /// </summary>
    internal SystemFuzzer(Func<ReferenceModel>? modelFactory, Func<Process, Process>? fork = null)
    {
        _runner = new ProgramRunner(modelFactory ?? (() => new ReferenceModel()), fork ?? ProgramRunner.FindFork());
    }

    /// <summary>Whether fork operations run (the emulator's Process has a Fork method).</summary>
    public bool CanFork => _runner.CanFork;

    /// <summary>Called after every program with the programs and operations so far (for progress output).</summary>
    public Action<long, long>? Progress { get; set; }

    /// <summary>Trial runs a shrink may spend, and for how long.</summary>
    internal int ShrinkTrials { get; set; } = 4000;
    internal TimeSpan ShrinkTime { get; set; } = TimeSpan.FromSeconds(60);

    /// <summary>Generates and runs programs from <paramref name="seed"/> for <paramref name="duration"/>.</summary>
    public SystemFuzzResult Run(ulong seed, TimeSpan duration, CancellationToken ct = default)
    {
        var clock = Stopwatch.StartNew();
        long programs = 0, operations = 0, cowPtePrograms = 0, prctlOps = 0;
        CowPteCounts cowPte = default;
        var failures = new List<SystemFailure>();
        var seen = new HashSet<string>();
        for (ulong i = 0; clock.Elapsed < duration && !ct.IsCancellationRequested; i++)
        {
            SysProgram program = Generate(seed, i);
            RunResult r = _runner.Run(program);
            programs++;
            operations += r.OpsExecuted;
            if (program.CowPte != CowPteMode.Off) cowPtePrograms++;
            foreach (SysOp op in program.Ops) if (op.Kind == SysOpKind.Prctl) prctlOps++;
            cowPte += r.CowPte;
            Progress?.Invoke(programs, operations);
            if (r.Failure is not { } f || failures.Count >= MaxFailures) continue;
            string signature = Signature(f);
            if (!seen.Add(signature)) continue;
            SystemFailure shrunk = ShrinkToFailure(program, f, out RunFailure final);
            // Shrinking may turn it into a difference already reported.
            string shrunkSignature = Signature(final);
            if (shrunkSignature != signature && !seen.Add(shrunkSignature)) continue;
            failures.Add(shrunk);
        }
        return new SystemFuzzResult(seed, programs, operations, failures) { CowPtePrograms = cowPtePrograms, PrctlOps = prctlOps, CowPte = cowPte };
    }

    /// <summary>The program the session with this seed runs as its index-th.</summary>
    public SysProgram Generate(ulong seed, ulong index) => ProgramGenerator.Generate(SplitMix64.Mix(seed, index), CanFork, hugetlb: true, cowPte: true);

    /// <summary>Runs a program given as text (the format of <see cref="SysProgram"/>) once and reports what differs.</summary>
    public SystemFuzzResult Replay(string programText)
    {
        SysProgram program = SysProgram.Parse(programText);
        RunResult r = _runner.Run(program);
        var failures = new List<SystemFailure>();
        if (r.Failure is { } f) failures.Add(new SystemFailure(Describe(f), program.ToString()));
        return new SystemFuzzResult(program.Seed, 1, r.OpsExecuted, failures);
    }

    /// <summary>Runs one program; the first difference, if any.</summary>
    internal RunResult RunProgram(SysProgram program) => _runner.Run(program);

    /// <summary>Shrinks a failing program and describes the result.</summary>
    internal SystemFailure ShrinkToFailure(SysProgram program, RunFailure failure, out RunFailure final)
    {
        var shrinker = new Shrinker(_runner.Run, ShrinkTrials, ShrinkTime);
        (SysProgram small, final) = shrinker.Shrink(program, failure);
        return new SystemFailure(Describe(final), small.ToString());
    }

    internal static string Describe(RunFailure f)
        => f.OpIndex >= 0 ? $"[{f.Category}] op {f.OpIndex + 1}: {f.Description}" : $"[{f.Category}] at the end: {f.Description}";

    /// <summary>What makes two failures the same bug for reporting: the category and the message with numbers blanked.</summary>
    internal static string Signature(RunFailure f)
    {
        string d = f.Description;
        int colon = d.IndexOf(": ", StringComparison.Ordinal);
        string verb = d.Split(' ', 3) is { Length: >= 2 } t ? t[1] : "";
        if (colon >= 0 && f.OpIndex >= 0) d = d[(colon + 2)..];
        return f.Category + "|" + verb + "|" + Numbers().Replace(d, "#");
    }

    [GeneratedRegex(@"0x[0-9a-f]+|[0-9a-f]{4,}|\d+")]
    private static partial Regex Numbers();
}
