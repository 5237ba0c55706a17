using NativeMmu.Cli.Commands;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu mthp-reuse`: the seed's scenario on the emulator, and its JSON contract.</summary>
public class MthpReuseCommandTests
{
    [Test]
    public void One_mebibyte_of_64K_folios_gives_the_figures_of_each_kernel()
    {
        MthpReuseCommand.Report r = MthpReuseCommand.Measure(1 << 20, 64 << 10, "all", host: false);
        Assert.That(r.Runs.Select(x => x.Mode), Is.EqualTo(new[] { "copy", "subpage", "whole" }));
        var all = r.Runs.ToDictionary(x => x.Mode, x => x.AllWrites!);
        Assert.That((all["whole"].WpFaults, all["whole"].Copies, all["whole"].SplitDeferred), Is.EqualTo((16L, 0L, 0L)), "whole");
        Assert.That((all["subpage"].WpFaults, all["subpage"].Copies, all["subpage"].SplitDeferred), Is.EqualTo((256L, 0L, 0L)), "subpage, as the host's 6.18");
        Assert.That((all["copy"].WpFaults, all["copy"].Copies, all["copy"].SplitDeferred), Is.EqualTo((256L, 256L, 16L)), "copy, as before 6.15");
        Assert.That(all["subpage"].Pgreuse, Is.EqualTo(256));
        Assert.That(all["whole"].Pgreuse, Is.EqualTo(16), "PGREUSE counted once per folio");
        Assert.That(r.Runs.Select(x => x.FirstWrite!.WpFaults), Is.All.EqualTo(1));
    }

    [Test]
    public void The_json_report_has_the_documented_shape()
    {
        string json = MthpReuseCommand.ToJson(MthpReuseCommand.Measure(256 << 10, 64 << 10, "whole", host: false));
        Assert.That(json, Does.StartWith("{\"scenario\":\"mthp-reuse\",\"size_bytes\":262144,\"folio_bytes\":65536,\"runs\":[{\"mode\":\"whole\",\"first_write\":{\"wp_faults\":1,\"copies\":0,\"pgreuse\":1,\"split_deferred\":0},\"all_writes\":{\"wp_faults\":4,\"copies\":0,\"pgreuse\":4,\"split_deferred\":0,\"peak_rss_kb\":"));
    }

    [TestCase("always inherit [madvise] never", "madvise")]
    [TestCase("[always] madvise never", "always")]
    public void The_current_choice_of_a_sysfs_knob_is_the_bracketed_one(string text, string current)
        => Assert.That(MthpReuseCommand.Current(text), Is.EqualTo(current));
}
