using System.CommandLine;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Arch.X86;
using NativeMmu.Cli.Host;
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
        [property: JsonPropertyName("error"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Error = null);

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
        var mode = new Option<string>("--mode") { Description = "Write-fault behaviour: copy (before 6.15) | subpage (6.15+) | whole (the RFC) | all", DefaultValueFactory = _ => "all" };
        mode.AcceptOnlyFromAmong("copy", "subpage", "whole", "all");
        var host = new Option<bool>("--host") { Description = "Also run it on the host kernel (needs the writable mTHP sysfs knobs; they are restored)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var cmd = new Command("mthp-reuse", "Write faults on mTHPs after fork and child exit: copies, reuses and deferred splits per do_wp_page behaviour")
        {
            size, folio, mode, host, json,
        };
        cmd.SetAction(r =>
        {
            Report report = Measure(Size.Parse(r.GetValue(size)!), Size.Parse(r.GetValue(folio)!), r.GetValue(mode)!, r.GetValue(host));
            if (r.GetValue(json)) Console.Out.WriteLine(ToJson(report));
            else Print(report);
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
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = Math.Max(64UL << 20, 4 * sizeBytes), Cpus = 2, WpLargeFolio = wp });
        Thp thp = kernel.Machine.Thp;
        thp.Enabled = ThpMode.Never;
        thp.DisableAllSizes();
        thp.SetSize(folioBytes, ThpMode.Always);
        int order = Thp.OrderOfSize(folioBytes);
        Process p = kernel.CreateProcess("mthp-reuse");
        using Cpu.Cpu cpu = kernel.AttachCpu();
        p.Enter(cpu);
        Check(p.Mmap(0, sizeBytes + folioBytes, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous, out ulong raw), "mmap");
        ulong a = (raw + folioBytes - 1) & ~(folioBytes - 1);
        if (a > raw) Check(p.Munmap(raw, a - raw), "munmap");
        if (raw + sizeBytes + folioBytes > a + sizeBytes) Check(p.Munmap(a + sizeBytes, raw + sizeBytes + folioBytes - (a + sizeBytes)), "munmap");
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
    /// The scenario on the host kernel in this process: every mTHP knob saved, all sizes set to never but
    /// --folio (always), run, and every knob restored. wp_faults are this thread's minor faults over the
    /// phase; pgreuse and split_deferred are system-wide deltas.
    /// </summary>
    public static unsafe Run Host(ulong sizeBytes, ulong folioBytes)
    {
        if (!HostFork.Supported) return new Run("host", null, null, "the host fork stub needs x86-64 Linux");
        string knob = $"{SysThp}/hugepages-{folioBytes >> 10}kB/enabled";
        string stat = $"{SysThp}/hugepages-{folioBytes >> 10}kB/stats/split_deferred";
        if (!File.Exists(knob)) return new Run("host", null, null, $"{knob} does not exist: this kernel has no {folioBytes >> 10} kB anonymous mTHP");
        string[] knobs = [.. Directory.GetDirectories(SysThp, "hugepages-*kB").Select(d => d + "/enabled").Where(File.Exists)];
        var saved = new Dictionary<string, string>();
        try
        {
            foreach (string k in knobs) saved[k] = Current(File.ReadAllText(k));
            foreach (string k in knobs) File.WriteAllText(k, k == knob ? "always" : "never");
        }
        catch (Exception e) when (e is UnauthorizedAccessException or IOException)
        {
            Restore(saved);
            return new Run("host", null, null, $"the mTHP knobs are not writable: {e.Message}");
        }
        byte* raw = null;
        try
        {
            raw = HostMemory.Map(sizeBytes + folioBytes);
            byte* a = (byte*)(((ulong)raw + folioBytes - 1) & ~(folioBytes - 1));
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) Volatile.Write(ref a[off], (byte)1);
            HostFork.TimeForks(1); // fork; the child exits at once and is reaped
            // The runtime's other threads write to their own pages after the fork too (each a pgreuse of
            // its own); let that settle before the system-wide counters are sampled.
            Thread.Sleep(500);

            // getrusage allocates nothing, so the minor-fault counts bracket the writes alone; the
            // system-wide counters are read (which allocates, and may fault) outside those brackets.
            HostSample before = HostSample.Take(stat);
            long f0 = HostMemory.ThreadMinorFaults();
            Volatile.Write(ref *(int*)(a + 10), 1);
            long f1 = HostMemory.ThreadMinorFaults();
            HostSample first = HostSample.Take(stat);
            long f2 = HostMemory.ThreadMinorFaults();
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) Volatile.Write(ref a[off], (byte)2);
            long f3 = HostMemory.ThreadMinorFaults();
            HostSample all = HostSample.Take(stat);
            return new Run("host", first.Minus(before, f1 - f0), all.Minus(before, f1 - f0 + f3 - f2));
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or FormatException)
        {
            return new Run("host", null, null, e.Message);
        }
        finally
        {
            if (raw != null) HostMemory.Unmap(raw, sizeBytes + folioBytes);
            Restore(saved);
        }
    }

    private readonly record struct HostSample(long Pgreuse, long SplitDeferred)
    {
        public static HostSample Take(string stat) => new(
            ProcStatus.ReadVmstat().TryGetValue("pgreuse", out long r) ? r : 0,
            long.Parse(File.ReadAllText(stat).Trim(), CultureInfo.InvariantCulture));

        public Phase Minus(HostSample b, long faults)
        {
            long reuse = Pgreuse - b.Pgreuse;
            return new Phase(faults, Math.Max(0, faults - reuse), reuse, SplitDeferred - b.SplitDeferred);
        }
    }

    /// <summary>The bracketed choice of a sysfs knob ("always inherit [madvise] never" → madvise).</summary>
    internal static string Current(string knobText)
    {
        int open = knobText.IndexOf('['), close = knobText.IndexOf(']');
        return open >= 0 && close > open ? knobText[(open + 1)..close] : knobText.Trim();
    }

    private static void Restore(Dictionary<string, string> saved)
    {
        foreach ((string k, string v) in saved)
        {
            try { File.WriteAllText(k, v); }
            catch (Exception e) when (e is UnauthorizedAccessException or IOException) { Console.Error.WriteLine($"could not restore {k} to {v}: {e.Message}"); }
        }
    }

    private static void Print(Report r)
    {
        Console.WriteLine();
        Console.WriteLine($" mthp-reuse: {r.SizeBytes >> 10} KiB of {r.FolioBytes >> 10} KiB mTHPs filled, fork, child exits, then writes:");
        Console.WriteLine();
        Console.WriteLine("  mode      phase        wp_faults   copies  pgreuse  split_deferred  peak_rss_kb");
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
        Console.WriteLine("  copy = kernels before 6.15, subpage = 6.15+ (__wp_can_reuse_large_anon_folio), whole = the RFC's whole-folio reuse.");
        Console.WriteLine("  The host's wp_faults are this thread's minor faults; pgreuse and split_deferred are system-wide.");
        Console.WriteLine();
    }

    private static void Row(string mode, string phase, Phase p)
        => Console.WriteLine($"  {mode,-8}  {phase,-11}  {p.WpFaults,9:N0}  {p.Copies,7:N0}  {p.Pgreuse,7:N0}  {p.SplitDeferred,14:N0}  {(p.PeakRssKb is { } k ? k.ToString("N0", CultureInfo.InvariantCulture) : "-"),11}");

    private static void Check(Errno e, string call)
    {
        if (e != Errno.Success) throw new ErrnoException(e, call);
    }
}
