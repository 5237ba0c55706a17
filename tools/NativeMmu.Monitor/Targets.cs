using System.Diagnostics;
using System.Text;
using Microsoft.Diagnostics.NETCore.Client;

namespace NativeMmu.Monitor;

/// <summary>A .NET process with a diagnostics endpoint.</summary>
public sealed record TargetProcess(int Pid, string Name, string CommandLine)
{
    /// <summary>Name and command line of <paramref name="pid"/>, from /proc where there is one.</summary>
    public static TargetProcess Describe(int pid)
    {
        string name = "?";
        string commandLine = "";
        try
        {
            using var p = Process.GetProcessById(pid);
            name = p.ProcessName;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { }
        try
        {
            string cmdline = $"/proc/{pid}/cmdline";
            if (File.Exists(cmdline))
                commandLine = string.Join(' ', Encoding.UTF8.GetString(File.ReadAllBytes(cmdline)).Split('\0', StringSplitOptions.RemoveEmptyEntries));
        }
        catch (IOException) { }
        catch (UnauthorizedAccessException) { }
        return new TargetProcess(pid, name, commandLine);
    }

    /// <summary>
    /// Does this process answer to <paramref name="name"/>: its process name, or the file name (with
    /// or without extension) of its executable or of the first argument `dotnet` was given?
    /// </summary>
    public bool Matches(string name)
    {
        if (string.Equals(Name, name, StringComparison.OrdinalIgnoreCase)) return true;
        string[] args = CommandLine.Split(' ', StringSplitOptions.RemoveEmptyEntries);
        foreach (string arg in args.Take(2))
        {
            string file = Path.GetFileName(arg);
            if (string.Equals(file, name, StringComparison.OrdinalIgnoreCase)
                || string.Equals(Path.GetFileNameWithoutExtension(file), name, StringComparison.OrdinalIgnoreCase))
                return true;
        }
        return false;
    }
}

public static class Targets
{
    /// <summary>Every process with a diagnostics endpoint but this one.</summary>
    public static IReadOnlyList<int> Published()
    {
        IEnumerable<int> pids;
        try
        {
            pids = DiagnosticsClient.GetPublishedProcesses();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The client also scans /proc/PID/environ for endpoints in other temp directories and
            // gives up on the first process it cannot read (a kernel thread, one that just exited).
            pids = LocalSockets();
        }
        return [.. pids.Where(p => p != Environment.ProcessId).Distinct().Order()];
    }

    /// <summary>
    /// The runtime's own naming of its endpoint, dotnet-diagnostic-PID-DISAMBIGUATION-socket in the temp
    /// directory (TMPDIR or /tmp), for processes still alive.
    /// </summary>
    public static IEnumerable<int> LocalSockets()
    {
        string dir = Path.GetTempPath();
        if (!Directory.Exists(dir)) yield break;
        foreach (string path in Directory.EnumerateFiles(dir, "dotnet-diagnostic-*-socket"))
        {
            string[] parts = Path.GetFileName(path).Split('-');
            if (parts.Length < 4 || !int.TryParse(parts[2], out int pid)) continue;
            if (OperatingSystem.IsLinux() ? Directory.Exists($"/proc/{pid}") : IsAlive(pid)) yield return pid;
        }
    }

    private static bool IsAlive(int pid)
    {
        try
        {
            using var p = Process.GetProcessById(pid);
            return !p.HasExited;
        }
        catch (Exception e) when (e is ArgumentException or InvalidOperationException) { return false; }
    }

    /// <summary>
    /// The pid to attach to: <paramref name="pid"/> if given, else the one published process that
    /// <see cref="TargetProcess.Matches"/> <paramref name="name"/>.
    /// </summary>
    public static int Resolve(int? pid, string? name)
    {
        if (pid is { } p)
        {
            if (name is not null) throw new ArgumentException("give --pid or --name, not both");
            return p;
        }
        if (string.IsNullOrEmpty(name)) throw new ArgumentException("give --pid or --name");
        TargetProcess[] hits = [.. Published().Select(TargetProcess.Describe).Where(t => t.Matches(name))];
        return hits.Length switch
        {
            1 => hits[0].Pid,
            0 => throw new ArgumentException($"no .NET process named '{name}'"),
            _ => throw new ArgumentException($"'{name}' names {hits.Length} processes ({string.Join(", ", hits.Select(h => h.Pid))}); use --pid"),
        };
    }
}
