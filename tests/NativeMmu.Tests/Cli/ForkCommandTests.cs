using System.Text.Json;
using NativeMmu.Cli.Commands;
using NativeMmu.Cli.Host;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu fork`: the emulated figures for the command's default layout, its options and its JSON contract.</summary>
public class ForkCommandTests
{
    /// <summary>
    /// 1 GiB mapped top-down below mmap_base (0x7ffff7fff000) is PMD-aligned by thp_get_unmapped_area:
    /// [0x7fffb7e00000, 0x7ffff7e00000), so 512 PTE tables; it crosses the 1 GiB boundary at 0x7fffc0000000,
    /// so 2 PMD tables; one PUD table covers it. VmPTE = (512 + 2 + 1) × 4 KiB = 2060 kB, in parent and
    /// child alike (the host's 2096 kB adds its runtime's other mappings).
    /// </summary>
    [Test]
    public void Forking_a_populated_gibibyte_gives_the_child_the_parents_exact_vmpte()
    {
        ForkCommand.EmulatedRun run = ForkCommand.Emulated(1UL << 30, repeat: 1);
        const long expectedKb = (512 + 2 + 1) * 4;
        Assert.That(run.VmpteKbParent, Is.EqualTo(expectedKb), "parent");
        Assert.That(run.VmpteKbChild, Is.EqualTo(expectedKb), "child");
        Assert.That(run.RssKbChild, Is.EqualTo(1L << 20), "a copying fork accounts every page to the child: 1 GiB of VmRSS");
        Assert.That(run.ForkMs, Has.Length.EqualTo(1));
    }

    [Test]
    public void The_json_report_keeps_the_copy_figures_of_the_first_size_on_top_and_lists_every_mode_and_size_in_runs()
    {
        ForkCommand.Report r = ForkCommand.Measure([4UL << 20, 8UL << 20], "all", repeat: 3, noHost: true);
        string json = ForkCommand.ToJson(r);
        Assert.That(json, Does.StartWith("{\"scenario\":\"fork\",\"size_bytes\":4194304,\"mode\":\"copy\",\"fork_ms_median\":"));
        Assert.That(json, Does.Not.Contain("host"), "--no-host leaves the host object and the host rows out");
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement root = doc.RootElement;
        JsonElement[] runs = [.. root.GetProperty("runs").EnumerateArray()];
        Assert.That(runs.Select(x => (x.GetProperty("mode").GetString(), x.GetProperty("size_bytes").GetUInt64())), Is.EqualTo(new[]
        {
            ("copy", 4UL << 20), ("cow-pte-lazy", 4UL << 20), ("cow-pte-eager", 4UL << 20),
            ("copy", 8UL << 20), ("cow-pte-lazy", 8UL << 20), ("cow-pte-eager", 8UL << 20),
        }), "each size runs every mode, in the order of --size");
        foreach (JsonElement x in runs)
        {
            Assert.That(x.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "mode", "size_bytes", "fork_ms_median", "vmpte_kb_parent", "vmpte_kb_child", "rss_kb_child" }));
            Assert.That(x.GetProperty("fork_ms_median").GetDouble(), Is.GreaterThan(0));
        }
        Assert.That(root.GetProperty("fork_ms_median").GetDouble(), Is.EqualTo(runs[0].GetProperty("fork_ms_median").GetDouble()), "the top-level figures are copy's at the first size");
        Assert.That(root.GetProperty("vmpte_kb_child").GetInt64(), Is.EqualTo(runs[0].GetProperty("vmpte_kb_child").GetInt64()));
        Assert.That(runs[0].GetProperty("vmpte_kb_parent").GetInt64(), Is.EqualTo((2 + 1 + 1) * 4), "4 MiB, PMD-aligned: two PTE tables, a PMD and a PUD table");
        Assert.That(runs[0].GetProperty("rss_kb_child").GetInt64(), Is.EqualTo(4096), "copy: the child is charged every page of the 4 MiB");
    }

    [Test]
    public void Modes_whose_kernels_fit_together_take_turns_and_each_keeps_its_own_figures()
    {
        ForkCommand.EmulatedRun[] runs = ForkCommand.EmulatedTurns(4UL << 20, repeat: 3, [CowPteMode.Off, CowPteMode.Lazy, CowPteMode.Eager], out bool turns);
        Assert.That(turns, Is.True, "three 4 MiB kernels fit in any machine that runs the tests");
        Assert.That(runs.Select(r => r.ForkMs.Length), Is.All.EqualTo(3));
        Assert.That(runs.Select(r => r.VmpteKbParent), Is.All.EqualTo((2 + 1 + 1) * 4L), "every mode's parent has the same tables before its first fork");
        Assert.That(runs[0].VmpteKbChild, Is.EqualTo(runs[0].VmpteKbParent), "copy gives the child tables of its own");
        Assert.That(runs[1].VmpteKbChild, Is.LessThan(runs[0].VmpteKbChild), "lazy: the child shares the parent's PTE tables");
        Assert.That(runs[2].VmpteKbChild, Is.LessThan(runs[0].VmpteKbChild), "eager: the child shares the parent's PTE tables");
    }

    [Test]
    public void One_mode_alone_is_the_only_emulated_row_and_the_top_level_figures_are_its_own()
    {
        ForkCommand.Report r = ForkCommand.Measure([4UL << 20], "cow-pte-lazy", repeat: 1, noHost: true);
        Assert.That(r.Runs.Select(x => x.Mode), Is.EqualTo(new[] { "cow-pte-lazy" }));
        Assert.That(r.Mode, Is.EqualTo("cow-pte-lazy"));
        Assert.That(r.ForkMsMedian, Is.EqualTo(r.Runs[0].ForkMsMedian));
    }

    [Test]
    public void The_host_kernel_runs_after_the_modes_of_each_size_and_fills_the_top_level_host_object()
    {
        Assume.That(HostFork.Supported, "the host fork stub needs x86-64 Linux");
        ForkCommand.Report r = ForkCommand.Measure([4UL << 20, 8UL << 20], "copy", repeat: 2, noHost: false);
        Assert.That(r.Runs.Select(x => (x.Mode, x.SizeBytes)), Is.EqualTo(new[] { ("copy", 4UL << 20), ("host", 4UL << 20), ("copy", 8UL << 20), ("host", 8UL << 20) }));
        ForkCommand.Run host = r.Runs[1];
        Assert.That(host.Error, Is.Null);
        Assert.That(host.ForkMsMedian, Is.GreaterThan(0));
        Assert.That(host.RssKbChild, Is.GreaterThanOrEqualTo(4096L), "the child maps the populated 4 MiB, and the runtime's pages besides");
        Assert.That(host.VmpteKbChild, Is.GreaterThan(0));
        Assert.That(r.Host, Is.Not.Null);
        Assert.That(r.Host!.ForkMsMedian, Is.EqualTo(host.ForkMsMedian), "the top-level host object is the host at the first size");
        string json = ForkCommand.ToJson(r);
        Assert.That(json, Does.Contain("{\"mode\":\"host\",\"size_bytes\":4194304,\"fork_ms_median\":"));
    }

    [Test]
    public void A_size_list_is_parsed_in_order_with_binary_suffixes()
        => Assert.That(ForkCommand.ParseSizes("64M, 256M,1G,4G"), Is.EqualTo(new[] { 64UL << 20, 256UL << 20, 1UL << 30, 4UL << 30 }));

    [TestCase("", TestName = "An empty size list is refused")]
    [TestCase("0", TestName = "A zero size is refused")]
    [TestCase("6000", TestName = "A size that is not a multiple of 4 KiB is refused")]
    [TestCase("1G,64M,1G", TestName = "A size listed twice is refused")]
    public void A_bad_size_list_is_refused(string spec)
        => Assert.That(() => ForkCommand.ParseSizes(spec), Throws.InstanceOf<ArgumentException>());

    [Test]
    public void The_command_line_takes_the_four_modes_and_refuses_others()
    {
        foreach (string mode in new[] { "copy", "cow-pte-lazy", "cow-pte-eager", "all" })
            Assert.That(ForkCommand.Create().Parse(["--mode", mode, "--size", "64M,1G"]).Errors, Is.Empty, mode);
        Assert.That(ForkCommand.Create().Parse(["--mode", "cow-pte"]).Errors, Is.Not.Empty);
        Assert.That(ForkCommand.SelectModes("all").Select(m => m.CowPte), Is.EqualTo(new[] { CowPteMode.Off, CowPteMode.Lazy, CowPteMode.Eager }));
    }

    [Test]
    public void A_copy_on_write_mode_turns_it_on_for_every_process()
    {
        Assert.That(ForkCommand.ConfigFor(4UL << 20, CowPteMode.Off), Has.Property(nameof(KernelConfig.CowPte)).EqualTo(CowPteMode.Off).And.Property(nameof(KernelConfig.CowPteAllProcesses)).False);
        Assert.That(ForkCommand.ConfigFor(4UL << 20, CowPteMode.Lazy), Has.Property(nameof(KernelConfig.CowPte)).EqualTo(CowPteMode.Lazy).And.Property(nameof(KernelConfig.CowPteAllProcesses)).True);
        Assert.That(ForkCommand.ConfigFor(4UL << 20, CowPteMode.Eager), Has.Property(nameof(KernelConfig.CowPte)).EqualTo(CowPteMode.Eager).And.Property(nameof(KernelConfig.CowPteAllProcesses)).True);
    }

    [Test]
    public void The_plot_draws_one_series_per_mode_and_the_host_over_the_sizes()
    {
        var runs = new List<ForkCommand.Run>
        {
            new("copy", 4UL << 20, 1.0, 12, 12, 4096), new("cow-pte-lazy", 4UL << 20, 0.1, 12, 4, 0), new("host", 4UL << 20, null, null, null, null, "no host"),
            new("copy", 8UL << 20, 2.0, 20, 20, 8192), new("cow-pte-lazy", 8UL << 20, 0.1, 20, 4, 0),
        };
        var report = new ForkCommand.Report("fork", 4UL << 20, "copy", 1.0, 12, 12, null, runs);
        var rows = ForkCommand.PlotRows(report);
        Assert.That(rows.Select(x => x.Series).Distinct().Count(), Is.EqualTo(2), "a host row without a figure is not drawn");
        Assert.That(rows.Where(x => x.Series.Contains("copy ")).Select(x => (x.SizeBytes, x.ForkMs)), Is.EqualTo(new[] { (4UL << 20, 1.0), (8UL << 20, 2.0) }));
    }
}
