using System.Collections.Concurrent;
using SysProcess = System.Diagnostics.Process;
using System.Diagnostics;

namespace NativeMmu.Tests.Monitor;

/// <summary>
/// `dotnet NativeMmu.Cli.dll multi-fault ...` from the test output directory, as a child process that
/// is killed (with anything it started) when disposed, whatever state the test is in.
/// </summary>
internal sealed class CliChild : IDisposable
{
    private readonly SysProcess _process;
    private readonly ConcurrentQueue<string> _output = new();

    private CliChild(SysProcess process) => _process = process;

    public int Pid => _process.Id;
    public bool HasExited => _process.HasExited;

    /// <summary>The last lines the child wrote, for failure messages.</summary>
    public string Tail => string.Join(Environment.NewLine, _output.TakeLast(20));

    public static CliChild StartMultiFault(double seconds = 20)
    {
        string dll = Path.Combine(TestContext.CurrentContext.TestDirectory, "NativeMmu.Cli.dll");
        Assert.That(File.Exists(dll), Is.True, $"{dll} is missing: the test project references tools/NativeMmu.Cli, so a build copies it there");
        var psi = new ProcessStartInfo(DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
            WorkingDirectory = TestContext.CurrentContext.TestDirectory,
        };
        foreach (string arg in new[] { dll, "multi-fault", "--seconds", seconds.ToString(System.Globalization.CultureInfo.InvariantCulture), "--no-host", "--threads", "1" })
            psi.ArgumentList.Add(arg);
        var process = SysProcess.Start(psi) ?? throw new InvalidOperationException("could not start the CLI");
        var child = new CliChild(process);
        process.OutputDataReceived += (_, e) => child.Keep(e.Data);
        process.ErrorDataReceived += (_, e) => child.Keep(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        return child;
    }

    private void Keep(string? line)
    {
        if (line is null) return;
        _output.Enqueue(line);
        while (_output.Count > 200) _output.TryDequeue(out _);
    }

    /// <summary>The `dotnet` running these tests (the SDK tells its children where it is), else the one on PATH.</summary>
    private static string DotnetHost()
    {
        string? host = Environment.GetEnvironmentVariable("DOTNET_HOST_PATH");
        if (!string.IsNullOrEmpty(host) && File.Exists(host)) return host;
        string? self = Environment.ProcessPath;
        if (self is not null && Path.GetFileNameWithoutExtension(self) == "dotnet") return self;
        return "dotnet";
    }

    public void Dispose()
    {
        try
        {
            if (!_process.HasExited)
            {
                _process.Kill(entireProcessTree: true);
                _process.WaitForExit(10_000);
            }
        }
        catch (InvalidOperationException) { /* already gone */ }
        _process.Dispose();
    }
}
