using System.Diagnostics;
using OsProcess = System.Diagnostics.Process;
using System.Globalization;
using System.Security.Cryptography;
using System.Text;
using NativeMmu.Fuzz;

namespace NativeMmu.Cli.Host;

/// <summary>What one operation did, as a line of text both sides render alike: "o result state", "s" (skipped) or "c reason" (cut).</summary>
internal readonly record struct HostObservation(string Line)
{
    public bool Skipped => Line == "s";
    public bool Cut => Line.StartsWith("c ", StringComparison.Ordinal);
}

/// <summary>
/// The host side of <c>fuzz host</c>: Host/native/fuzzhost.c, compiled with the system's C compiler on
/// first use into a cache directory, run as one long-lived process. For each program it forks one real
/// process per emulated process from its own clean image (a real fork for each fork), issues the
/// system calls raw and the loads and stores as real instructions, catching SIGSEGV and SIGBUS; after
/// every operation it reads RssAnon and VmSize from /proc/self/statm and, after a mapping change, the
/// maps, VmFlags and AnonHugePages from /proc/self/smaps, its own mappings left out. It runs with
/// ADDR_NO_RANDOMIZE. An operation that would touch its own image, heap, stack or vDSO (or their
/// neighbouring page, where a fuzz mapping could merge with them) is cut: reported, not run.
/// </summary>
internal sealed class HostExecutor : IDisposable
{
    private readonly OsProcess _proc;
    private readonly StreamWriter _in;
    private readonly StreamReader _out;

    /// <summary>The executor's own mappings below TASK_SIZE (start, end), which the emulator mirrors with PROT_NONE placeholders.</summary>
    public IReadOnlyList<(ulong Start, ulong End)> OwnMappings { get; }

    private HostExecutor(OsProcess proc, IReadOnlyList<(ulong, ulong)> own)
    {
        _proc = proc;
        _in = proc.StandardInput;
        _out = proc.StandardOutput;
        OwnMappings = own;
    }

    /// <summary>Why the executor cannot run here, or null when it can.</summary>
    public static string? Unavailable()
    {
        if (!OperatingSystem.IsLinux() || System.Runtime.InteropServices.RuntimeInformation.OSArchitecture != System.Runtime.InteropServices.Architecture.X64)
            return "the host executor needs Linux on x86-64";
        if (FindCompiler() is null) return "cc not found: install it with 'apt-get install gcc'";
        return null;
    }

    private static string? FindCompiler()
    {
        foreach (string dir in (Environment.GetEnvironmentVariable("PATH") ?? "/usr/bin:/bin").Split(':', StringSplitOptions.RemoveEmptyEntries))
        {
            foreach (string name in new[] { "cc", "gcc" })
            {
                string p = Path.Combine(dir, name);
                if (File.Exists(p)) return p;
            }
        }
        return null;
    }

    private static string Source()
    {
        using Stream s = typeof(HostExecutor).Assembly.GetManifestResourceStream("fuzzhost.c") ?? throw new InvalidOperationException("fuzzhost.c is not embedded");
        using var r = new StreamReader(s);
        return r.ReadToEnd();
    }

    /// <summary>The executable, compiled if the cache does not hold this source's build yet.</summary>
    public static string Build()
    {
        if (Unavailable() is { } why) throw new InvalidOperationException(why);
        string src = Source();
        string hash = Convert.ToHexString(SHA256.HashData(Encoding.UTF8.GetBytes(src)))[..16].ToLowerInvariant();
        string cacheRoot = Environment.GetEnvironmentVariable("XDG_CACHE_HOME") is { Length: > 0 } x ? x
            : Path.Combine(Environment.GetFolderPath(Environment.SpecialFolder.UserProfile) is { Length: > 0 } h ? h : Path.GetTempPath(), ".cache");
        string dir = Path.Combine(cacheRoot, "nativemmu", "fuzzhost-" + hash);
        string exe = Path.Combine(dir, "fuzzhost");
        if (File.Exists(exe)) return exe;
        Directory.CreateDirectory(dir);
        string cfile = Path.Combine(dir, "fuzzhost.c");
        File.WriteAllText(cfile, src);
        string tmp = exe + "." + Environment.ProcessId + ".tmp";
        // Static and not position-independent where the C library allows it: the fewest own mappings.
        string cc = FindCompiler()!;
        string? error = null;
        foreach (string flags in new[] { "-O2 -static -no-pie", "-O2" })
        {
            var psi = new ProcessStartInfo(cc) { RedirectStandardError = true, RedirectStandardOutput = true };
            foreach (string f in flags.Split(' ')) psi.ArgumentList.Add(f);
            psi.ArgumentList.Add("-o");
            psi.ArgumentList.Add(tmp);
            psi.ArgumentList.Add(cfile);
            using OsProcess p = OsProcess.Start(psi)!;
            string err = p.StandardError.ReadToEnd();
            p.WaitForExit();
            if (p.ExitCode == 0)
            {
                File.Move(tmp, exe, overwrite: true);
                return exe;
            }
            error = err;
        }
        throw new InvalidOperationException($"{cc} could not build {cfile}: {error}");
    }

    public static HostExecutor Start()
    {
        string exe = Build();
        var psi = new ProcessStartInfo(exe) { RedirectStandardInput = true, RedirectStandardOutput = true, UseShellExecute = false };
        OsProcess proc = OsProcess.Start(psi)!;
        proc.StandardInput.AutoFlush = false;
        ReadExpect(proc.StandardOutput, "probe");
        proc.StandardInput.Write("go\n");
        proc.StandardInput.Flush();
        string r = proc.StandardOutput.ReadLine() ?? throw new InvalidOperationException("the host executor ended at start");
        var own = new List<(ulong, ulong)>();
        foreach (string range in r.Split(' ', StringSplitOptions.RemoveEmptyEntries).Skip(1))
        {
            string[] se = range.Split('-');
            own.Add((ulong.Parse(se[0], NumberStyles.HexNumber, CultureInfo.InvariantCulture), ulong.Parse(se[1], NumberStyles.HexNumber, CultureInfo.InvariantCulture)));
        }
        ReadExpect(proc.StandardOutput, "K");
        return new HostExecutor(proc, own);
    }

    private static void ReadExpect(StreamReader r, string want)
    {
        string? line = r.ReadLine();
        if (line != want) throw new InvalidOperationException($"the host executor said '{line}', expected '{want}'");
    }

    private static int Kind(SysOpKind k) => k switch
    {
        SysOpKind.Mmap => 0, SysOpKind.Munmap => 1, SysOpKind.Mprotect => 2, SysOpKind.Madvise => 3,
        SysOpKind.Load => 4, SysOpKind.Store => 5, SysOpKind.TryLoad => 6, SysOpKind.TryStore => 7,
        SysOpKind.Read => 8, SysOpKind.Write => 9, SysOpKind.Fork => 10, _ => 11,
    };

    /// <summary>Runs the program on the host; one observation per operation.</summary>
    public List<HostObservation> Run(SysProgram program)
    {
        var sb = new StringBuilder();
        sb.Append("P ").Append(program.Processes.ToString("x", CultureInfo.InvariantCulture)).Append('\n');
        foreach (SysOp op in program.Ops)
        {
            sb.Append(CultureInfo.InvariantCulture, $"{Kind(op.Kind):x} {op.Proc:x} {op.Label:x} {op.Addr.Label:x} {op.Addr.Offset:x} {op.Length:x} {(uint)op.Prot:x} {(uint)op.Flags:x} {(uint)op.Advice:x} {op.Width:x} {op.Value:x} {op.Child:x}\n");
        }
        sb.Append("E\n");
        _in.Write(sb.ToString());
        _in.Flush();
        var obs = new List<HostObservation>(program.Ops.Count);
        for (;;)
        {
            string line = _out.ReadLine() ?? throw new InvalidOperationException("the host executor ended in the middle of a program");
            if (line == "D") break;
            obs.Add(new HostObservation(line));
        }
        if (obs.Count != program.Ops.Count) throw new InvalidOperationException($"the host executor answered {obs.Count} lines for {program.Ops.Count} operations");
        return obs;
    }

    public void Dispose()
    {
        try
        {
            _in.Close();
            if (!_proc.WaitForExit(2000)) _proc.Kill();
        }
        catch (Exception e) when (e is IOException or InvalidOperationException) { }
        _proc.Dispose();
    }
}
