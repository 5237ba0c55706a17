using System.Diagnostics;
using NativeMmu.Fuzz;

namespace NativeMmu.Tests.Arch;

/// <summary>The differential fuzzer: quiet on the real code, loud and precise on broken code.</summary>
public class EncodingFuzzerTests
{
    /// <summary>Production, except that one helper's result (or one observable) is corrupted.</summary>
    private sealed class BrokenSubject(
        FuzzLevel level,
        FuzzOp? op = null,
        Func<ulong, ulong, ulong>? corruptResult = null,
        int observable = -1,
        Func<ulong, ulong>? corruptObservable = null) : IEncodingSubject
    {
        public ulong Apply(FuzzLevel l, FuzzOp o, ulong value, ulong a, ulong b)
        {
            ulong result = ProductionSubject.Instance.Apply(l, o, value, a, b);
            return l == level && o == op && corruptResult is not null ? corruptResult(value, result) : result;
        }

        public void Observe(FuzzLevel l, ulong value, Span<ulong> observations)
        {
            ProductionSubject.Instance.Observe(l, value, observations);
            if (l == level && corruptObservable is not null)
                observations[observable] = corruptObservable(value);
        }
    }

    private static string Describe(EncodingFuzzResult result)
        => string.Join(Environment.NewLine, result.Failures.Select(f => f.Detail));

    [Test]
    public void Fuzzing_for_one_second_with_seed_1_finds_no_disagreement()
    {
        EncodingFuzzResult result = new EncodingFuzzer().Run(1, TimeSpan.FromSeconds(1));
        TestContext.Out.WriteLine($"{result.Executions:N0} executions in 1 s");
        Assert.Multiple(() =>
        {
            Assert.That(result.Failures, Is.Empty, Describe(result));
            Assert.That(result.Seed, Is.EqualTo(1UL));
            Assert.That(result.Executions, Is.GreaterThan(10_000));
        });
    }

    [Test]
    [Category("Performance")]
    public void One_thread_reaches_ten_million_executions_per_minute()
    {
        // Measured against the process's CPU time, so other work on a shared machine does not decide
        // the result (JIT and GC threads count too, which only makes the figure conservative). Best of
        // three one-second windows.
        var fuzzer = new EncodingFuzzer();
        fuzzer.Run(2, TimeSpan.FromMilliseconds(300)); // warm-up
        using var process = System.Diagnostics.Process.GetCurrentProcess();
        double bestPerCpuMinute = 0, bestPerWallMinute = 0;
        for (ulong seed = 3; seed < 6; seed++)
        {
            process.Refresh();
            TimeSpan cpuBefore = process.TotalProcessorTime;
            var watch = Stopwatch.StartNew();
            EncodingFuzzResult result = fuzzer.Run(seed, TimeSpan.FromSeconds(1));
            watch.Stop();
            process.Refresh();
            double cpuMinutes = (process.TotalProcessorTime - cpuBefore).TotalMinutes;
            bestPerCpuMinute = Math.Max(bestPerCpuMinute, result.Executions / Math.Max(cpuMinutes, 1e-9));
            bestPerWallMinute = Math.Max(bestPerWallMinute, result.Executions / watch.Elapsed.TotalMinutes);
        }
        TestContext.Out.WriteLine($"{bestPerCpuMinute:N0} executions per CPU minute, {bestPerWallMinute:N0} per wall-clock minute, one thread");
        Assert.That(bestPerCpuMinute, Is.GreaterThanOrEqualTo(10_000_000));
    }

    [Test]
    public void A_helper_that_sets_an_extra_bit_is_reported_with_a_one_step_sequence_from_zero()
    {
        var broken = new BrokenSubject(FuzzLevel.Pte, FuzzOp.MkYoung, (_, r) => r | 0x40);
        EncodingFuzzResult result = new EncodingFuzzer(broken) { MaxFailures = 1 }.Run(1, TimeSpan.FromSeconds(30));

        Assert.That(result.Failures, Has.Count.EqualTo(1));
        EncodingFailure failure = result.Failures[0];
        Assert.Multiple(() =>
        {
            Assert.That(failure.Level, Is.EqualTo("pte"));
            Assert.That(failure.Steps, Is.EqualTo(new[] { "pte_mkyoung()" }));
            Assert.That(failure.Observable, Is.EqualTo("value"));
            Assert.That(failure.StartValue, Is.Zero, "the start value shrinks to nothing");
            Assert.That(failure.Expected, Is.EqualTo(0x20UL));
            Assert.That(failure.Actual, Is.EqualTo(0x60UL));
            Assert.That(failure.Detail, Does.Contain("seed 0x0000000000000001"));
        });
    }

    public static IEnumerable<TestCaseData> WrongBits()
        => Enumerable.Range(0, 64).Where(b => b != 5)
            .Select(b => new TestCaseData(b).SetName($"MkYoung_setting_bit_{b}_instead_of_bit_5_is_caught"));

    [TestCaseSource(nameof(WrongBits))]
    public void A_wrong_bit_number_in_a_helper_is_caught(int bit)
    {
        var broken = new BrokenSubject(FuzzLevel.Pte, FuzzOp.MkYoung, (v, _) => v | (1UL << bit));
        EncodingFuzzResult result = new EncodingFuzzer(broken) { MaxFailures = 1, Levels = ["pte"] }.Run((ulong)bit, TimeSpan.FromSeconds(30));
        Assert.That(result.Failures, Has.Count.EqualTo(1));
        Assert.That(result.Failures[0].Steps, Has.Count.EqualTo(1));
    }

    [Test]
    public void A_predicate_reading_the_wrong_bit_is_reported_on_the_start_value_alone()
    {
        int pmdDirty = FuzzCatalog.Observables(FuzzLevel.Pmd).ToList().IndexOf("pmd_dirty");
        var broken = new BrokenSubject(FuzzLevel.Pmd, observable: pmdDirty, corruptObservable: v => (v >> 5) & 1);
        EncodingFuzzResult result = new EncodingFuzzer(broken) { MaxFailures = 1 }.Run(1, TimeSpan.FromSeconds(30));

        Assert.That(result.Failures, Has.Count.EqualTo(1));
        EncodingFailure failure = result.Failures[0];
        Assert.Multiple(() =>
        {
            Assert.That(failure.Observable, Is.EqualTo("pmd_dirty"));
            Assert.That(failure.Steps, Is.Empty);
            Assert.That(ulong.PopCount(failure.StartValue), Is.EqualTo(1), "one bit (A, D or SAVED_DIRTY) is enough");
        });
    }

    [Test]
    public void A_throwing_helper_is_reported_as_an_exception()
    {
        var broken = new BrokenSubject(FuzzLevel.Pud, FuzzOp.MkOld, (_, _) => throw new InvalidOperationException("boom"));
        EncodingFuzzResult result = new EncodingFuzzer(broken) { MaxFailures = 1, Levels = ["pud"] }.Run(5, TimeSpan.FromSeconds(30));
        Assert.That(result.Failures, Has.Count.EqualTo(1));
        Assert.Multiple(() =>
        {
            Assert.That(result.Failures[0].Observable, Is.EqualTo("exception"));
            Assert.That(result.Failures[0].Steps, Is.EqualTo(new[] { "pud_mkold()" }));
            Assert.That(result.Failures[0].Detail, Does.Contain("boom"));
        });
    }

    [Test]
    public void Runs_with_the_same_seed_report_the_same_failures()
    {
        var broken = new BrokenSubject(FuzzLevel.Pmd, FuzzOp.Wrprotect, (_, r) => r & ~(1UL << 58));
        EncodingFuzzResult first = new EncodingFuzzer(broken) { MaxExecutions = 200_000 }.Run(42, TimeSpan.FromMinutes(1));
        EncodingFuzzResult second = new EncodingFuzzer(broken) { MaxExecutions = 200_000 }.Run(42, TimeSpan.FromMinutes(1));
        Assert.Multiple(() =>
        {
            Assert.That(first.Failures, Is.Not.Empty);
            Assert.That(second.Failures.Select(f => f.Detail), Is.EqualTo(first.Failures.Select(f => f.Detail)));
            Assert.That(second.Executions, Is.EqualTo(first.Executions));
        });
    }

    [Test]
    public void Two_threads_share_the_work_without_disagreement()
    {
        EncodingFuzzResult result = new EncodingFuzzer().Run(7, TimeSpan.FromMilliseconds(300), threads: 2);
        Assert.Multiple(() =>
        {
            Assert.That(result.Failures, Is.Empty, Describe(result));
            Assert.That(result.Executions, Is.GreaterThan(0));
        });
    }

    [Test]
    public void Levels_can_be_restricted_and_unknown_ones_are_rejected()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new EncodingFuzzer { Levels = ["swap", "pferr"], MaxExecutions = 10_000 }.Run(3, TimeSpan.FromSeconds(5)).Failures, Is.Empty);
            Assert.That(() => new EncodingFuzzer { Levels = ["pxd"] }.Run(3, TimeSpan.FromSeconds(1)), Throws.ArgumentException);
            Assert.That(EncodingFuzzer.LevelNames, Is.EqualTo(new[] { "pte", "pmd", "pud", "p4d", "pgd4", "pgd5", "swap", "pferr" }));
        });
    }

    [Test]
    public void A_cancelled_run_stops_at_once()
    {
        using var cts = new CancellationTokenSource();
        cts.Cancel();
        EncodingFuzzResult result = new EncodingFuzzer().Run(1, TimeSpan.FromHours(1), cts.Token);
        Assert.That(result.Executions, Is.Zero);
    }
}
