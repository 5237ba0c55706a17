using NativeMmu.Cli.Commands;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu fork`: the emulated figures for the command's default layout.</summary>
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
        Assert.That(run.ForkMs, Has.Length.EqualTo(1));
    }

    [Test]
    public void The_json_report_has_the_documented_shape()
    {
        ForkCommand.Report r = ForkCommand.Measure(4UL << 20, repeat: 3, noHost: true);
        string json = ForkCommand.ToJson(r);
        Assert.That(json, Does.StartWith("{\"scenario\":\"fork\",\"size_bytes\":4194304,\"mode\":\"copy\",\"fork_ms_median\":"));
        Assert.That(json, Does.Contain("\"vmpte_kb_parent\":").And.Contain("\"vmpte_kb_child\":"));
        Assert.That(json, Does.Not.Contain("host"), "--no-host leaves the host object out");
    }
}
