using Microsoft.Diagnostics.NETCore.Client;
using NativeMmu.Monitor;

namespace NativeMmu.Tests.Monitor;

/// <summary>
/// The monitor against a real multi-fault run in a child process, over the runtime's diagnostics IPC.
/// Every wait is bounded; the child is killed at the end of each test, failed or not.
/// </summary>
[TestFixture]
[NonParallelizable]
public class MonitorIntegrationTests
{
    /// <summary>
    /// Watches <paramref name="pid"/>'s counters until a page-fault rate above zero arrives, attaching
    /// again while the child's diagnostics endpoint is not up yet. Null if none arrived in time.
    /// </summary>
    private static async Task<double?> FirstPageFaultRateAsync(CliChild child, TimeSpan within, CancellationToken testToken)
    {
        using var deadline = CancellationTokenSource.CreateLinkedTokenSource(testToken);
        deadline.CancelAfter(within);
        double? rate = null;
        while (!deadline.IsCancellationRequested && !child.HasExited)
        {
            try
            {
                await NativeMmuMonitor.WatchCountersAsync(child.Pid, s =>
                {
                    if (s["page-faults"] is { Value: > 0 } c && rate is null)
                    {
                        rate = c.Value;
                        deadline.Cancel();
                    }
                }, deadline.Token);
            }
            catch (ServerNotAvailableException) { /* the runtime has not opened its endpoint yet */ }
            catch (OperationCanceledException) { }
            if (rate is null && !deadline.IsCancellationRequested)
                await Task.Delay(100, CancellationToken.None);
        }
        return rate;
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task Top_sees_a_page_fault_rate_above_zero_within_ten_seconds_of_starting_multi_fault(CancellationToken token)
    {
        using CliChild child = CliChild.StartMultiFault(seconds: 20);
        double? rate = await FirstPageFaultRateAsync(child, TimeSpan.FromSeconds(10), token);
        Assert.That(rate, Is.Not.Null.And.GreaterThan(0), $"no page-fault rate from pid {child.Pid} within 10 s; its output:{Environment.NewLine}{child.Tail}");
    }

    [Test]
    [CancelAfter(60_000)]
    public async Task Ps_lists_a_running_multi_fault_process(CancellationToken token)
    {
        using CliChild child = CliChild.StartMultiFault(seconds: 20);
        Assert.That(await FirstPageFaultRateAsync(child, TimeSpan.FromSeconds(10), token), Is.Not.Null, child.Tail);

        IReadOnlyList<TargetProcess> found = await NativeMmuMonitor.FindPublishersAsync(TimeSpan.FromSeconds(5), token);
        TargetProcess? mine = found.FirstOrDefault(t => t.Pid == child.Pid);
        Assert.That(mine, Is.Not.Null, $"pid {child.Pid} not among {string.Join(", ", found.Select(t => t.Pid))}");
        Assert.That(mine!.CommandLine, Does.Contain("NativeMmu.Cli.dll"));
        Assert.That(found.Any(t => t.Pid == Environment.ProcessId), Is.False, "ps lists itself");
    }

    [Test]
    [CancelAfter(180_000)]
    public async Task Record_writes_a_nettrace_with_fault_events(CancellationToken token)
    {
        string dir = Path.Combine(Path.GetTempPath(), $"nativemmu-monitor-test-{Guid.NewGuid():N}");
        Directory.CreateDirectory(dir);
        try
        {
            using CliChild child = CliChild.StartMultiFault(seconds: 20);
            // Faulting has begun once its counters say so; then 3 s of it are recorded.
            Assert.That(await FirstPageFaultRateAsync(child, TimeSpan.FromSeconds(10), token), Is.Not.Null, child.Tail);

            string path = Path.Combine(dir, "multi-fault.nettrace");
            long bytes = await NativeMmuMonitor.RecordAsync(child.Pid, path, TimeSpan.FromSeconds(3), NativeMmuMonitor.AllKeywords, token);
            Assert.That(bytes, Is.GreaterThan(0));

            TraceSummary summary = TraceSummary.Read(path);
            TestContext.Out.WriteLine($"{bytes:N0} bytes");
            summary.Print(TestContext.Out);
            using (Assert.EnterMultipleScope())
            {
                Assert.That(summary.Faults, Is.GreaterThan(0), "no Fault events in the trace");
                Assert.That(summary.FaultsByKind.GetValueOrDefault("AnonZeroFill"), Is.GreaterThan(0), "multi-fault's faults are anonymous zero-fills");
                Assert.That(summary.Zaps, Is.GreaterThan(0), "multi-fault zaps its window after every pass");
                if (summary.CpuSamples > 0)
                    Assert.That(summary.HotFrames.Any(f => f.Method.Contains('.')), Is.True, "samples taken but no method named: rundown missing?");
            }
        }
        finally
        {
            try { Directory.Delete(dir, recursive: true); } catch (IOException) { }
        }
    }
}
