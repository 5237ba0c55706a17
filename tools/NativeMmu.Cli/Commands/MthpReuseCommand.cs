using NativeMmu.Cpus;
using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Runtime;
using System.Text.Json.Serialization;
using Microsoft.Win32.SafeHandles;
using NativeMmu.Arch.X86;
using NativeMmu.Cli.Host;
using NativeMmu.Cli.Plots;
using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu mthp-reuse`: the experiment of "mm: entirely reuse the whole anon mTHP in do_wp_page".
/// With only --folio mTHPs enabled: map --size (folio aligned), fill it, fork, let the child exit, write
/// one int at offset 10 (first_write), then one byte to every 4 KiB page (all_writes, counted from
/// before the first write). Run for each write-fault behaviour of the emulated kernel, and on the host.
/// </summary>
public static class MthpReuseCommand
{
    public sealed record Phase(
        [property: JsonPropertyName("wp_faults")] long WpFaults,
        [property: JsonPropertyName("copies")] long Copies,
        [property: JsonPropertyName("pgreuse")] long Pgreuse,
        [property: JsonPropertyName("split_deferred")] long SplitDeferred,
        [property: JsonPropertyName("peak_rss_kb"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] long? PeakRssKb = null);

    public sealed record Run(
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("first_write"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Phase? FirstWrite,
        [property: JsonPropertyName("all_writes"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] Phase? AllWrites,
        [property: JsonPropertyName("error"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Error = null,
        [property: JsonIgnore] long? ThreadFaults = null);

    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("size_bytes")] ulong SizeBytes,
        [property: JsonPropertyName("folio_bytes")] ulong FolioBytes,
        [property: JsonPropertyName("runs")] IReadOnlyList<Run> Runs);

    private static readonly (string Name, LargeFolioWp Wp)[] Modes =
        [("copy", LargeFolioWp.Copy), ("subpage", LargeFolioWp.ReuseSubpage), ("whole", LargeFolioWp.ReuseWholeFolio)];

    public static Command Create()
    {
        var size = new Option<string>("--size") { Description = "Anonymous memory to map and fill (e.g. 1M)", DefaultValueFactory = _ => "1M" };
        var folio = new Option<string>("--folio") { Description = "The only mTHP size enabled (16K..2M)", DefaultValueFactory = _ => "64K" };
        var mode = new Option<string>("--mode") { Description = "Write-fault behaviour: copy (before 6.15) | subpage (6.15+) | whole (the 2024 RFC 'entirely reuse the whole anon mTHP in do_wp_page') | all", DefaultValueFactory = _ => "all" };
        mode.AcceptOnlyFromAmong("copy", "subpage", "whole", "all");
        var host = new Option<bool>("--host") { Description = "Also run it on the host kernel (needs the writable mTHP sysfs knobs; they are restored)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var plot = new Option<string?>("--plot") { Description = "Also draw write faults, copies and reuses per behaviour to FILE.png or FILE.svg" };
        var cmd = new Command("mthp-reuse", "Write faults on mTHPs after fork and child exit: copies, reuses and deferred splits per do_wp_page behaviour")
        {
            size, folio, mode, host, json, plot,
        };
        cmd.SetAction(r =>
        {
            Report report;
            string? plotPath = r.GetValue(plot);
            try
            {
                if (plotPath is not null) Figure.ValidatePath(plotPath);
                report = Measure(Size.Parse(r.GetValue(size)!), Size.Parse(r.GetValue(folio)!), r.GetValue(mode)!, r.GetValue(host));
            }
            catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
            {
                Console.Error.WriteLine($"mthp-reuse: {e.Message}");
                return 1;
            }
            if (r.GetValue(json)) Console.Out.WriteLine(ToJson(report));
            else Print(report);
            if (plotPath is not null) CommandPlots.MthpReuse(report, plotPath);
            return 0;
        });
        return cmd;
    }

    public static string ToJson(Report r) => JsonSerializer.Serialize(r);

    public static Report Measure(ulong sizeBytes, ulong folioBytes, string mode, bool host)
    {
        Thp.OrderOfSize(folioBytes); // validates the size
        if (sizeBytes == 0 || sizeBytes % folioBytes != 0) throw new ArgumentException("--size must be a positive multiple of --folio");
        var runs = new List<Run>();
        foreach ((string name, LargeFolioWp wp) in Modes)
            if (mode == "all" || mode == name) runs.Add(Emulated(name, wp, sizeBytes, folioBytes));
        if (host) runs.Add(Host(sizeBytes, folioBytes));
        return new Report("mthp-reuse", sizeBytes, folioBytes, runs);
    }

    /// <summary>The scenario on the emulator with one write-fault behaviour.</summary>
    public static Run Emulated(string name, LargeFolioWp wp, ulong sizeBytes, ulong folioBytes)
    {
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = MemoryBytesFor(sizeBytes), Cpus = 2, DebugVm = false, WpLargeFolio = wp });
        Thp thp = kernel.Machine.Thp;
        thp.DisableAllSizes();
        thp.Enabled = ThpMode.Never;
        thp.SetSize(folioBytes, ThpMode.Always);
        int order = Thp.OrderOfSize(folioBytes);
        Process p = kernel.CreateProcess("mthp-reuse");
        using Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Size.Check(p.Mmap(0, sizeBytes + folioBytes, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong raw), "mmap");
        ulong a = (raw + folioBytes - 1) & ~(folioBytes - 1);
        if (a > raw) Size.Check(p.Munmap(raw, a - raw), "munmap");
        if (raw + sizeBytes + folioBytes > a + sizeBytes) Size.Check(p.Munmap(a + sizeBytes, raw + sizeBytes + folioBytes - (a + sizeBytes)), "munmap");
        for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) cpu.Store<byte>(a + off, 1);
        p.Fork("mthp-reuse-child").Exit();
        p.Enter(cpu);

        Sample before = Sample.Of(kernel, order);
        cpu.Store<int>(a + 10, 1);
        Sample first = Sample.Of(kernel, order);
        for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) cpu.Store<byte>(a + off, 2);
        Sample all = Sample.Of(kernel, order);
        long peak = Math.Max(Kb(p, "VmHWM"), Kb(p, "VmRSS"));
        p.Exit();
        return new Run(name, first.Minus(before, null), all.Minus(before, peak));
    }

    /// <summary>256 MiB, or room for the region four times over (parent, child's share, copies) when it is larger.</summary>
    private static ulong MemoryBytesFor(ulong sizeBytes)
    {
        ulong bytes = Math.Max(256UL << 20, 4 * sizeBytes + (64UL << 20));
        return (bytes + Geometry.PmdSize - 1) & Geometry.PmdMask;
    }

    private readonly record struct Sample(long Reuse, long Copy, long Pgreuse, long SplitDeferred)
    {
        public static Sample Of(Kernel k, int order) => new(
            k.Machine.Counters.Sum(VmEvent.FaultWpReuse), k.Machine.Counters.Sum(VmEvent.FaultWpCopy),
            k.VmstatValue("pgreuse"), k.Machine.Thp.Stat(order, MthpStat.SplitDeferred));

        public Phase Minus(Sample b, long? peak) => new(
            Reuse - b.Reuse + Copy - b.Copy, Copy - b.Copy, Pgreuse - b.Pgreuse, SplitDeferred - b.SplitDeferred, peak);
    }

    private static long Kb(Process p, string field) => ProcStatus.ParseKb(p.ProcStatus(), field) ?? 0;

    private const string SysThp = "/sys/kernel/mm/transparent_hugepage";

    /// <summary>
    /// The scenario on the host kernel in this process: every THP knob (the top-level one and each size's)
    /// saved, the top level and every size set to never but --folio (always), the scenario run, and every
    /// knob restored whatever happens. The counters are system-wide: wp_faults is the /proc/vmstat pgfault
    /// delta, pgreuse its pgreuse delta, copies = wp_faults − pgreuse, split_deferred the size's sysfs stat.
    /// </summary>
    public static unsafe Run Host(ulong sizeBytes, ulong folioBytes)
    {
        if (!HostFork.Supported) return new Run("host", null, null, "the host fork stub needs x86-64 Linux");
        string dir = $"{SysThp}/hugepages-{folioBytes >> 10}kB";
        string knob = dir + "/enabled";
        string stat = dir + "/stats/split_deferred";
        if (!Directory.Exists(SysThp)) return new Run("host", null, null, $"{SysThp} does not exist: this kernel has no transparent hugepages");
        if (!File.Exists(knob)) return new Run("host", null, null, $"{knob} does not exist: this kernel has no {folioBytes >> 10} kB anonymous mTHP");
        if (!File.Exists(stat)) return new Run("host", null, null, $"{stat} does not exist: this kernel keeps no per-size mTHP stats");

        string top = SysThp + "/enabled";
        var knobs = new List<string>();
        if (File.Exists(top)) knobs.Add(top);
        knobs.AddRange(Directory.GetDirectories(SysThp, "hugepages-*kB").Select(d => d + "/enabled").Where(File.Exists).Order(StringComparer.Ordinal));
        var saved = new List<(string Knob, string Value)>(); // the knobs written so far, with the value to restore
        try
        {
            var current = knobs.ToDictionary(k => k, k => Current(File.ReadAllText(k)));
            foreach (string k in knobs)
            {
                File.WriteAllText(k, k == knob ? "always" : "never");
                saved.Add((k, current[k]));
            }
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            Restore(saved);
            return new Run("host", null, null, $"the THP knobs are not writable: {e.Message}");
        }

        ulong length = sizeBytes + folioBytes;
        byte* raw = null;
        bool noGc = false;
        try
        {
            using var counters = new HostCounters(stat);
            raw = HostMemory.Map(length);
            byte* a = (byte*)(((ulong)raw + folioBytes - 1) & ~(folioBytes - 1));
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) Volatile.Write(ref a[off], (byte)1);
            HostFork.TimeForks(1); // fork; the child calls exit_group at once and is reaped
            // After the fork every writable page of this process is write-protected, so the runtime's other
            // threads take wp faults (and pgreuse) on their own pages too; let them settle first.
            Thread.Sleep(500);
            try { noGc = GC.TryStartNoGCRegion(1 << 20); }
            catch (InvalidOperationException) { }
            counters.Take(); // warm up: JIT the sampler, fault its buffer and this stack back in
            counters.Take();

            // From here to the last sample nothing is allocated: the samples read into a preallocated buffer.
            HostSample before = counters.Take();
            Volatile.Write(ref *(int*)(a + 10), 1);
            HostSample first = counters.Take();
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) Volatile.Write(ref a[off], (byte)2);
            HostSample all = counters.Take();
            return new Run("host", first.Minus(before), all.Minus(before), null, all.ThreadFaults - before.ThreadFaults);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or UnauthorizedAccessException or FormatException)
        {
            return new Run("host", null, null, e.Message);
        }
        finally
        {
            if (noGc && GCSettings.LatencyMode == GCLatencyMode.NoGCRegion) GC.EndNoGCRegion();
            if (raw != null) HostMemory.Unmap(raw, length);
            Restore(saved);
        }
    }

    /// <summary>System-wide counters at one instant, and this thread's own minor faults.</summary>
    private readonly record struct HostSample(long Pgfault, long Pgreuse, long SplitDeferred, long ThreadFaults)
    {
        public Phase Minus(HostSample b)
        {
            long faults = Pgfault - b.Pgfault, reuse = Pgreuse - b.Pgreuse;
            return new Phase(faults, Math.Max(0, faults - reuse), reuse, SplitDeferred - b.SplitDeferred);
        }
    }

    /// <summary>
    /// Reads /proc/vmstat's pgfault and pgreuse and a split_deferred stat without allocating: both files stay
    /// open and are re-read from offset 0 (seq_file regenerates them) into one preallocated buffer.
    /// </summary>
    private sealed class HostCounters(string splitDeferredPath) : IDisposable
    {
        private readonly SafeFileHandle _vmstat = File.OpenHandle("/proc/vmstat");
        private readonly SafeFileHandle _split = File.OpenHandle(splitDeferredPath);
        private readonly byte[] _buf = new byte[64 << 10];

        public HostSample Take()
        {
            long pgfault = -1, pgreuse = -1;
            ReadOnlySpan<byte> text = _buf.AsSpan(0, ReadAll(_vmstat));
            while (!text.IsEmpty)
            {
                int nl = text.IndexOf((byte)'\n');
                ReadOnlySpan<byte> line = nl < 0 ? text : text[..nl];
                text = nl < 0 ? default : text[(nl + 1)..];
                if (line.StartsWith("pgfault "u8)) pgfault = Parse(line[8..], "pgfault");
                else if (line.StartsWith("pgreuse "u8)) pgreuse = Parse(line[8..], "pgreuse");
            }
            if (pgfault < 0 || pgreuse < 0) throw new FormatException("/proc/vmstat has no pgfault or no pgreuse line");
            long split = Parse(_buf.AsSpan(0, ReadAll(_split)), "split_deferred");
            return new HostSample(pgfault, pgreuse, split, HostMemory.ThreadMinorFaults());
        }

        private int ReadAll(SafeFileHandle h)
        {
            int total = 0, n;
            while (total < _buf.Length && (n = RandomAccess.Read(h, _buf.AsSpan(total), total)) > 0) total += n;
            return total;
        }

        private static long Parse(ReadOnlySpan<byte> s, string what)
            => System.Buffers.Text.Utf8Parser.TryParse(s.Trim(" \t\n"u8), out long v, out int used) && used == s.Trim(" \t\n"u8).Length
                ? v : throw new FormatException($"{what} is not a number");

        public void Dispose()
        {
            _vmstat.Dispose();
            _split.Dispose();
        }
    }

    /// <summary>The bracketed choice of a sysfs knob ("always inherit [madvise] never" → madvise).</summary>
    internal static string Current(string knobText)
    {
        int open = knobText.IndexOf('['), close = knobText.IndexOf(']');
        return open >= 0 && close > open ? knobText[(open + 1)..close] : knobText.Trim();
    }

    private static void Restore(List<(string Knob, string Value)> saved)
    {
        foreach ((string k, string v) in saved)
        {
            try { File.WriteAllText(k, v); }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException) { Console.Error.WriteLine($"could not restore {k} to {v}: {e.Message}"); }
        }
    }

    private static void Print(Report r)
    {
        var c = CultureInfo.InvariantCulture;
        long pages = (long)(r.SizeBytes / Geometry.PageSize), folios = (long)(r.SizeBytes / r.FolioBytes);
        Console.WriteLine();
        Console.WriteLine($" mthp-reuse: {Size.Format(r.SizeBytes)} of {Size.Format(r.FolioBytes)} mTHPs filled, fork, child exits; then one int at offset 10 (first_write), then a byte to every 4 KiB page (all_writes, counted from before the first write):");
        Console.WriteLine();
        Console.WriteLine("  mode      phase          wp_faults     copies    pgreuse  split_deferred  peak_rss_kb");
        foreach (Run run in r.Runs)
        {
            if (run.Error is { } err)
            {
                Console.WriteLine($"  {run.Mode,-8}  not measured: {err}");
                continue;
            }
            Row(run.Mode, "first_write", run.FirstWrite!);
            Row("", "all_writes", run.AllWrites!);
        }
        Console.WriteLine();
        Console.WriteLine("  expected all_writes:");
        Expected("copy", pages, pages, 0, folios, "kernels before 6.15: every page copied, each folio split");
        Expected("subpage", pages, 0, pages, 0, "6.15+ (__wp_can_reuse_large_anon_folio): every page reused");
        Expected("whole", folios, 0, folios, 0, "the 2024 whole-mTHP reuse RFC: the whole folio reused on its first write");
        Expected("host", pages, 0, pages, 0, "a 6.18 host behaves as subpage");
        if (r.Runs.FirstOrDefault(x => x.Mode == "host" && x.Error is null) is { } h)
        {
            Console.WriteLine();
            Console.WriteLine("  The host's counters are system-wide (/proc/vmstat pgfault and pgreuse, the size's stats/split_deferred):");
            Console.WriteLine($"  the runtime's own threads and other processes may add a few (this thread's own minor faults: {h.ThreadFaults?.ToString(c) ?? "?"} over all_writes).");
        }
        Console.WriteLine();
    }

    private static void Row(string mode, string phase, Phase p)
    {
        var c = CultureInfo.InvariantCulture;
        string peak = p.PeakRssKb is { } k ? k.ToString("N0", c) + " kB" : "-";
        Console.WriteLine(string.Create(c, $"  {mode,-8}  {phase,-11}  {p.WpFaults,11:N0}  {p.Copies,9:N0}  {p.Pgreuse,9:N0}  {p.SplitDeferred,14:N0}  {peak,11}"));
    }

    private static void Expected(string mode, long faults, long copies, long? reuse, long split, string why)
    {
        var c = CultureInfo.InvariantCulture;
        Console.WriteLine(string.Create(c, $"  {mode,-8}  {"",-11}  {faults,11:N0}  {copies,9:N0}  {(reuse is { } x ? x.ToString("N0", c) : ""),9}  {split,14:N0}  {"",11}  {why}"));
    }

}
