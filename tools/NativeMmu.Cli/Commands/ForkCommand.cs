using NativeMmu.Cpus;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Arch.X86;
using NativeMmu.Cli.Host;
using NativeMmu.Cli.Plots;
using NativeMmu.Mm;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu fork`: the cost of fork for a populated address space. --size of private anonymous memory
/// is populated with 4 KiB pages, then the process forks --repeat times, each child exiting at once;
/// the median fork time and the VmPTE of parent and child are reported, emulator beside the host kernel.
/// </summary>
public static class ForkCommand
{
    /// <summary>The host kernel's figures, or why there are none.</summary>
    public sealed record HostRun(
        [property: JsonPropertyName("fork_ms_median"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? ForkMsMedian,
        [property: JsonPropertyName("vmpte_kb"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? VmpteKb,
        [property: JsonPropertyName("vmpte_kb_child"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? VmpteKbChild,
        [property: JsonPropertyName("error"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Error);

    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("size_bytes")] ulong SizeBytes,
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("fork_ms_median")] double ForkMsMedian,
        [property: JsonPropertyName("vmpte_kb_parent")] long VmpteKbParent,
        [property: JsonPropertyName("vmpte_kb_child")] long VmpteKbChild,
        [property: JsonPropertyName("host"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] HostRun? Host);

    /// <summary>The emulated run's figures: every fork's time, and VmPTE of the parent and of the (first) child.</summary>
    public sealed record EmulatedRun(double[] ForkMs, long VmpteKbParent, long VmpteKbChild);

    public static Command Create()
    {
        var size = new Option<string>("--size") { Description = "Anonymous memory populated with 4 KiB pages before forking (e.g. 1G)", DefaultValueFactory = _ => "1G" };
        var repeat = new Option<int>("--repeat") { Description = "Forks (each child exits at once); the median is reported", DefaultValueFactory = _ => 10 };
        var noHost = new Option<bool>("--no-host") { Description = "Skip the host-kernel run" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var plot = new Option<string?>("--plot") { Description = "Also draw the median fork time against the size, emulated and host kernel, to FILE.png or FILE.svg" };
        var cmd = new Command("fork", "Fork cost: populate --size of anonymous 4 KiB pages, fork --repeat times; median fork time and VmPTE of parent and child")
        {
            size, repeat, noHost, json, plot,
        };
        cmd.SetAction(r => Execute(Size.Parse(r.GetValue(size)!), r.GetValue(repeat), r.GetValue(noHost), r.GetValue(json), r.GetValue(plot)));
        return cmd;
    }

    public static int Execute(ulong sizeBytes, int repeat, bool noHost, bool json, string? plotPath = null)
    {
        if (plotPath is not null) Figure.ValidatePath(plotPath);
        Report report = Measure(sizeBytes, repeat, noHost, out double[] emulatedMs, out double[]? hostMs);
        if (json) Console.Out.WriteLine(ToJson(report));
        else Print(report, emulatedMs, hostMs);
        if (plotPath is not null) CommandPlots.Fork(PlotRows(report), plotPath);
        return 0;
    }

    /// <summary>The (series, size, median ms) rows the plot draws: the emulated mode, and the host kernel where it was measured.</summary>
    public static IReadOnlyList<(string Series, ulong SizeBytes, double ForkMs)> PlotRows(Report r)
    {
        var rows = new List<(string, ulong, double)> { ($"emulated, {r.Mode} (copy_page_range copies every PTE table)", r.SizeBytes, r.ForkMsMedian) };
        if (r.Host is { ForkMsMedian: { } hostMs }) rows.Add(("host kernel", r.SizeBytes, hostMs));
        return rows;
    }

    /// <summary>The emulated run, then (its arena freed, so the host does not copy it too) the host run.</summary>
    public static Report Measure(ulong sizeBytes, int repeat, bool noHost) => Measure(sizeBytes, repeat, noHost, out _, out _);

    private static Report Measure(ulong sizeBytes, int repeat, bool noHost, out double[] emulatedMs, out double[]? hostMs)
    {
        if (sizeBytes == 0 || sizeBytes % Geometry.PageSize != 0) throw new ArgumentException("--size must be a positive multiple of 4 KiB");
        if (repeat < 1) throw new ArgumentException("--repeat must be at least 1");
        EmulatedRun emu = Emulated(sizeBytes, repeat);
        emulatedMs = emu.ForkMs;
        hostMs = null;
        HostRun? host = noHost ? null : Host(sizeBytes, repeat, out hostMs);
        return new Report("fork", sizeBytes, "copy", Math.Round(Median(emu.ForkMs), 3), emu.VmpteKbParent, emu.VmpteKbChild, host);
    }

    public static string ToJson(Report report) => JsonSerializer.Serialize(report);

    /// <summary>
    /// Arena for the emulated run: the populated pages, their page tables twice (parent and child,
    /// 1/512 each), the vmemmap (1/64 of the arena) and room for the boot-time reservations.
    /// </summary>
    public static ulong MemoryBytesFor(ulong sizeBytes)
    {
        ulong bytes = sizeBytes + sizeBytes / 8 + (64UL << 20);
        return (bytes + Geometry.PmdSize - 1) & Geometry.PmdMask;
    }

    /// <summary>fork on the emulator: one process, --size mapped and written page by page, then the forks.</summary>
    public static EmulatedRun Emulated(ulong sizeBytes, int repeat)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = MemoryBytesFor(sizeBytes), Cpus = Math.Max(2, Environment.ProcessorCount) });
        Process p = kernel.CreateProcess("fork");
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Size.Check(p.Mmap(0, sizeBytes, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong a), "mmap");
        Size.Check(p.Madvise(a, sizeBytes, Advice.NoHugePage), "madvise"); // 4 KiB pages, never a THP
        for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) cpu.Store<byte>(a + off, 1);
        long vmpteParent = p.Mm.PgtablesBytes >> 10;
        double[] ms = TimeForks(p, repeat, out long vmpteChild);
        p.Exit();
        return new EmulatedRun(ms, vmpteParent, vmpteChild);
    }

    /// <summary>Forks <paramref name="p"/> <paramref name="repeat"/> times, each child exiting at once; the wall time of each fork, and the first child's VmPTE.</summary>
    public static double[] TimeForks(Process p, int repeat, out long vmpteChildKb)
    {
        vmpteChildKb = 0;
        var ms = new double[repeat];
        for (int i = 0; i < repeat; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            Process child = p.Fork("fork-child");
            long t1 = Stopwatch.GetTimestamp();
            ms[i] = Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds;
            if (i == 0) vmpteChildKb = child.Mm.PgtablesBytes >> 10;
            child.Exit();
        }
        return ms;
    }

    /// <summary>
    /// fork on the host kernel: --size of real anonymous memory (MADV_NOHUGEPAGE) written page by page in
    /// this process, then real forks whose children _exit at once. VmPTE is this process's own, so it also
    /// counts the runtime's mappings.
    /// </summary>
    public static unsafe HostRun Host(ulong sizeBytes, int repeat, out double[]? forkMs)
    {
        forkMs = null;
        if (!HostFork.Supported) return new HostRun(null, null, null, "the host fork stub needs x86-64 Linux");
        byte* a = null;
        try
        {
            a = HostMemory.Map(sizeBytes);
            HostMemory.Advise(a, sizeBytes, HostMemory.MADV_NOHUGEPAGE);
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) a[off] = 1;
            long? vmpte = ProcStatus.ReadKb("VmPTE");
            long? vmpteChild = HostFork.ChildVmpteKb();
            double[] ms = HostFork.TimeForks(repeat);
            forkMs = ms;
            return new HostRun(Math.Round(Median(ms), 3), vmpte, vmpteChild, null);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or UnauthorizedAccessException or FormatException)
        {
            return new HostRun(null, null, null, e.Message);
        }
        finally
        {
            if (a != null) HostMemory.Unmap(a, sizeBytes);
        }
    }

    internal static double Median(double[] xs)
    {
        double[] s = [.. xs];
        Array.Sort(s);
        return s.Length % 2 == 1 ? s[s.Length / 2] : (s[s.Length / 2 - 1] + s[s.Length / 2]) / 2;
    }

    private static void Print(Report r, double[] emulatedMs, double[]? hostMs)
    {
        var c = CultureInfo.InvariantCulture;
        int repeat = emulatedMs.Length;
        Console.WriteLine();
        Console.WriteLine($" Performance counter stats for 'fork' ({Size.Format(r.SizeBytes)} of 4 KiB pages populated, {repeat.ToString(c)} fork{(repeat == 1 ? "" : "s")} each, child exits at once):");
        Console.WriteLine();
        Console.WriteLine($"  {r.ForkMsMedian,10:F3} ms  fork (median)  emulated      ( {emulatedMs.Min(),8:F3} .. {emulatedMs.Max(),8:F3} ms )   VmPTE parent {r.VmpteKbParent,7:N0} kB  child {r.VmpteKbChild,7:N0} kB");
        if (r.Host is { Error: null } h && hostMs is not null)
            Console.WriteLine($"  {h.ForkMsMedian,10:F3} ms  fork (median)  host kernel   ( {hostMs.Min(),8:F3} .. {hostMs.Max(),8:F3} ms )   VmPTE parent {h.VmpteKb,7:N0} kB  child {h.VmpteKbChild,7:N0} kB   emulated/host {r.ForkMsMedian / h.ForkMsMedian!.Value,5:F2}x");
        else if (r.Host is { } failed)
            Console.WriteLine($"  host kernel: not measured: {failed.Error}");
        Console.WriteLine();
        Console.WriteLine("  The host's VmPTE counts this process's other mappings (the runtime's) as well.");
        Console.WriteLine();
    }

}
