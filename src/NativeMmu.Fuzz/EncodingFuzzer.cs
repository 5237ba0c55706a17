using System.Diagnostics;
using System.Runtime.InteropServices;
using System.Text;

namespace NativeMmu.Fuzz;

/// <summary>The outcome of <see cref="EncodingFuzzer.Run"/>.</summary>
/// <param name="Seed">The seed the run started from (thread 0 uses it as is).</param>
/// <param name="Executions">Helper applications compared on both sides, over all threads.</param>
/// <param name="Failures">Distinct disagreements, each shrunk to a small reproducer.</param>
public sealed record EncodingFuzzResult(ulong Seed, long Executions, IReadOnlyList<EncodingFailure> Failures);

/// <summary>One disagreement between NativeMmu.Arch.X86 and the oracle, after shrinking.</summary>
/// <param name="Level">pte, pmd, pud, p4d, pgd4, pgd5, swap or pferr.</param>
/// <param name="StartValue">The value the steps start from.</param>
/// <param name="Steps">The helper applications, e.g. <c>pmd_modify(newprot=0x25)</c>; empty when the start value alone disagrees.</param>
/// <param name="Observable">What differs after the last step: <c>value</c>, a predicate or a getter, or <c>exception</c>.</param>
/// <param name="Expected">The oracle's (kernel's) result.</param>
/// <param name="Actual">The production result.</param>
/// <param name="Detail">A readable account, with the seed and the sequence as first found.</param>
public sealed record EncodingFailure(
    string Level,
    ulong StartValue,
    IReadOnlyList<string> Steps,
    string Observable,
    ulong Expected,
    ulong Actual,
    string Detail)
{
    /// <summary>The shrunk case in replayable form (<see cref="EncodingCase.ToString"/>).</summary>
    public EncodingCase? Case { get; init; }
}

/// <summary>
/// Differential fuzzer for the x86-64 entry encodings: random (biased) start values and random
/// sequences of 1..16 helper applications are run through NativeMmu.Arch.X86 and through the
/// independent oracle in NativeMmu.Fuzz.Oracle, comparing the value and every predicate and getter
/// of the level after each step. A disagreement is recorded once per (level, helper, observable) and
/// shrunk: steps are dropped (delta debugging), the sequence is rebased onto the state just before the
/// failing step if that is shorter, then bits of the start value and of the arguments are cleared.
/// </summary>
public sealed class EncodingFuzzer
{
    /// <summary>Longest generated sequence.</summary>
    public const int MaxSequenceLength = 16;

    private readonly IEncodingSubject _production;
    private readonly IEncodingSubject? _oracleOverride;

    /// <summary>A fuzzer comparing NativeMmu.Arch.X86 with the oracle.</summary>
    public EncodingFuzzer()
        : this(ProductionSubject.Instance)
    {
    }

    /// <summary>A fuzzer over other subjects (tests use this to check that broken code is caught).</summary>
    internal EncodingFuzzer(IEncodingSubject production, IEncodingSubject? oracle = null)
    {
        _production = production;
        _oracleOverride = oracle;
    }

    /// <summary>The level names <see cref="Levels"/> accepts.</summary>
    public static IReadOnlyList<string> LevelNames => FuzzCatalog.LevelNames;

    /// <summary>Stop recording after this many distinct failures (the run then ends early).</summary>
    public int MaxFailures { get; init; } = 16;

    /// <summary>Restrict the run to these levels (see <see cref="LevelNames"/>); null means all.</summary>
    public IReadOnlyList<string>? Levels { get; init; }

    /// <summary>Stop after about this many executions in total, even if time remains.</summary>
    public long MaxExecutions { get; init; } = long.MaxValue;

    /// <summary>
    /// Fuzzes for <paramref name="duration"/> (or until <paramref name="ct"/> fires, <see cref="MaxExecutions"/>
    /// is reached or <see cref="MaxFailures"/> failures are recorded). With several threads, thread 0
    /// uses <paramref name="seed"/> and the others seeds derived from it by SplitMix64.
    /// </summary>
    public EncodingFuzzResult Run(ulong seed, TimeSpan duration, CancellationToken ct = default, int threads = 1)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(threads, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(MaxFailures, 1);
        FuzzLevel[] pickTable = Levels is null ? AllLevels : BuildPickTable(Levels);
        IEncodingSubject oracle = _oracleOverride ?? OracleSubject.Reference;
        var sink = new FailureSink(MaxFailures);

        long now = Stopwatch.GetTimestamp();
        long deadline = duration >= TimeSpan.FromDays(365)
            ? long.MaxValue
            : now + (long)(Math.Max(0, duration.TotalSeconds) * Stopwatch.Frequency);
        long budget = MaxExecutions == long.MaxValue ? long.MaxValue : Math.Max(1, MaxExecutions / threads);

        var seeds = new ulong[threads];
        ulong state = seed;
        seeds[0] = seed;
        for (int i = 1; i < threads; i++)
            seeds[i] = FuzzRandom.SplitMix(ref state);

        long executions;
        if (threads == 1)
        {
            executions = new Worker(_production, oracle, sink, pickTable, seeds[0], 0).Run(deadline, budget, ct);
        }
        else
        {
            var counts = new long[threads];
            var exceptions = new Exception?[threads];
            var workers = new Thread[threads];
            for (int i = 0; i < threads; i++)
            {
                int index = i;
                workers[i] = new Thread(() =>
                {
                    try
                    {
                        counts[index] = new Worker(_production, oracle, sink, pickTable, seeds[index], index).Run(deadline, budget, ct);
                    }
                    catch (Exception e)
                    {
                        exceptions[index] = e;
                    }
                })
                {
                    IsBackground = true,
                    Name = $"encoding-fuzz-{index}",
                };
                workers[i].Start();
            }
            foreach (Thread t in workers)
                t.Join();
            if (exceptions.Any(e => e is not null))
                throw new AggregateException(exceptions.OfType<Exception>());
            executions = counts.Sum();
        }

        return new EncodingFuzzResult(seed, executions, sink.Snapshot());
    }

    /// <summary>Every level, weighted: what a run without <see cref="Levels"/> and the byte decoder pick from.</summary>
    internal static readonly FuzzLevel[] AllLevels = BuildPickTable(null);

    /// <summary>
    /// One generated case: the level, the start value and up to <see cref="MaxSequenceLength"/> steps
    /// (fewer when a byte source runs out). The random fuzzer and the byte decoder both generate here.
    /// </summary>
    internal static int GenerateCase<TChoices>(ref TChoices c, FuzzLevel[] pickTable, out FuzzLevel level, out ulong start, Span<FuzzStep> steps)
        where TChoices : struct, IEncodingChoices
    {
        level = pickTable[c.Next(pickTable.Length)];
        start = FuzzGenerator.Value(ref c, level);
        int length = 1 + c.Next(MaxSequenceLength);
        int n = 0;
        for (; n < length && !c.Exhausted; n++)
            steps[n] = FuzzGenerator.Step(ref c, level);
        return n;
    }

    private Worker? _checker;

    /// <summary>
    /// Runs one case on both sides; null when they agree, else the difference (shrunk when asked),
    /// described as found from <paramref name="origin"/>. Not thread-safe: one checker per fuzzer.
    /// </summary>
    internal EncodingFailure? Check(FuzzLevel level, ulong start, ReadOnlySpan<FuzzStep> steps, bool shrink, string origin)
    {
        _checker ??= new Worker(_production, _oracleOverride ?? OracleSubject.Reference, new FailureSink(1), AllLevels, 0, 0);
        return _checker.Check(level, start, steps, shrink, origin);
    }

    /// <summary>Whether the two sides disagree on a case; allocates nothing when they agree.</summary>
    internal bool Differs(FuzzLevel level, ulong start, ReadOnlySpan<FuzzStep> steps)
    {
        _checker ??= new Worker(_production, _oracleOverride ?? OracleSubject.Reference, new FailureSink(1), AllLevels, 0, 0);
        return _checker.Differs(level, start, steps);
    }

    /// <summary>Runs a replayable case once (no shrinking); null when production and the oracle agree.</summary>
    public EncodingFailure? Replay(EncodingCase c) => Check(c.Level, c.Start, c.Steps, shrink: false, origin: "the replayed case");

    private static FuzzLevel[] BuildPickTable(IReadOnlyList<string>? names)
    {
        var chosen = new List<FuzzLevel>();
        if (names is null)
        {
            for (int i = 0; i < FuzzCatalog.LevelCount; i++)
                chosen.Add((FuzzLevel)i);
        }
        else
        {
            foreach (string name in names)
            {
                if (!FuzzCatalog.TryParseLevel(name, out FuzzLevel level))
                    throw new ArgumentException($"Unknown level '{name}'; expected one of {string.Join(", ", FuzzCatalog.LevelNames)}", nameof(names));
                if (!chosen.Contains(level))
                    chosen.Add(level);
            }
            if (chosen.Count == 0)
                throw new ArgumentException("No level selected", nameof(names));
        }

        // The leaf levels have the most helpers, so they get more of the sequences.
        var table = new List<FuzzLevel>();
        foreach (FuzzLevel level in chosen)
        {
            int weight = level switch
            {
                FuzzLevel.Pte or FuzzLevel.Pmd => 3,
                FuzzLevel.Pud or FuzzLevel.Swap => 2,
                _ => 1,
            };
            for (int i = 0; i < weight; i++)
                table.Add(level);
        }
        return table.ToArray();
    }

    /// <summary>Where two runs first part: step -1 is the start value itself; observable -1 is an exception.</summary>
    private readonly record struct Divergence(int Step, int Observable, ulong Expected, ulong Actual, string? Exception = null);

    private sealed class FailureSink(int max)
    {
        private readonly Lock _gate = new();
        private readonly HashSet<(FuzzLevel, int, int)> _seen = [];
        private readonly List<EncodingFailure> _failures = [];
        private volatile bool _full;

        public bool Full => _full;

        /// <summary>True the first time a (level, op, observable) signature shows up and there is room left.</summary>
        public bool Claim(FuzzLevel level, int op, int observable)
        {
            lock (_gate)
            {
                if (_seen.Count >= max)
                    return false;
                bool fresh = _seen.Add((level, op, observable));
                if (_seen.Count >= max)
                    _full = true;
                return fresh;
            }
        }

        public void Add(EncodingFailure failure)
        {
            lock (_gate)
                _failures.Add(failure);
        }

        public IReadOnlyList<EncodingFailure> Snapshot()
        {
            lock (_gate)
                return _failures.ToArray();
        }
    }

    /// <summary>One thread's loop: its own random stream and observation buffers, nothing allocated per step.</summary>
    private sealed class Worker(
        IEncodingSubject production,
        IEncodingSubject oracle,
        FailureSink sink,
        FuzzLevel[] pickTable,
        ulong seed,
        int threadIndex)
    {
        private readonly ulong[] _actual = new ulong[FuzzCatalog.MaxObservables];
        private readonly ulong[] _expected = new ulong[FuzzCatalog.MaxObservables];
        private readonly FuzzStep[] _steps = new FuzzStep[MaxSequenceLength];
        private FuzzRandom _rng = new(seed);

        public long Run(long deadline, long budget, CancellationToken ct)
        {
            long executions = 0;
            long sequence = 0;
            while (executions < budget && !sink.Full && !ct.IsCancellationRequested && Stopwatch.GetTimestamp() < deadline)
            {
                int length = GenerateCase(ref _rng, pickTable, out FuzzLevel level, out ulong start, _steps);
                sequence++;

                if (Execute(level, start, _steps.AsSpan(0, length), ref executions) is { } divergence)
                {
                    int op = divergence.Step < 0 ? -1 : (int)_steps[divergence.Step].Op;
                    if (sink.Claim(level, op, divergence.Observable))
                        sink.Add(Shrink(level, start, _steps.AsSpan(0, divergence.Step + 1).ToArray(), divergence, sequence));
                }
            }
            return executions;
        }

        public bool Differs(FuzzLevel level, ulong start, ReadOnlySpan<FuzzStep> steps)
        {
            long ignored = 0;
            return Execute(level, start, steps, ref ignored) is not null;
        }

        public EncodingFailure? Check(FuzzLevel level, ulong start, ReadOnlySpan<FuzzStep> steps, bool shrink, string origin)
        {
            long ignored = 0;
            if (Execute(level, start, steps, ref ignored) is not { } d)
                return null;
            FuzzStep[] through = steps[..(d.Step + 1)].ToArray();
            return shrink
                ? Shrink(level, start, through, d, 0, origin)
                : Describe(level, start, [.. through], d, start, through, d, 0, origin);
        }

        /// <summary>Runs a sequence on both sides and reports the first disagreement, if any.</summary>
        private Divergence? Execute(FuzzLevel level, ulong start, ReadOnlySpan<FuzzStep> steps, ref long executions)
        {
            int count = FuzzCatalog.ObservableCount(level);
            int step = -1;
            try
            {
                if (Differs(level, start, start, count) is { } initial)
                    return initial;
                ulong actual = start, expected = start;
                for (step = 0; step < steps.Length; step++)
                {
                    FuzzStep s = steps[step];
                    actual = production.Apply(level, s.Op, actual, s.A, s.B);
                    expected = oracle.Apply(level, s.Op, expected, s.A, s.B);
                    executions++;
                    if (Differs(level, actual, expected, count) is { } d)
                        return d with { Step = step };
                }
                return null;
            }
            catch (Exception e) when (e is not OutOfMemoryException)
            {
                return new Divergence(Math.Min(step, steps.Length - 1), -1, 0, 0, $"{e.GetType().Name}: {e.Message}");
            }
        }

        private Divergence? Differs(FuzzLevel level, ulong actual, ulong expected, int count)
        {
            if (actual != expected)
                return new Divergence(-1, 0, expected, actual);
            _actual[0] = actual;
            _expected[0] = expected;
            production.Observe(level, actual, _actual);
            oracle.Observe(level, expected, _expected);
            for (int k = 1; k < count; k++)
            {
                if (_actual[k] != _expected[k])
                    return new Divergence(-1, k, _expected[k], _actual[k]);
            }
            return null;
        }

        // ---- shrinking (allocates freely: it only runs when something is wrong) ----

        private EncodingFailure Shrink(FuzzLevel level, ulong originalStart, FuzzStep[] originalSteps, Divergence original, long sequence, string? origin = null)
        {
            int signatureOp = original.Step < 0 ? -1 : (int)originalSteps[original.Step].Op;
            ulong start = originalStart;
            List<FuzzStep> steps = [.. originalSteps];

            // A candidate fails "the same way" when the same observable differs after the same kind of
            // step, or already on the start value: a wrong predicate is best shown with no steps at all.
            bool Fails(ulong s, List<FuzzStep> candidate, out Divergence found)
            {
                long ignored = 0;
                if (Execute(level, s, CollectionsMarshal.AsSpan(candidate), ref ignored) is { } d
                    && d.Observable == original.Observable
                    && (d.Step < 0 || (int)candidate[d.Step].Op == signatureOp))
                {
                    found = d;
                    return true;
                }
                found = default;
                return false;
            }

            ulong OracleState(int count)
            {
                ulong state = start;
                for (int i = 0; i < count; i++)
                    state = oracle.Apply(level, steps[i].Op, state, steps[i].A, steps[i].B);
                return state;
            }

            static List<FuzzStep> Through(List<FuzzStep> candidate, Divergence d) => candidate.GetRange(0, d.Step + 1);

            for (int round = 0; round < 4; round++)
            {
                ulong startBefore = start;
                int countBefore = steps.Count;
                var stepsBefore = steps.ToArray();

                // 1. Delta debugging over the steps: drop chunks while the failure stays.
                int granularity = 2;
                while (steps.Count >= 2)
                {
                    int chunk = (steps.Count + granularity - 1) / granularity;
                    bool reduced = false;
                    for (int from = 0; from < steps.Count && !reduced; from += chunk)
                    {
                        var candidate = new List<FuzzStep>(steps.Count);
                        candidate.AddRange(steps.Take(from));
                        candidate.AddRange(steps.Skip(from + chunk));
                        if (Fails(start, candidate, out Divergence d))
                        {
                            steps = Through(candidate, d);
                            granularity = Math.Max(granularity - 1, 2);
                            reduced = true;
                        }
                    }
                    if (!reduced)
                    {
                        if (granularity >= steps.Count)
                            break;
                        granularity = Math.Min(granularity * 2, steps.Count);
                    }
                }

                // 2. Rebase: start from the (agreed) state just before the failing step, or, for a
                //    predicate or getter, from the state after it with no steps at all.
                if (steps.Count > 0 && Fails(start, [], out _))
                {
                    steps = [];
                }
                else if (steps.Count > 0 && original.Observable != 0 && Fails(OracleState(steps.Count), [], out _))
                {
                    start = OracleState(steps.Count);
                    steps = [];
                }
                else if (steps.Count > 1)
                {
                    ulong state = OracleState(steps.Count - 1);
                    var last = new List<FuzzStep> { steps[^1] };
                    if (Fails(state, last, out _))
                    {
                        start = state;
                        steps = last;
                    }
                }

                // 3. Clear bits of the start value, then of the arguments.
                for (int bit = 63; bit >= 0; bit--)
                {
                    ulong m = 1UL << bit;
                    if ((start & m) != 0 && Fails(start & ~m, steps, out Divergence d))
                    {
                        start &= ~m;
                        steps = Through(steps, d);
                    }
                }
                for (int i = 0; i < steps.Count; i++)
                {
                    int args = FuzzCatalog.ArgNames(steps[i].Op).Length;
                    for (int which = 0; which < args; which++)
                        SimplifyArgument(steps, i, which, start, Fails);
                }

                if (start == startBefore && steps.Count == countBefore && steps.SequenceEqual(stepsBefore))
                    break;
            }

            long none = 0;
            Divergence final = Execute(level, start, CollectionsMarshal.AsSpan(steps), ref none)
                ?? original; // cannot happen: every accepted candidate failed
            return Describe(level, start, steps, final, originalStart, originalSteps, original, sequence, origin);
        }

        private delegate bool FailsCheck(ulong start, List<FuzzStep> steps, out Divergence d);

        private static void SimplifyArgument(List<FuzzStep> steps, int index, int which, ulong start, FailsCheck fails)
        {
            ulong Get(FuzzStep s) => which == 0 ? s.A : s.B;
            FuzzStep With(FuzzStep s, ulong v) => which == 0 ? s with { A = v } : s with { B = v };

            if (index >= steps.Count || Get(steps[index]) == 0)
                return;
            var trial = new List<FuzzStep>(steps);
            trial[index] = With(steps[index], 0);
            if (fails(start, trial, out _))
            {
                steps[index] = trial[index];
                return;
            }
            for (int bit = 63; bit >= 0; bit--)
            {
                ulong v = Get(steps[index]);
                ulong m = 1UL << bit;
                if ((v & m) == 0)
                    continue;
                trial = new List<FuzzStep>(steps);
                trial[index] = With(steps[index], v & ~m);
                if (fails(start, trial, out _))
                    steps[index] = trial[index];
            }
        }

        private EncodingFailure Describe(
            FuzzLevel level, ulong start, List<FuzzStep> steps, Divergence d,
            ulong originalStart, FuzzStep[] originalSteps, Divergence original, long sequence, string? origin = null)
        {
            string observable = d.Observable < 0 ? "exception" : FuzzCatalog.Observables(level)[d.Observable];
            string[] described = steps.Select(s => FuzzCatalog.Describe(level, s)).ToArray();
            string at = d.Step < 0 ? "the start value" : $"step {d.Step + 1} ({described[d.Step]})";
            var text = new StringBuilder();
            text.Append($"{FuzzCatalog.Name(level)} 0x{start:x16}");
            foreach (string s in described)
                text.Append(" -> ").Append(s);
            text.Append($": {observable} differs at {at}");
            if (d.Exception is not null)
                text.Append($": {d.Exception}");
            else
                text.Append($": kernel (oracle) 0x{d.Expected:x16}, production 0x{d.Actual:x16}");
            text.Append(origin is null
                ? $". Found with seed 0x{seed:x16} (thread {threadIndex}, sequence {sequence}) from start 0x{originalStart:x16} "
                : $". Found in {origin} from start 0x{originalStart:x16} ");
            text.Append($"after {original.Step + 1} of its steps [");
            text.Append(string.Join(", ", originalSteps.Select(s => FuzzCatalog.Describe(level, s))));
            text.Append("].");
            return new EncodingFailure(FuzzCatalog.Name(level), start, described, observable, d.Expected, d.Actual, text.ToString())
            {
                Case = new EncodingCase(level, start, [.. steps]),
            };
        }
    }
}
