using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Arch.X86;
using NativeMmu.Cli.Emulated;
using NativeMmu.Cli.Host;
using NativeMmu.Cli.Plots;
using NativeMmu.Cpus;
using NativeMmu.Mm;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu scaling`: how each cost grows with its work, emulator beside the host kernel in the same run.
/// Every series is measured one point at a time, emulated first and then the host, each freeing its memory
/// before the next starts, so no two large working sets are resident at once.
/// </summary>
public static class ScalingCommand
{
    /// <param name="Zeroing">
    /// The fault series only, where the host ran: ns to zero one 4 KiB frame over a pre-touched buffer of
    /// the working set's size (multi-fault's ceiling), the part of a fault's cost no kernel avoids and the
    /// part that grows as the working set leaves the caches. Absent from the other series' points.
    /// </param>
    public sealed record Point(
        [property: JsonPropertyName("x")] long X,
        [property: JsonPropertyName("emulated")] double Emulated,
        [property: JsonPropertyName("host")] double? Host,
        [property: JsonPropertyName("zeroing"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? Zeroing = null);

    public sealed record Series(
        [property: JsonPropertyName("name")] string Name,
        [property: JsonPropertyName("unit")] string Unit,
        [property: JsonPropertyName("points")] IReadOnlyList<Point> Points);

    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("series")] IReadOnlyList<Series> Series);

    /// <summary>The series, in the order they run and print.</summary>
    public static readonly string[] AllSeries = ["fault", "mmap", "fork", "fork-vmas", "boot"];

    /// <summary>What a run measures: the x values of each series, and how long or how often each point runs.</summary>
    public sealed record Plan(
        ulong[] FaultBytes, double FaultSeconds,
        int[] MmapVmas, int MmapOps, int MmapBatches,
        ulong[] ForkBytes, int[] ForkVmas, int ForkRepeat,
        ulong[] BootBytes, double WarmSeconds)
    {
        public static Plan Full(double faultSeconds) => new(
            [2UL << 20, 128UL << 20, 1UL << 30, 8UL << 30], faultSeconds,
            [10, 1_000, 10_000, 65_000], 4_000, 15,
            [64UL << 20, 256UL << 20, 1UL << 30, 4UL << 30], [10, 1_000, 10_000], 5,
            [1UL << 30, 4UL << 30, 16UL << 30], 0.5);

        /// <summary>Small sizes for tests: the same code, seconds rather than minutes.</summary>
        public static Plan Quick(double faultSeconds) => new(
            [2UL << 20, 16UL << 20, 64UL << 20], faultSeconds,
            [10, 100, 1_000], 200, 3,
            [4UL << 20, 16UL << 20], [10, 100], 2,
            [128UL << 20, 512UL << 20], 0.05);
    }

    /// <summary>What the table prints beside the series: figures the JSON shape has no room for.</summary>
    public sealed class Notes
    {
        public readonly Dictionary<long, int> HostMmapVmasBuilt = [];
        public int HostOtherVmas;
        public int? HostMaxMapCount;
        public int HostForkOtherVmas;
        public readonly Dictionary<long, (long ReservedBytes, long VmemmapBytes, long RssGrowthBytes)> Boot = [];
        public readonly List<string> HostErrors = [];
    }

    public static Command Create()
    {
        var series = new Option<string>("--series") { Description = "Comma-separated series: fault, mmap, fork, fork-vmas, boot (default all)", DefaultValueFactory = _ => string.Join(",", AllSeries) };
        var quick = new Option<bool>("--quick") { Description = "Small sizes and short runs (seconds, not minutes)" };
        var seconds = new Option<double?>("--seconds") { Description = "Measured seconds per fault point and side (default 3, 0.2 with --quick)" };
        var noHost = new Option<bool>("--no-host") { Description = "Skip the host-kernel runs (host is null)" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var plot = new Option<string?>("--plot") { Description = "Also draw each series' growth against its work, emulated and host kernel, to FILE.png or FILE.svg" };
        var cmd = new Command("scaling", "How each cost grows with its work: fault cost by working set, mmap+munmap by VMA count, fork by size and by VMA count, boot by arena size")
        {
            series, quick, seconds, noHost, json, plot,
        };
        cmd.SetAction(r => Run(ParseSeries(r.GetValue(series)!), r.GetValue(quick), r.GetValue(seconds), r.GetValue(noHost), r.GetValue(json), r.GetValue(plot)));
        return cmd;
    }

    internal static string[] ParseSeries(string spec)
    {
        string[] names = spec.Split(',', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries);
        foreach (string n in names)
            if (!AllSeries.Contains(n)) throw new ArgumentException($"--series: unknown series '{n}' (known: {string.Join(", ", AllSeries)})");
        return [.. AllSeries.Where(names.Contains)];
    }

    public static int Run(string[] series, bool quick, double? seconds, bool noHost, bool json, string? plotPath = null)
    {
        if (plotPath is not null) Figure.ValidatePath(plotPath);
        Plan plan = quick ? Plan.Quick(seconds ?? 0.2) : Plan.Full(seconds ?? 3);
        var notes = new Notes();
        Report report = Measure(series, plan, noHost, notes);
        ClearProgress();
        if (json) Console.Out.WriteLine(ToJson(report));
        else Print(report, plan, notes);
        if (plotPath is not null) CommandPlots.Scaling(report, plotPath);
        return 0;
    }

    // Units such as ns/(mmap+munmap) stay readable: no \u002B escapes.
    private static readonly JsonSerializerOptions JsonOptions = new() { Encoder = System.Text.Encodings.Web.JavaScriptEncoder.UnsafeRelaxedJsonEscaping };

    public static string ToJson(Report report) => JsonSerializer.Serialize(report, JsonOptions);

    public static Report Measure(string[] series, Plan plan, bool noHost, Notes? notes = null)
    {
        notes ??= new Notes();
        var result = new List<Series>();
        foreach (string s in series)
        {
            switch (s)
            {
                case "fault":
                    result.Add(new Series("fault", "ns/fault", [.. plan.FaultBytes.Select(b => FaultPoint(b, plan.FaultSeconds, noHost, notes))]));
                    break;
                case "mmap":
                    result.Add(new Series("mmap", "ns/(mmap+munmap)", [.. plan.MmapVmas.Select(n => MmapPoint(n, plan.MmapOps, plan.MmapBatches, plan.WarmSeconds, noHost, notes))]));
                    break;
                case "fork":
                    WarmUpForks(plan.WarmSeconds, noHost);
                    result.Add(new Series("fork", "ms/fork", [.. plan.ForkBytes.Select(b => ForkPoint(b, plan.ForkRepeat, noHost, notes))]));
                    break;
                case "fork-vmas":
                    result.Add(new Series("fork-vmas", "ms/fork", [.. plan.ForkVmas.Select(n => ForkVmasPoint(n, plan.ForkRepeat, plan.WarmSeconds, noHost, notes))]));
                    break;
                case "boot":
                    var boots = plan.BootBytes.Select(b => BootPoint(b, notes)).ToList();
                    result.Add(new Series("boot", "ms", [.. boots.Select(b => b.Time)]));
                    result.Add(new Series("boot-rss", "bytes", [.. boots.Select(b => b.Rss)]));
                    break;
            }
        }
        return new Report("scaling", result);
    }

    // -------------------------------------------------------------------------------------------
    // fault cost against the working set
    // -------------------------------------------------------------------------------------------

    /// <summary>
    /// ns per fault on one thread: the 2 MiB multi-fault window, or page_fault1 of <paramref name="bytes"/>
    /// (mmap, write one byte per 4 KiB page, munmap, over and over) in an arena sized to fit. Wall time over
    /// faults, so the munmap that ends each pass is included, as it is in page_fault1's own figure.
    /// </summary>
    private static Point FaultPoint(ulong bytes, double seconds, bool noHost, Notes notes)
    {
        bool window = bytes <= 2UL << 20;
        double warm = Math.Min(1.0, seconds / 4);
        double emu;
        Progress($"fault {Size.Format(bytes)}: emulated");
        using (var kernel = new Kernel(new KernelConfig { MemoryBytes = window ? 1UL << 30 : ForkCommand.MemoryBytesFor(bytes) }))
        {
            // One untimed pass first: the JIT's warm-up, and the host's first touch of every arena frame the loop uses.
            LoopResult r = window ? EmuLoops.MultiFault(kernel, 1, warm) : EmuLoops.PageFault1(kernel, 1, warm, bytes: bytes);
            if (!window) TouchOnce(kernel, bytes);
            r = window ? EmuLoops.MultiFault(kernel, 1, seconds) : EmuLoops.PageFault1(kernel, 1, seconds, bytes: bytes);
            emu = r.Seconds * 1e9 / r.Faults;
        }
        double? host = null, zeroing = null;
        if (!noHost)
        {
            Progress($"fault {Size.Format(bytes)}: host kernel");
            LoopResult h = window ? HostLoops.MultiFault(1, warm) : HostLoops.PageFault1(1, warm, bytes: bytes);
            h = window ? HostLoops.MultiFault(1, seconds) : HostLoops.PageFault1(1, seconds, bytes: bytes);
            host = h.Seconds * 1e9 / h.Faults;
            // The one piece of a fault's work no kernel avoids, at this working set: it grows as the set leaves the caches.
            Progress($"fault {Size.Format(bytes)}: zeroing ceiling");
            LoopResult z = HostLoops.Ceiling(1, seconds, bytes);
            zeroing = Math.Round(z.Seconds * 1e9 / z.Faults, 2);
        }
        return new Point((long)bytes, Math.Round(emu, 2), host is { } x ? Math.Round(x, 2) : null, zeroing);
    }

    /// <summary>Maps, writes and unmaps <paramref name="bytes"/> once on the emulator (a warm-up, untimed).</summary>
    private static void TouchOnce(Kernel kernel, ulong bytes)
    {
        Process p = kernel.CreateProcess("warm-up");
        using (Cpu cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            ulong a = p.Mmap(bytes);
            Size.Check(p.Madvise(a, bytes, Advice.NoHugePage), "madvise");
            for (ulong off = 0; off < bytes; off += Geometry.PageSize) cpu.Store<byte>(a + off, 1);
            Size.Check(p.Munmap(a, bytes), "munmap");
        }
        p.Exit();
    }

    // -------------------------------------------------------------------------------------------
    // mmap + munmap against the number of VMAs
    // -------------------------------------------------------------------------------------------

    /// <summary>
    /// The mm gets <paramref name="vmas"/> one-page VMAs packed side by side, alternately PROT_READ and
    /// PROT_READ|PROT_WRITE so none merges with its neighbour (one mmap, then mprotect of every other page);
    /// then ns per mmap(NULL, 4096, PROT_WRITE) + munmap of it, the median of the batches. PROT_WRITE alone is a
    /// protection no neighbour has, so the page is a VMA of its own: an insert and a remove, never a merge.
    /// </summary>
    private static Point MmapPoint(int vmas, int ops, int batches, double warm, bool noHost, Notes notes)
    {
        Progress($"mmap at {vmas:N0} VMAs: emulated");
        double emu = EmulatedMmap(vmas, ops, batches, warm);
        double? host = null;
        if (!noHost)
        {
            Progress($"mmap at {vmas:N0} VMAs: host kernel");
            host = HostMmap(vmas, ops, batches, warm, notes);
        }
        return new Point(vmas, Math.Round(emu, 1), host is { } h ? Math.Round(h, 1) : null);
    }

    /// <summary>Runs <paramref name="work"/> for <paramref name="seconds"/>, untimed: long enough for the JIT to have compiled its final code.</summary>
    private static void WarmUp(Action work, double seconds)
    {
        var sw = Stopwatch.StartNew();
        do work(); while (sw.Elapsed.TotalSeconds < seconds);
    }

    private static double EmulatedMmap(int vmas, int ops, int batches, double warm)
    {
        if (vmas > Mmap.MaxMapCount - 1) throw new ArgumentException($"{vmas} VMAs leave no room under vm.max_map_count ({Mmap.MaxMapCount}) for the measured one");
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 2 });
        Process p = kernel.CreateProcess("mmap");
        ulong region = p.Mmap((ulong)vmas * Geometry.PageSize, Prot.Read);
        for (int i = 1; i < vmas; i += 2) Size.Check(p.Mprotect(region + (ulong)i * Geometry.PageSize, Geometry.PageSize, Prot.ReadWrite), "mprotect");
        if (p.Mm.Vmas.Count != vmas) throw new InvalidOperationException($"expected {vmas} VMAs, the mm has {p.Mm.Vmas.Count}");
        double Batch()
        {
            long t0 = Stopwatch.GetTimestamp();
            for (int i = 0; i < ops; i++)
            {
                Size.Check(p.Mmap(0, Geometry.PageSize, Prot.Write, MapFlags.Private | MapFlags.Anonymous, out ulong a), "mmap");
                Size.Check(p.Munmap(a, Geometry.PageSize), "munmap");
            }
            return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
        }
        WarmUp(() => Batch(), warm);
        double median = ForkCommand.Median([.. Enumerable.Range(0, batches).Select(_ => Batch())]);
        p.Exit();
        return median;
    }

    /// <summary>
    /// The same on the host, in this process: its mm already holds the runtime's mappings, so the VMAs built
    /// here are as many as asked when vm.max_map_count leaves room, else as many as it allows.
    /// </summary>
    private static unsafe double? HostMmap(int vmas, int ops, int batches, double warm, Notes notes)
    {
        byte* region = null;
        ulong bytes = 0;
        try
        {
            int others = HostMemory.MapCount();
            int limit = HostMemory.MaxMapCount() ?? Mmap.MaxMapCount;
            notes.HostOtherVmas = others;
            notes.HostMaxMapCount = limit;
            // Headroom for the measured page and for what the runtime maps meanwhile.
            int built = Math.Min(vmas, limit - others - 64);
            notes.HostMmapVmasBuilt[vmas] = built;
            if (built < 1) return null;
            bytes = (ulong)built * Geometry.PageSize;
            region = HostMemory.Map(bytes, HostMemory.PROT_READ);
            for (int i = 1; i < built; i += 2) HostMemory.Protect(region + (ulong)i * Geometry.PageSize, Geometry.PageSize, HostMemory.PROT_READ | HostMemory.PROT_WRITE);
            double Batch()
            {
                long t0 = Stopwatch.GetTimestamp();
                for (int i = 0; i < ops; i++)
                {
                    byte* a = HostMemory.Map(Geometry.PageSize, HostMemory.PROT_WRITE);
                    HostMemory.Unmap(a, Geometry.PageSize);
                }
                return Stopwatch.GetElapsedTime(t0).TotalNanoseconds / ops;
            }
            WarmUp(() => Batch(), warm);
            return ForkCommand.Median([.. Enumerable.Range(0, batches).Select(_ => Batch())]);
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            notes.HostErrors.Add($"mmap at {vmas} VMAs: {e.Message}");
            return null;
        }
        finally
        {
            if (region != null) HostMemory.Unmap(region, bytes);
        }
    }

    // -------------------------------------------------------------------------------------------
    // fork against the populated size and against the VMA count
    // -------------------------------------------------------------------------------------------

    /// <summary>
    /// Untimed forks of a small mm for <paramref name="seconds"/>, and a few on the host: the page-table copy
    /// runs thousands of times per fork, so a few small forks would leave the first points timed on the JIT's
    /// first-tier code (1.2 ms for a 64 MiB fork against 0.6 ms once it is compiled again).
    /// </summary>
    private static void WarmUpForks(double seconds, bool noHost)
    {
        WarmUp(() => ForkCommand.Emulated(16UL << 20, 10), seconds);
        if (!noHost) ForkCommand.Host(8UL << 20, 5, out _);
    }

    /// <summary>`nativemmu fork` at one size: the median over the forks, emulated then host.</summary>
    private static Point ForkPoint(ulong bytes, int repeat, bool noHost, Notes notes)
    {
        Progress($"fork of {Size.Format(bytes)}: emulated");
        double emu = ForkCommand.Median(ForkCommand.Emulated(bytes, repeat).ForkMs);
        double? host = null;
        if (!noHost)
        {
            Progress($"fork of {Size.Format(bytes)}: host kernel");
            ForkCommand.HostRun h = ForkCommand.Host(bytes, repeat, out _);
            host = h.ForkMsMedian;
            if (h.Error is { } e) notes.HostErrors.Add($"fork of {Size.Format(bytes)}: {e}");
        }
        return new Point((long)bytes, Math.Round(emu, 3), host is { } x ? Math.Round(x, 3) : null);
    }

    /// <summary>
    /// fork of an mm of <paramref name="vmas"/> VMAs of one populated 4 KiB page each: 2n pages mapped and
    /// every even one written, then every odd one unmapped, leaving a one-page gap between the VMAs.
    /// Untimed forks of that same mm for <paramref name="warm"/> seconds come first: the per-VMA paths
    /// (vm_area_dup, anon_vma_fork, the tree's inserts at this size) run once per VMA, and without them
    /// the timed forks ran on the JIT's first-tier code (10,000 VMAs: 9-30 ms for the first forks of a
    /// fresh process, 1.5 ms once compiled again).
    /// </summary>
    private static Point ForkVmasPoint(int vmas, int repeat, double warm, bool noHost, Notes notes)
    {
        Progress($"fork of {vmas:N0} VMAs: emulated");
        double emu;
        using (var kernel = new Kernel(new KernelConfig { MemoryBytes = 256UL << 20, Cpus = 2 }))
        {
            Process p = kernel.CreateProcess("fork-vmas");
            using (Cpu cpu = kernel.AttachCpu())
            {
                p.Enter(cpu);
                ulong bytes = 2UL * (ulong)vmas * Geometry.PageSize;
                ulong a = p.Mmap(bytes);
                Size.Check(p.Madvise(a, bytes, Advice.NoHugePage), "madvise");
                for (int i = 0; i < 2 * vmas; i += 2) cpu.Store<byte>(a + (ulong)i * Geometry.PageSize, 1);
                for (int i = 1; i < 2 * vmas; i += 2) Size.Check(p.Munmap(a + (ulong)i * Geometry.PageSize, Geometry.PageSize), "munmap");
                if (p.Mm.Vmas.Count != vmas) throw new InvalidOperationException($"expected {vmas} VMAs, the mm has {p.Mm.Vmas.Count}");
                WarmUp(() => p.Fork("fork-warm-up").Exit(), warm);
                emu = ForkCommand.Median(ForkCommand.TimeForks(p, repeat, out _));
            }
            p.Exit();
        }
        double? host = null;
        if (!noHost)
        {
            Progress($"fork of {vmas:N0} VMAs: host kernel");
            host = HostForkVmas(vmas, repeat, notes);
        }
        return new Point(vmas, Math.Round(emu, 3), host is { } x ? Math.Round(x, 3) : null);
    }

    private static unsafe double? HostForkVmas(int vmas, int repeat, Notes notes)
    {
        if (!HostFork.Supported) { notes.HostErrors.Add("fork-vmas: the host fork stub needs x86-64 Linux"); return null; }
        ulong bytes = 2UL * (ulong)vmas * Geometry.PageSize;
        byte* a = null;
        try
        {
            a = HostMemory.Map(bytes);
            HostMemory.Advise(a, bytes, HostMemory.MADV_NOHUGEPAGE);
            for (int i = 0; i < 2 * vmas; i += 2) a[(ulong)i * Geometry.PageSize] = 1;
            for (int i = 1; i < 2 * vmas; i += 2) HostMemory.Unmap(a + (ulong)i * Geometry.PageSize, Geometry.PageSize);
            notes.HostForkOtherVmas = HostMemory.MapCount() - vmas;
            return ForkCommand.Median(HostFork.TimeForks(repeat));
        }
        catch (System.ComponentModel.Win32Exception e)
        {
            notes.HostErrors.Add($"fork of {vmas} VMAs: {e.Message}");
            return null;
        }
        finally
        {
            // The odd pages are gone already; munmap of a range with holes unmaps what is there.
            if (a != null) HostMemory.Unmap(a, bytes);
        }
    }

    // -------------------------------------------------------------------------------------------
    // boot
    // -------------------------------------------------------------------------------------------

    /// <summary>
    /// new Kernel(arena of <paramref name="bytes"/>): its wall time, and this process's RSS growth (VmRSS) beyond
    /// the frames the boot takes from the arena (the vmemmap, its page tables, the zero page and PFN 0: the
    /// frames the allocator does not manage). The first boot in a process also JITs the boot code, so a small
    /// kernel boots once, untimed, before the first point.
    /// </summary>
    private static (Point Time, Point Rss) BootPoint(ulong bytes, Notes notes)
    {
        Progress($"boot of {Size.Format(bytes)}");
        if (notes.Boot.Count == 0) new Kernel(new KernelConfig { MemoryBytes = 64UL << 20 }).Dispose();
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        long rss0 = (ProcStatus.ReadKb("VmRSS") ?? 0) << 10;
        long t0 = Stopwatch.GetTimestamp();
        var kernel = new Kernel(new KernelConfig { MemoryBytes = bytes });
        double ms = Stopwatch.GetElapsedTime(t0).TotalMilliseconds;
        long rss1 = (ProcStatus.ReadKb("VmRSS") ?? 0) << 10;
        // The boot allocator clears every frame it hands out, from the vmemmap's first frame on; PFN 0 and the
        // frames below the vmemmap's 2 MiB alignment are reserved but never written.
        long reserved = (long)(kernel.Machine.ReservedFrames - kernel.Machine.Vmemmap.FirstFramePfn) << Geometry.PageShift;
        long vmemmap = (long)kernel.Machine.Vmemmap.FrameCount << Geometry.PageShift;
        kernel.Dispose();
        notes.Boot[(long)bytes] = (reserved, vmemmap, rss1 - rss0);
        return (new Point((long)bytes, Math.Round(ms, 2), null), new Point((long)bytes, rss1 - rss0 - reserved, null));
    }

    // -------------------------------------------------------------------------------------------
    // output
    // -------------------------------------------------------------------------------------------

    /// <summary>Least-squares slope of y against x, and the intercept.</summary>
    internal static (double Slope, double Intercept) Fit(IReadOnlyList<(double X, double Y)> pts)
    {
        double mx = pts.Average(p => p.X), my = pts.Average(p => p.Y);
        double sxx = pts.Sum(p => (p.X - mx) * (p.X - mx)), sxy = pts.Sum(p => (p.X - mx) * (p.Y - my));
        double slope = sxx > 0 ? sxy / sxx : 0;
        return (slope, my - slope * mx);
    }

    private static void Print(Report r, Plan plan, Notes notes)
    {
        var c = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine(" Scaling: how each cost grows with its work, emulator beside the host kernel (one thread):");
        foreach (Series s in r.Series)
        {
            Console.WriteLine();
            switch (s.Name)
            {
                case "fault":
                    Console.WriteLine($"  fault cost against the working set (2 MiB: the multi-fault window; larger: page_fault1 of that size; {plan.FaultSeconds.ToString(c)} s per point and side, munmap included)");
                    Console.WriteLine($"  {"working set",12}  {"emulated ns",14}  {"host ns",14}  {"emu/host",8}  {"emu growth",10}  {"host growth",11}  {"zeroing ns",10}  {"emu - zeroing",13}");
                    PrintRows(s, x => Size.Format((ulong)x), "F1", growth: true,
                        extra: p => p.Zeroing is { } z ? $"  {z,10:F1}  {p.Emulated - z,13:F1}" : "");
                    Console.WriteLine("  zeroing: one thread zeroing 4 KiB frames over a pre-touched buffer of the working set's size (multi-fault's ceiling)");
                    if (s.Points.Count > 1 && s.Points[0].Host is { } h0 && s.Points[^1].Host is { } hn)
                    {
                        double eg = s.Points[^1].Emulated / s.Points[0].Emulated, hg = hn / h0;
                        Console.WriteLine($"  growth {Size.Format((ulong)s.Points[0].X)} -> {Size.Format((ulong)s.Points[^1].X)}: emulated {eg:F2}x, host {hg:F2}x; emulated/host growth {eg / hg:F2}");
                        // The same growth in nanoseconds added per fault: a fixed cost the memory system adds
                        // (zeroing frames that are no longer in the cache) weighs on a fast fault's factor
                        // far more than on a slow one's.
                        string zeroing = s.Points[0].Zeroing is { } z0 && s.Points[^1].Zeroing is { } zn
                            ? $" (of which zeroing alone {zn - z0:+0.0;-0.0})" : "";
                        Console.WriteLine($"  added per fault {Size.Format((ulong)s.Points[0].X)} -> {Size.Format((ulong)s.Points[^1].X)}: emulated {s.Points[^1].Emulated - s.Points[0].Emulated:+0.0;-0.0} ns{zeroing}, host {hn - h0:+0.0;-0.0} ns");
                    }
                    break;
                case "mmap":
                    Console.WriteLine($"  mmap(NULL, 4 KiB, PROT_WRITE) + munmap against the VMAs already in the mm (one-page VMAs, alternately r-- and rw-, packed; median of {plan.MmapBatches} batches of {plan.MmapOps:N0})");
                    Console.WriteLine($"  {"VMAs",12}  {"emulated ns",14}  {"host ns",14}  {"emu/host",8}  {"emu growth",10}  {"host growth",11}");
                    PrintRows(s, x => x.ToString("N0", c), "F0", growth: true);
                    Console.WriteLine($"  vm.max_map_count: emulated {Mmap.MaxMapCount:N0}; host {(notes.HostMaxMapCount is { } m ? m.ToString("N0", c) : "n/a")}, whose mm also holds the runtime's {notes.HostOtherVmas:N0} mappings");
                    foreach ((long x, int built) in notes.HostMmapVmasBuilt.Where(kv => kv.Value != kv.Key))
                        Console.WriteLine($"  host at {x:N0}: the limit left room for {built:N0} VMAs of this series (+ {notes.HostOtherVmas:N0} of the runtime's)");
                    break;
                case "fork":
                    Console.WriteLine($"  fork against the populated size (4 KiB pages, child exits at once; median of {plan.ForkRepeat} forks)");
                    Console.WriteLine($"  {"populated",12}  {"emulated ms",14}  {"host ms",14}  {"emu/host",8}  {"emu ms/GiB",10}  {"host ms/GiB",11}");
                    foreach (Point p in s.Points)
                    {
                        double gib = p.X / (double)(1UL << 30);
                        Console.WriteLine($"  {Size.Format((ulong)p.X),12}  {p.Emulated,14:F3}  {Host(p, "F3")}  {Ratio(p)}  {p.Emulated / gib,10:F1}  {(p.Host is { } h ? (h / gib).ToString("F1", c) : "-"),11}");
                    }
                    PrintSlope(s);
                    break;
                case "fork-vmas":
                    Console.WriteLine($"  fork against the VMA count (one populated 4 KiB page per VMA, a one-page gap between; median of {plan.ForkRepeat} forks)");
                    Console.WriteLine($"  {"VMAs",12}  {"emulated ms",14}  {"host ms",14}  {"emu/host",8}  {"emu growth",10}  {"host growth",11}");
                    PrintRows(s, x => x.ToString("N0", c), "F3", growth: true);
                    Console.WriteLine($"  the host's mm also holds the runtime's {notes.HostForkOtherVmas:N0} mappings, which its fork copies too");
                    break;
                case "boot":
                    Console.WriteLine("  boot: new Kernel(arena), wall time (no host twin)");
                    foreach (Point p in s.Points) Console.WriteLine($"  {Size.Format((ulong)p.X),12}  {p.Emulated,11:F2} ms  emulated");
                    break;
                case "boot-rss":
                    Console.WriteLine("  boot memory: the process's RSS growth, the arena frames the boot takes, and what lies beyond the vmemmap (64 B per 4 KiB frame)");
                    Console.WriteLine($"  {"arena",12}  {"RSS growth",12}  {"arena frames",12}  {"vmemmap",10}  {"beyond arena",12}  {"beyond vmemmap",14}  {"% of arena",10}");
                    foreach (Point p in s.Points)
                    {
                        var b = notes.Boot[p.X];
                        long beyondVmemmap = b.RssGrowthBytes - b.VmemmapBytes;
                        Console.WriteLine($"  {Size.Format((ulong)p.X),12}  {Kb(b.RssGrowthBytes),12}  {Kb(b.ReservedBytes),12}  {Kb(b.VmemmapBytes),10}  {Kb(p.Emulated),12}  {Kb(beyondVmemmap),14}  {100.0 * beyondVmemmap / p.X,9:F3}%");
                    }
                    Console.WriteLine("  arena frames: those the boot writes (the vmemmap, the kernel page tables that map it, the zero page); beyond arena: VmRSS growth minus those");
                    Console.WriteLine("  (the per-CPU lists, counters, CPUs and their TLBs, the vmemmap's translation cache of 8 B per vmemmap page, the managed heap).");
                    break;
            }
        }
        foreach (string e in notes.HostErrors) Console.WriteLine($"  host kernel: not measured: {e}");
        Console.WriteLine();
    }

    private static string Kb(double bytes) => (bytes / 1024).ToString("N0", CultureInfo.InvariantCulture) + " kB";

    private static string Host(Point p, string format)
        => p.Host is { } h ? $"{h.ToString(format, CultureInfo.InvariantCulture),14}" : $"{"-",14}";

    private static string Ratio(Point p) => p.Host is { } h && h > 0 ? $"{p.Emulated / h,7:F2}x" : $"{"-",8}";

    private static void PrintRows(Series s, Func<long, string> x, string format, bool growth, Func<Point, string>? extra = null)
    {
        Point first = s.Points[0];
        foreach (Point p in s.Points)
        {
            string eg = growth ? $"{p.Emulated / first.Emulated,9:F2}x" : "";
            string hg = growth && p.Host is { } h && first.Host is { } h0 ? $"{h / h0,10:F2}x" : $"{"-",11}";
            Console.WriteLine($"  {x(p.X),12}  {p.Emulated.ToString(format, CultureInfo.InvariantCulture),14}  {Host(p, format)}  {Ratio(p)}  {eg}  {hg}{extra?.Invoke(p)}");
        }
    }

    private static void PrintSlope(Series s)
    {
        const double Gib = 1UL << 30;
        var (es, ei) = Fit([.. s.Points.Select(p => (p.X / Gib, p.Emulated))]);
        Console.Write($"  least-squares fit: emulated {es:F1} ms/GiB {ei:+0.00;-0.00} ms");
        if (s.Points.All(p => p.Host is not null))
        {
            var (hs, hi) = Fit([.. s.Points.Select(p => (p.X / Gib, p.Host!.Value))]);
            Console.Write($"; host {hs:F1} ms/GiB {hi:+0.00;-0.00} ms");
        }
        Console.WriteLine();
    }

    private static void Progress(string what)
    {
        if (!Console.IsErrorRedirected) Console.Error.Write($"\r  {what}...{new string(' ', Math.Max(0, 60 - what.Length))}");
    }

    private static void ClearProgress()
    {
        if (!Console.IsErrorRedirected) Console.Error.Write("\r" + new string(' ', 90) + "\r");
    }
}
