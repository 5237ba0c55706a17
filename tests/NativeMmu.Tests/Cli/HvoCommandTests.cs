using System.Text.Json;
using NativeMmu.Cli.Commands;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu hvo`: the JSON the issue names, with the exact per-page savings of each design.</summary>
public class HvoCommandTests
{
    [Test]
    public void The_json_has_the_issues_keys_and_each_designs_exact_2MiB_saving()
    {
        HvoCommand.Report report = HvoCommand.Measure("2M", 4, "all");
        using JsonDocument doc = JsonDocument.Parse(JsonSerializer.Serialize(report));
        Assert.That(doc.RootElement.GetProperty("scenario").GetString(), Is.EqualTo("hvo"));
        JsonElement[] runs = [.. doc.RootElement.GetProperty("runs").EnumerateArray()];
        Assert.That(runs.Select(r => r.GetProperty("mode").GetString()), Is.EqualTo(new[] { "off", "keep-two", "keep-head", "shared-tails" }));
        foreach (string key in new[] { "mode", "size_bytes", "count", "vmemmap_frames_before", "vmemmap_frames_after", "saved_frames_per_page", "alloc_us_per_page", "free_us_per_page", "tlb_flushes" })
            Assert.That(runs[0].TryGetProperty(key, out _), Is.True, key);
        Assert.That(runs.Select(r => r.GetProperty("saved_frames_per_page").GetInt64()), Is.EqualTo(new long[] { 0, 6, 7, 7 }));
        Assert.That(runs.Select(r => r.GetProperty("net_saved_frames").GetInt64()), Is.EqualTo(new long[] { 0, 4 * 6 - 1, 4 * 7 - 1, 4 * 7 - 1 - 1 }),
            "less one PTE table (the four pages share a vmemmap PMD) and, for shared-tails, the shared page");
        Assert.That(runs.Select(r => r.GetProperty("tlb_flushes").GetInt64()), Is.EqualTo(new long[] { 0, 3, 3, 3 }), "two per optimize batch, one per restore batch");
        Assert.That(runs.All(r => r.GetProperty("vmemmap_frames_after_free").GetInt64() == r.GetProperty("vmemmap_frames_before").GetInt64()), Is.True);
        Assert.That(report.Rfc300Gb, Is.Empty, "the RFC figure is for 1 GiB pages");
    }

    [Test]
    public void The_rfc_figure_is_300_times_the_measured_1GiB_saving()
    {
        HvoCommand.Report report = HvoCommand.Measure("1G", 1, "keep-two");
        Assert.That(report.Runs.Single().SavedFramesPerPage, Is.EqualTo(4094));
        HvoCommand.Rfc rfc = report.Rfc300Gb.Single();
        Assert.That(rfc.SavedMib, Is.EqualTo(4797.7), "300 x 4094 x 4 KiB: the RFC's 4797 MB");
        Assert.That(rfc.NetSavedMib, Is.EqualTo(4788.3), "net 4086 frames per page: Mike Kravetz's measured 1 GiB figure");
        Assert.That(rfc.Arithmetic, Does.StartWith("300 pages x 4094 frames x 4 KiB = 1228200 frames = 4797.7 MiB"));
    }
}
