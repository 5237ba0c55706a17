using System.Text.Json;
using NativeMmu.Cli.Commands;
using NativeMmu.Cli.Host;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu fork-server`: the loop per mode and on the host, the host child's writes, the page picks and the JSON contract.</summary>
public class ForkServerCommandTests
{
    [Test]
    [CancelAfter(60_000)]
    public void The_json_report_has_the_documented_shape_with_every_mode_and_the_host()
    {
        ForkServerCommand.Report r = ForkServerCommand.Measure(4UL << 20, touch: 4, seconds: 0.05, seed: 7, "all", noHost: !HostFork.Supported);
        string json = ForkServerCommand.ToJson(r);
        Assert.That(json, Does.StartWith("{\"scenario\":\"fork-server\",\"size_bytes\":4194304,\"touch_pages\":4,\"seconds\":0.05,\"runs\":[{\"mode\":\"copy\",\"forks_per_second\":"));
        using JsonDocument doc = JsonDocument.Parse(json);
        JsonElement[] runs = [.. doc.RootElement.GetProperty("runs").EnumerateArray()];
        string[] expected = HostFork.Supported ? ["copy", "cow-pte-lazy", "cow-pte-eager", "host"] : ["copy", "cow-pte-lazy", "cow-pte-eager"];
        Assert.That(runs.Select(x => x.GetProperty("mode").GetString()), Is.EqualTo(expected));
        foreach (JsonElement x in runs)
        {
            Assert.That(x.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "mode", "forks_per_second" }), x.ToString());
            Assert.That(x.GetProperty("forks_per_second").GetDouble(), Is.GreaterThan(0));
        }
    }

    [Test]
    public void Each_emulated_run_times_its_phases_and_forks_until_the_time_is_up()
    {
        ForkServerCommand.Phases t = ForkServerCommand.Emulated(4UL << 20, touch: 16, seconds: 0.05, seed: 1, CowPteMode.Off);
        Assert.That(t.Forks, Is.GreaterThan(0));
        Assert.That(t.Seconds, Is.GreaterThanOrEqualTo(0.05), "the loop stops at the first step that ends after --seconds");
        Assert.That(t.ChildMs, Is.GreaterThan(0));
        Assert.That(t.ForkMs + t.ChildMs!.Value + t.ExitMs, Is.LessThanOrEqualTo(t.Seconds * 1000 / t.Forks * 1.0001), "the phases add up to no more than a step");
    }

    [Test]
    public void Modes_whose_kernels_fit_together_take_turns_until_each_has_run_its_seconds()
    {
        ForkServerCommand.Phases[] t = ForkServerCommand.EmulatedTurns(4UL << 20, touch: 4, seconds: 0.6, seed: 1, [CowPteMode.Off, CowPteMode.Eager], out bool turns);
        Assert.That(turns, Is.True, "two 4 MiB kernels fit in any machine that runs the tests");
        Assert.That(t, Has.Length.EqualTo(2));
        Assert.That(t.Select(x => x.Seconds), Is.All.GreaterThanOrEqualTo(0.6), "each mode runs its whole --seconds, over two turns of at most 0.5 s");
        Assert.That(t.Select(x => x.Forks), Is.All.GreaterThan(1));
    }

    [Test]
    public void The_one_mode_asked_for_is_the_only_run()
    {
        ForkServerCommand.Report r = ForkServerCommand.Measure(4UL << 20, touch: 1, seconds: 0.02, seed: 1, "cow-pte-eager", noHost: true);
        Assert.That(r.Runs.Select(x => x.Mode), Is.EqualTo(new[] { "cow-pte-eager" }));
    }

    [TestCase(0UL, 16, 1.0, TestName = "A zero size is refused")]
    [TestCase(4096UL + 1, 16, 1.0, TestName = "A size that is not a multiple of 4 KiB is refused")]
    [TestCase(4096UL, -1, 1.0, TestName = "A negative touch count is refused")]
    [TestCase(4096UL, 16, 0.0, TestName = "Zero seconds are refused")]
    public void Bad_arguments_are_refused(ulong size, int touch, double seconds)
        => Assert.That(() => ForkServerCommand.Measure(size, touch, seconds, 1, "copy", noHost: true), Throws.InstanceOf<ArgumentException>());

    [Test]
    public void The_command_line_has_the_documented_options_and_defaults()
    {
        var cmd = ForkServerCommand.Create();
        Assert.That(cmd.Parse(["--size", "1G", "--touch", "16", "--seconds", "10", "--seed", "3", "--mode", "cow-pte-lazy", "--no-host", "--json"]).Errors, Is.Empty);
        Assert.That(cmd.Parse(["--mode", "lazy"]).Errors, Is.Not.Empty);
        var defaults = cmd.Parse([]);
        Assert.That(defaults.GetValue<string>("--size"), Is.EqualTo("1G"));
        Assert.That(defaults.GetValue<int>("--touch"), Is.EqualTo(16));
        Assert.That(defaults.GetValue<double>("--seconds"), Is.EqualTo(10));
        Assert.That(defaults.GetValue<string>("--mode"), Is.EqualTo("all"));
    }

    [Test]
    public void The_page_picks_stay_inside_the_region_and_repeat_for_a_seed()
    {
        var a = new ForkServerCommand.PagePicker(42, 1000);
        var b = new ForkServerCommand.PagePicker(42, 1000);
        var c = new ForkServerCommand.PagePicker(43, 1000);
        ulong[] xs = [.. Enumerable.Range(0, 4096).Select(_ => a.Next())];
        ulong[] ys = [.. Enumerable.Range(0, 4096).Select(_ => b.Next())];
        ulong[] zs = [.. Enumerable.Range(0, 4096).Select(_ => c.Next())];
        Assert.That(xs, Is.All.LessThan(1000UL));
        Assert.That(ys, Is.EqualTo(xs), "the same seed picks the same pages");
        Assert.That(zs, Is.Not.EqualTo(xs), "another seed picks others");
        Assert.That(xs.Distinct().Count(), Is.GreaterThan(950), "4096 picks from 1000 pages reach nearly all of them");
    }

    /// <summary>
    /// The host child runs only the stub: its writes are seen by the parent through a shared mapping and not
    /// at all through a private one (the child wrote its own copy-on-write copy), and it exits with 0.
    /// </summary>
    [Test]
    public unsafe void The_host_child_writes_the_picked_pages_then_exits()
    {
        Assume.That(HostFork.Supported, "the host fork stub needs x86-64 Linux");
        const ulong len = 4 * 4096;
        byte* shared = HostMemory.MapShared(len);
        byte* priv = HostMemory.Map(len);
        byte** pages = stackalloc byte*[3];
        try
        {
            new Span<byte>(priv, (int)len).Clear();
            pages[0] = shared + 3 * 4096;
            pages[1] = shared + 1 * 4096;
            pages[2] = priv + 2 * 4096;
            using var forker = new HostFork.TouchingForker();
            forker.ForkAndWait(pages, 3);
            Assert.That(new[] { shared[0], shared[4096], shared[2 * 4096], shared[3 * 4096] }, Is.EqualTo(new byte[] { 0, 1, 0, 1 }), "the child wrote the two shared pages it was given, and only those");
            Assert.That(priv[2 * 4096], Is.Zero, "the child's write to private memory went to its own copy");
            forker.ForkAndWait(pages, 0);
        }
        finally
        {
            HostMemory.Unmap(shared, len);
            HostMemory.Unmap(priv, len);
        }
    }
}
