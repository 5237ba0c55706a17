using NativeMmu.Cpus;
using System.CommandLine;
using System.Diagnostics;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Cli.Host;
using NativeMmu.Cli.Plots;
using NativeMmu.Mm;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu pt-reclaim`: the experiment of "Free user PTE page table pages" (2021) and of the 6.14
/// series: mmap 50 GiB, then 25,600 × (write one byte to each page of the next 2 MiB; MADV_DONTNEED
/// those 2 MiB). VmPTE shows whether the emptied PTE tables stay.
/// </summary>
public static class PtReclaimCommand
{
    public sealed record Run(
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("vmpte_kb_before")] long VmpteKbBefore,
        [property: JsonPropertyName("vmpte_kb_after")] long VmpteKbAfter,
        [property: JsonPropertyName("rss_kb_before")] long RssKbBefore,
        [property: JsonPropertyName("rss_kb_after")] long RssKbAfter,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("faults_per_second")] double FaultsPerSecond);

    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("virt_bytes")] ulong VirtBytes,
        [property: JsonPropertyName("iterations")] int Iterations,
        [property: JsonPropertyName("runs")] IReadOnlyList<Run> Runs);

    private const ulong Window = 2UL << 20;

    public static Command Create()
    {
        var virt = new Option<string>("--virt") { Description = "Size of the mapping (e.g. 50G)", DefaultValueFactory = _ => "50G" };
        var iterations = new Option<int>("--iterations") { Description = "2 MiB windows touched and discarded", DefaultValueFactory = _ => 25600 };
        var mode = new Option<string>("--mode") { Description = "off | refcount | sync | all", DefaultValueFactory = _ => "all" };
        mode.AcceptOnlyFromAmong("off", "refcount", "sync", "all");
        var noHost = new Option<bool>("--no-host") { Description = "Skip the host-kernel run" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var plot = new Option<string?>("--plot") { Description = "Also sample VmPTE during the loop and draw it against the iterations, per mode and the host, to FILE.png or FILE.svg" };
        var cmd = new Command("pt-reclaim", "The experiment of the 2021 \"Free user PTE page table pages\" series, rerun for 6.14's CONFIG_PT_RECLAIM: 50 GiB mapped, 25,600 × (touch 2 MiB, MADV_DONTNEED 2 MiB); VmPTE before and after")
        {
            virt, iterations, mode, noHost, json, plot,
        };
        cmd.SetAction(r => Execute(Size.Parse(r.GetValue(virt)!), r.GetValue(iterations), r.GetValue(mode)!, r.GetValue(noHost), r.GetValue(json), r.GetValue(plot)));
        return cmd;
    }

    public static int Execute(ulong virtBytes, int iterations, string mode, bool noHost, bool json, string? plotPath = null)
    {
        if ((ulong)iterations * Window > virtBytes) throw new ArgumentException("--iterations × 2 MiB must fit in --virt");
        if (plotPath is not null) Figure.ValidatePath(plotPath);
        var runs = new List<Run>();
        var series = new Dictionary<string, IReadOnlyList<(int, long)>>();
        VmpteSeries? Sampler(string name) => plotPath is null ? null : (VmpteSeries)(series[name] = new VmpteSeries(iterations));
        PtReclaimMode[] modes = mode == "all" ? [PtReclaimMode.Off, PtReclaimMode.Refcount, PtReclaimMode.Sync] : [MultiFaultCommand.ParseMode(mode)];
        foreach (PtReclaimMode m in modes)
        {
            Run run = Emulated(m, virtBytes, iterations, Sampler(MultiFaultCommand.ModeName(m)));
            runs.Add(run);
            if (!json) Print(run);
        }
        if (!noHost)
        {
            Run host = Host(virtBytes, iterations, Sampler("host"));
            runs.Add(host);
            if (!json) Print(host);
        }
        var report = new Report("pt-reclaim", virtBytes, iterations, runs);
        if (json) Console.Out.WriteLine(JsonSerializer.Serialize(report));
        if (plotPath is not null) CommandPlots.PtReclaim(report, series, plotPath);
        return 0;
    }

    private static void Print(Run r)
        => Console.WriteLine($"  {r.Mode,-9} VmPTE {r.VmpteKbBefore,9:N0} kB -> {r.VmpteKbAfter,9:N0} kB   RSS -> {r.RssKbAfter,9:N0} kB   {r.Seconds,7:F2} s   {r.FaultsPerSecond,14:N0} faults/s");

    /// <summary>The loop on the emulator, on a kernel booted with the given reclaim mode.</summary>
    public static Run Emulated(PtReclaimMode mode, ulong virtBytes, int iterations, VmpteSeries? sampled = null)
    {
        using var kernel = new Kernel(new KernelConfig { PtReclaim = mode });
        Process p = kernel.CreateProcess("pt-reclaim");
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Check(p.Mmap(0, virtBytes, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.NoReserve, out ulong a), "mmap");
        Check(p.Madvise(a, virtBytes, Advice.NoHugePage), "madvise");
        long vmpteBefore = p.Mm.PgtablesBytes >> 10;
        sampled?.Add((0, vmpteBefore));
        long rssBefore = p.Mm.GetMmRss() * 4;
        long faults0 = kernel.VmstatValue("pgfault");
        var sw = Stopwatch.StartNew();
        for (int i = 0; i < iterations; i++)
        {
            ulong w = a + (ulong)i * Window;
            for (ulong off = 0; off < Window; off += 4096) cpu.Store<byte>(w + off, 1);
            Check(p.Madvise(w, Window, Advice.DontNeed), "madvise");
            sampled?.Offer(i + 1, () => p.Mm.PgtablesBytes >> 10);
        }
        double seconds = sw.Elapsed.TotalSeconds;
        long faults = kernel.VmstatValue("pgfault") - faults0;
        var run = new Run(MultiFaultCommand.ModeName(mode), vmpteBefore, p.Mm.PgtablesBytes >> 10, rssBefore, p.Mm.GetMmRss() * 4,
            Math.Round(seconds, 3), Math.Round(faults / seconds));
        Check(p.Munmap(a, virtBytes), "munmap");
        p.Exit();
        return run;
    }

    /// <summary>The same loop on the host kernel in this process; VmPTE and VmRSS are the process's own.</summary>
    public static unsafe Run Host(ulong virtBytes, int iterations, VmpteSeries? sampled = null)
    {
        byte* a = HostMemory.Map(virtBytes);
        try
        {
            HostMemory.Advise(a, virtBytes, HostMemory.MADV_NOHUGEPAGE);
            long vmpteBefore = ProcStatus.ReadKb("VmPTE") ?? 0;
            sampled?.Add((0, vmpteBefore));
            long faults0 = HostMemory.ThreadMinorFaults();
            var sw = Stopwatch.StartNew();
            for (int i = 0; i < iterations; i++)
            {
                byte* w = a + (ulong)i * Window;
                for (ulong off = 0; off < Window; off += 4096) w[off] = 1;
                HostMemory.Advise(w, Window, HostMemory.MADV_DONTNEED);
                sampled?.Offer(i + 1, () => ProcStatus.ReadKb("VmPTE") ?? 0);
            }
            double seconds = sw.Elapsed.TotalSeconds;
            long faults = HostMemory.ThreadMinorFaults() - faults0;
            return new Run("host", vmpteBefore, ProcStatus.ReadKb("VmPTE") ?? 0, 0, ProcStatus.ReadKb("VmRSS") ?? 0,
                Math.Round(seconds, 3), Math.Round(faults / seconds));
        }
        finally
        {
            HostMemory.Unmap(a, virtBytes);
        }
    }

    private static void Check(Errno e, string call)
    {
        if (e != Errno.Success) throw new ErrnoException(e, call);
    }
}

/// <summary>Sizes as people write them: 50G, 1M, 64K, or bytes.</summary>
public static class Size
{
    /// <summary>A size the way the commands print it: "1 GiB", "64 MiB", "16 KiB".</summary>
    public static string Format(ulong bytes)
    {
        var c = System.Globalization.CultureInfo.InvariantCulture;
        if (bytes % (1UL << 30) == 0) return (bytes >> 30).ToString(c) + " GiB";
        if (bytes % (1UL << 20) == 0) return (bytes >> 20).ToString(c) + " MiB";
        return (bytes >> 10).ToString(c) + " KiB";
    }

    /// <summary>Throws for a failed emulated system call.</summary>
    public static void Check(Errno e, string call)
    {
        if (e != Errno.Success) throw new ErrnoException(e, call);
    }

    public static ulong Parse(string s)
    {
        s = s.Trim();
        ulong mult = char.ToUpperInvariant(s[^1]) switch { 'K' => 1UL << 10, 'M' => 1UL << 20, 'G' => 1UL << 30, 'T' => 1UL << 40, _ => 1 };
        string digits = mult == 1 ? s : s[..^1];
        return ulong.Parse(digits, System.Globalization.CultureInfo.InvariantCulture) * mult;
    }
}

/// <summary>
/// VmPTE taken at about 200 evenly spaced iterations of a loop (and at its start), for the plot: few enough
/// that reading /proc/self/status on the host does not change what is measured.
/// </summary>
public sealed class VmpteSeries(int iterations) : List<(int, long)>
{
    private readonly int _every = Math.Max(1, iterations / 200);

    public void Offer(int iteration, Func<long> vmpteKb)
    {
        if (iteration % _every == 0 || iteration == iterations) Add((iteration, vmpteKb()));
    }
}
