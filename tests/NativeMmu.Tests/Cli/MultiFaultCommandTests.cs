using System.Text.Json;
using NativeMmu.Cli.Commands;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu multi-fault --compare-pt-reclaim`: every mode measured in processes of its own, and the JSON contract.</summary>
public class MultiFaultCommandTests
{
    [Test]
    public void The_sides_take_turns_in_equal_slices_of_at_most_half_a_second_and_each_sides_slices_add_up()
    {
        var turns = new List<(int Side, double Seconds)>();
        Func<double, NativeMmu.Cli.Host.LoopResult> Side(int side, long faults) => s =>
        {
            turns.Add((side, s));
            return new NativeMmu.Cli.Host.LoopResult(faults, s, s / 2);
        };
        var progress = new List<(int, int)>();
        NativeMmu.Cli.Host.LoopResult[] r = MultiFaultCommand.Interleave(1.2, [Side(0, 10), Side(1, 3), Side(2, 7)], (s, n) => progress.Add((s, n)));
        using (Assert.EnterMultipleScope())
        {
            Assert.That(turns.Select(t => t.Side), Is.EqualTo(new[] { 0, 1, 2, 0, 1, 2, 0, 1, 2 }), "emulated, host kernel, ceiling, in turns");
            Assert.That(turns.Select(t => t.Seconds), Is.All.EqualTo(0.4).Within(1e-12), "1.2 s as three slices of 0.4 s");
            Assert.That(progress, Is.EqualTo(new[] { (1, 3), (2, 3), (3, 3) }));
            Assert.That(r.Select(x => x.Faults), Is.EqualTo(new long[] { 30, 9, 21 }));
            Assert.That(r.Select(x => x.Seconds), Is.All.EqualTo(1.2).Within(1e-12));
            Assert.That(r.Select(x => x.CpuSeconds), Is.All.EqualTo(0.6).Within(1e-12));
            Assert.That(MultiFaultCommand.SliceCount(10), Is.EqualTo(20));
            Assert.That(MultiFaultCommand.SliceCount(0.2), Is.EqualTo(1), "a run shorter than a slice is one slice");
        }
    }

    [Test]
    [CancelAfter(120_000)]
    public void Comparing_reclaim_modes_runs_each_round_in_child_processes_and_reports_medians_paired_ratios_and_added_time_per_fault_per_mode()
    {
        MultiFaultCommand.CompareReport r = MultiFaultCommand.MeasureComparePtReclaim([1], 0.6, "multi-fault", 5, out var samples);
        Assert.That(r.SliceSeconds, Is.EqualTo(0.3), "0.6 s per mode and round, in two interleaved slices of at most half a second");
        Assert.That(samples[1].Keys, Is.EquivalentTo(new[] { "off", "refcount", "sync" }));
        Assert.That(samples[1].Values.Select(s => s.Count), Is.All.EqualTo(5), "five rounds of each mode");
        Assert.That(samples[1].Values.SelectMany(s => s), Is.All.GreaterThan(0), "every child process measured faults");
        string json = JsonSerializer.Serialize(r);
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement root = doc.RootElement;
        Assert.That(root.GetProperty("benchmark").GetString(), Is.EqualTo("multi-fault"));
        Assert.That(root.GetProperty("compare").GetString(), Is.EqualTo("pt-reclaim"));
        JsonElement point = root.GetProperty("points")[0];
        Assert.That(point.GetProperty("threads").GetInt32(), Is.EqualTo(1));
        JsonElement medians = point.GetProperty("median_pf_per_min");
        foreach (string mode in new[] { "off", "refcount", "sync" })
            Assert.That(medians.GetProperty(mode).GetDouble(), Is.EqualTo(Math.Round(samples[1][mode].Order().ElementAt(2))), $"{mode}: the median of five");
        JsonElement paired = point.GetProperty("median_ratio_to_off");
        Assert.That(paired.GetProperty("off").GetDouble(), Is.EqualTo(1.0), "off against itself");
        foreach (string mode in new[] { "refcount", "sync" })
        {
            double expected = samples[1][mode].Select((x, round) => x / samples[1]["off"][round]).Order().ElementAt(2);
            Assert.That(paired.GetProperty(mode).GetDouble(), Is.EqualTo(expected).Within(1e-4), $"{mode}: the median of its five per-round ratios to off");
        }
        JsonElement added = point.GetProperty("added_ns_per_fault");
        Assert.That(added.GetProperty("off").GetDouble(), Is.EqualTo(0.0), "off over itself");
        foreach (string mode in new[] { "refcount", "sync" })
        {
            double expected = samples[1][mode].Select((x, round) => 60e9 / x - 60e9 / samples[1]["off"][round]).Order().ElementAt(2);
            Assert.That(added.GetProperty(mode).GetDouble(), Is.EqualTo(expected).Within(0.01), $"{mode}: the median of its five per-round added ns per fault");
        }
    }
}

/// <summary>The emulated loops' figures: faults from the kernel's own count, CPU time from the workers' threads.</summary>
public class EmuLoopsTests
{
    [Test]
    [CancelAfter(60_000)]
    public void The_emulated_multi_fault_loop_reports_its_threads_cpu_time_and_no_more_than_they_could_use()
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 2 });
        NativeMmu.Cli.Host.LoopResult r = NativeMmu.Cli.Emulated.EmuLoops.MultiFault(kernel, threads: 2, seconds: 0.3);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(r.Faults, Is.GreaterThanOrEqualTo(2 * 512), "each thread faulted its window at least once");
            Assert.That(r.CpuSeconds, Is.GreaterThan(0));
            Assert.That(r.CpuSeconds, Is.LessThanOrEqualTo(2 * r.Seconds + 0.02), "two threads cannot use more than twice the wall time");
            Assert.That(r.CpuNsPerFault, Is.EqualTo(r.CpuSeconds * 1e9 / r.Faults));
        }
    }
}
