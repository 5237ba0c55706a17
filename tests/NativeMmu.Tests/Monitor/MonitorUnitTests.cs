using System.Diagnostics.Tracing;
using System.Text.Json;
using NativeMmu.Diagnostics;
using NativeMmu.Monitor;

namespace NativeMmu.Tests.Monitor;

[TestFixture]
public class MonitorUnitTests
{
    [Test]
    public void The_NativeMmu_event_source_has_a_valid_manifest()
    {
        // Strict throws on any error, e.g. a helper method taken for an event and clashing with an event's ID.
        string? manifest = EventSource.GenerateManifest(typeof(NativeMmuEventSource), typeof(NativeMmuEventSource).Assembly.Location, EventManifestOptions.Strict);
        Assert.That(manifest, Does.Contain("name=\"Fault\"").And.Contain("name=\"Zap\""));
    }

    private static CounterValue Rate(string name, double v) => new(name, name, v, "", CounterKind.Sum, 1);

    [Test]
    public void The_batcher_closes_an_interval_when_a_name_comes_round_again_and_then_by_count()
    {
        var got = new List<CounterSnapshot>();
        var b = new CounterBatcher(42, got.Add);
        var t0 = new DateTimeOffset(2026, 1, 1, 0, 0, 0, TimeSpan.Zero);
        b.Add(Rate("a", 1), t0);
        b.Add(Rate("b", 2), t0.AddMilliseconds(1));
        Assert.That(got, Is.Empty, "the first interval's size is not known yet");
        b.Add(Rate("a", 3), t0.AddSeconds(1));
        Assert.That(got, Has.Count.EqualTo(1));
        b.Add(Rate("b", 4), t0.AddSeconds(1.001));
        Assert.That(got, Has.Count.EqualTo(2), "two counters make an interval now");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(got[0].Counters.Select(c => c.Value), Is.EqualTo(new[] { 1.0, 2.0 }));
            Assert.That(got[1]["b"]!.Value, Is.EqualTo(4));
            Assert.That(got[1].Pid, Is.EqualTo(42));
            Assert.That(got[1].Time, Is.EqualTo(t0.AddSeconds(1)));
        }
    }

    [Test]
    public void The_batcher_closes_an_interval_on_a_gap_of_more_than_half_an_interval()
    {
        var got = new List<CounterSnapshot>();
        var b = new CounterBatcher(1, got.Add);
        var t0 = DateTimeOffset.UnixEpoch;
        b.Add(Rate("a", 1), t0);
        b.Add(Rate("b", 1), t0.AddSeconds(0.9));
        b.Flush();
        Assert.That(got.Select(s => s.Counters.Count), Is.EqualTo(new[] { 1, 1 }));
    }

    [Test]
    public void A_json_line_carries_time_pid_and_every_counter_by_name()
    {
        var s = new CounterSnapshot(DateTimeOffset.UnixEpoch, 7, [Rate("page-faults", 123.4567), new CounterValue("rss-kb", "RSS", 8, "kB", CounterKind.Mean, 1)]);
        string line = TopView.ToJsonLine(s);
        Assert.That(line, Does.Not.Contain("\n"));
        using JsonDocument doc = JsonDocument.Parse(line);
        using (Assert.EnterMultipleScope())
        {
            Assert.That(doc.RootElement.GetProperty("time").GetString(), Is.EqualTo("1970-01-01T00:00:00.000Z"));
            Assert.That(doc.RootElement.GetProperty("pid").GetInt32(), Is.EqualTo(7));
            Assert.That(doc.RootElement.GetProperty("counters").GetProperty("page-faults").GetDouble(), Is.EqualTo(123.457));
            Assert.That(doc.RootElement.GetProperty("counters").GetProperty("rss-kb").GetDouble(), Is.EqualTo(8));
        }
    }

    [Test]
    public void A_process_answers_to_its_name_and_to_the_dll_dotnet_runs()
    {
        var t = new TargetProcess(1, "dotnet", "dotnet /x/y/NativeMmu.Cli.dll multi-fault --seconds 20");
        using (Assert.EnterMultipleScope())
        {
            Assert.That(t.Matches("dotnet"), Is.True);
            Assert.That(t.Matches("NativeMmu.Cli"), Is.True);
            Assert.That(t.Matches("NativeMmu.Cli.dll"), Is.True);
            Assert.That(t.Matches("multi-fault"), Is.False);
        }
    }
}
