using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using SysProcess = System.Diagnostics.Process;

namespace NativeMmu.Tests.Monitor;

/// <summary>
/// dotnet-counters, pinned as a local tool in .config/dotnet-tools.json, reads the NativeMmu counters
/// of a running multi-fault under the same names and units as `nativemmu-monitor top`.
/// </summary>
[TestFixture, NonParallelizable]
public sealed class DotnetCountersTests
{
    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, ".config", "dotnet-tools.json"))) return d.FullName;
        throw new InvalidOperationException("no .config/dotnet-tools.json above " + TestContext.CurrentContext.TestDirectory);
    }

    private static (int ExitCode, string Output) Dotnet(string workingDirectory, TimeSpan timeout, params string[] args)
    {
        var psi = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, UseShellExecute = false, WorkingDirectory = workingDirectory };
        foreach (string a in args) psi.ArgumentList.Add(a);
        using var p = SysProcess.Start(psi)!;
        Task<string> stdout = p.StandardOutput.ReadToEndAsync(), stderr = p.StandardError.ReadToEndAsync();
        if (!p.WaitForExit(timeout))
        {
            p.Kill(entireProcessTree: true);
            Assert.Fail($"dotnet {string.Join(' ', args)} did not finish within {timeout}");
        }
        return (p.ExitCode, stdout.Result + stderr.Result);
    }

    [Test, CancelAfter(180_000)]
    public void Dotnet_counters_collect_reads_a_positive_page_fault_rate_from_multi_fault()
    {
        string root = RepositoryRoot();
        var restore = Dotnet(root, TimeSpan.FromSeconds(120), "tool", "restore");
        Assert.That(restore.ExitCode, Is.Zero, "dotnet tool restore installs the pinned dotnet-counters: " + restore.Output);

        string output = Path.Combine(Path.GetTempPath(), $"nativemmu-counters-{Environment.ProcessId}.json");
        using CliChild child = CliChild.StartMultiFault(seconds: 30);
        try
        {
            var collect = Dotnet(root, TimeSpan.FromSeconds(90), "dotnet-counters", "collect", "-p", child.Pid.ToString(CultureInfo.InvariantCulture),
                "--counters", "NativeMmu", "--format", "json", "-o", output, "--duration", "00:00:00:06");
            Assert.That(collect.ExitCode, Is.Zero, "dotnet-counters collect: " + collect.Output + Environment.NewLine + child.Tail);

            using JsonDocument doc = JsonDocument.Parse(File.ReadAllText(output));
            var events = doc.RootElement.GetProperty("Events").EnumerateArray()
                .Where(e => e.GetProperty("provider").GetString() == "NativeMmu")
                .Select(e => (Name: e.GetProperty("name").GetString()!, Value: e.GetProperty("value").GetDouble()))
                .ToList();
            Assert.That(events, Is.Not.Empty, "dotnet-counters saw no NativeMmu counter at all");

            // The names dotnet-counters prints are the counters' display names with their units, as top shows them.
            var top = new NativeMmu.Monitor.CounterValue("page-faults", "Page faults", 0, "", NativeMmu.Monitor.CounterKind.Sum, 1);
            string topLabel = $"{top.DisplayName} ({top.ShownUnits})";
            var pageFaults = events.Where(e => e.Name == topLabel).ToList();
            Assert.That(pageFaults, Is.Not.Empty, "the page-faults rate under top's name and unit; saw: " + string.Join(", ", events.Select(e => e.Name).Distinct()));
            Assert.That(pageFaults.Max(e => e.Value), Is.GreaterThan(0), "multi-fault faults all the time, so some interval has a positive rate");
            Assert.That(events.Select(e => e.Name), Has.Some.EqualTo("Page tables (all levels) (kB)"), "a gauge keeps its DisplayUnits");
        }
        finally
        {
            File.Delete(output);
        }
    }
}
