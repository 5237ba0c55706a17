using System.Text.Json;
using NativeMmu.Cli.Commands;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu scaling --quick --json`: the documented shape, the quick plan's x values, and positive figures.</summary>
[NonParallelizable] // boot-rss reads this process's VmRSS
public class ScalingCommandTests
{
    private JsonElement _root;

    [OneTimeSetUp]
    public void RunQuick()
    {
        ScalingCommand.Report report = ScalingCommand.Measure(ScalingCommand.AllSeries, ScalingCommand.Plan.Quick(0.1), noHost: false);
        _root = JsonDocument.Parse(ScalingCommand.ToJson(report)).RootElement.Clone();
    }

    private JsonElement Series(string name) => _root.GetProperty("series").EnumerateArray().Single(s => s.GetProperty("name").GetString() == name);

    [Test]
    public void The_report_has_the_scenario_and_one_series_per_measure_in_order()
    {
        Assert.That(_root.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "scenario", "series" }));
        Assert.That(_root.GetProperty("scenario").GetString(), Is.EqualTo("scaling"));
        Assert.That(_root.GetProperty("series").EnumerateArray().Select(s => s.GetProperty("name").GetString()),
            Is.EqualTo(new[] { "fault", "mmap", "fork", "fork-vmas", "boot", "boot-rss" }));
        foreach (JsonElement s in _root.GetProperty("series").EnumerateArray())
        {
            Assert.That(s.EnumerateObject().Select(p => p.Name), Is.EqualTo(new[] { "name", "unit", "points" }));
            // The fault points also carry the zeroing ceiling at their working set (the host ran here).
            string[] fields = s.GetProperty("name").GetString() == "fault" ? ["x", "emulated", "host", "zeroing"] : ["x", "emulated", "host"];
            foreach (JsonElement p in s.GetProperty("points").EnumerateArray())
                Assert.That(p.EnumerateObject().Select(q => q.Name), Is.EqualTo(fields));
        }
    }

    [TestCase("fault", "ns/fault", new long[] { 2L << 20, 16L << 20, 64L << 20 }, true)]
    [TestCase("mmap", "ns/(mmap+munmap)", new long[] { 10, 100, 1_000 }, true)]
    [TestCase("fork", "ms/fork", new long[] { 4L << 20, 16L << 20 }, true)]
    [TestCase("fork-vmas", "ms/fork", new long[] { 10, 100 }, true)]
    [TestCase("boot", "ms", new long[] { 128L << 20, 512L << 20 }, false)]
    [TestCase("boot-rss", "bytes", new long[] { 128L << 20, 512L << 20 }, false)]
    public void Each_series_has_its_unit_its_x_values_and_a_host_figure_where_the_host_has_a_twin(string name, string unit, long[] xs, bool hostTwin)
    {
        JsonElement s = Series(name);
        Assert.That(s.GetProperty("unit").GetString(), Is.EqualTo(unit));
        JsonElement[] points = [.. s.GetProperty("points").EnumerateArray()];
        Assert.That(points.Select(p => p.GetProperty("x").GetInt64()), Is.EqualTo(xs));
        foreach (JsonElement p in points)
        {
            Assert.That(p.GetProperty("emulated").GetDouble(), Is.GreaterThan(0), $"{name} at {p.GetProperty("x")}: emulated");
            JsonElement host = p.GetProperty("host");
            if (hostTwin) Assert.That(host.GetDouble(), Is.GreaterThan(0), $"{name} at {p.GetProperty("x")}: host");
            else Assert.That(host.ValueKind, Is.EqualTo(JsonValueKind.Null), $"{name} has no host twin");
        }
    }

    [Test]
    public void Each_fault_point_has_a_positive_zeroing_cost_for_its_working_set()
    {
        foreach (JsonElement p in Series("fault").GetProperty("points").EnumerateArray())
            Assert.That(p.GetProperty("zeroing").GetDouble(), Is.GreaterThan(0), $"zeroing at {p.GetProperty("x")}");
    }

    [Test]
    public void A_point_without_a_zeroing_figure_leaves_the_field_out()
        => Assert.That(ScalingCommand.ToJson(new("scaling", [new("fault", "ns/fault", [new(2097152, 130, 9000, 54), new(10, 1, null)])])),
            Is.EqualTo("{\"scenario\":\"scaling\",\"series\":[{\"name\":\"fault\",\"unit\":\"ns/fault\",\"points\":[{\"x\":2097152,\"emulated\":130,\"host\":9000,\"zeroing\":54},{\"x\":10,\"emulated\":1,\"host\":null}]}]}"));

    [Test]
    public void The_json_keeps_plus_signs_in_units_unescaped()
        => Assert.That(ScalingCommand.ToJson(new("scaling", [new("mmap", "ns/(mmap+munmap)", [new(10, 1, 2)])])),
            Is.EqualTo("{\"scenario\":\"scaling\",\"series\":[{\"name\":\"mmap\",\"unit\":\"ns/(mmap+munmap)\",\"points\":[{\"x\":10,\"emulated\":1,\"host\":2}]}]}"));

    [Test]
    public void Unknown_series_are_refused_and_known_ones_run_in_the_documented_order()
    {
        Assert.That(ScalingCommand.ParseSeries("boot,fault"), Is.EqualTo(new[] { "fault", "boot" }));
        Assert.Throws<ArgumentException>(() => ScalingCommand.ParseSeries("fault,nope"));
    }
}
