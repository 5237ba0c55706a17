using System.Text.Json;
using NativeMmu.Cli.Commands;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu multi-fault --compare-pt-reclaim`: every mode measured in a process of its own, and the JSON contract.</summary>
public class MultiFaultCommandTests
{
    [Test]
    [CancelAfter(120_000)]
    public void Comparing_reclaim_modes_runs_each_round_in_a_child_process_and_reports_medians_per_mode()
    {
        MultiFaultCommand.CompareReport r = MultiFaultCommand.MeasureComparePtReclaim([1], 0.2, "multi-fault", 5, out var samples);
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
            Assert.That(medians.GetProperty(mode).GetDouble(), Is.EqualTo(samples[1][mode].Order().ElementAt(2)), $"{mode}: the median of five");
    }
}
