using System.Globalization;
using NativeMmu.Cli.Commands;
using ScottPlot;

namespace NativeMmu.Cli.Plots;

/// <summary>The picture each command draws with --plot, from the same report its table and JSON come from.</summary>
public static class CommandPlots
{
    /// <summary>multi-fault: page faults per minute against the thread count, emulated, host kernel and ceiling.</summary>
    public static void MultiFault(MultiFaultCommand.Report r, string path)
    {
        Plot plot = Figure.Create($"{r.Loop}: page faults per minute ({r.Seconds.ToString(CultureInfo.InvariantCulture)} s per point)", "threads", "page faults per minute");
        double[] xs = [.. r.Points.Select(p => (double)p.Threads)];
        Line(plot, xs, [.. r.Points.Select(p => p.EmulatedPfPerMin)], "emulated kernel (pgfault)");
        if (r.Points.All(p => p.HostPfPerMin is not null))
            Line(plot, xs, [.. r.Points.Select(p => p.HostPfPerMin!.Value)], "host kernel (minor faults, getrusage)");
        if (r.Points.All(p => p.CeilingPfPerMin is not null))
            Line(plot, xs, [.. r.Points.Select(p => p.CeilingPfPerMin!.Value)], "ceiling (4 KiB frames zeroed)");
        plot.Axes.Bottom.SetTicks(xs, [.. r.Points.Select(p => p.Threads.ToString(CultureInfo.InvariantCulture))]);
        Figure.Millions(plot.Axes.Left);
        plot.Axes.SetLimitsY(0, MaxY(plot) * 1.15);
        Figure.Save(plot, path);
    }

    /// <summary>pt-reclaim: VmPTE against the iterations of the loop, one line per reclaim mode and the host.</summary>
    public static void PtReclaim(PtReclaimCommand.Report r, IReadOnlyDictionary<string, IReadOnlyList<(int Iteration, long VmpteKb)>> series, string path)
    {
        Plot plot = Figure.Create($"pt-reclaim: VmPTE while touching and MADV_DONTNEEDing 2 MiB windows of {Size.Format(r.VirtBytes)}", "iterations (2 MiB windows touched, then MADV_DONTNEED)", "VmPTE (kB)");
        foreach ((string mode, var points) in series)
        {
            double[] xs = [.. points.Select(p => (double)p.Iteration)], ys = [.. points.Select(p => (double)p.VmpteKb)];
            var line = plot.Add.Scatter(xs, ys);
            line.LegendText = PtReclaimLegend(mode);
            line.MarkerSize = 0;
            line.LineWidth = 2;
        }
        plot.Axes.SetLimitsY(0, MaxY(plot) * 1.15);
        Figure.Save(plot, path);
    }

    private static string PtReclaimLegend(string mode) => mode switch
    {
        "off" => "emulated, reclaim off (before 6.14)",
        "refcount" => "emulated, pte_refcount (2021 series)",
        "sync" => "emulated, CONFIG_PT_RECLAIM (6.14)",
        "host" => "host kernel",
        _ => mode,
    };

    /// <summary>
    /// fork: the median fork time against the populated size, per mode and for the host kernel, on log-log
    /// axes: the sizes are powers of two and the modes' times lie orders of magnitude apart, so a linear
    /// y axis would flatten the copy-on-write modes onto zero and a linear x axis bunch the small sizes.
    /// </summary>
    public static void Fork(IReadOnlyList<(string Series, ulong SizeBytes, double ForkMs)> rows, string path)
    {
        Plot plot = Figure.Create("fork: median time against the populated size (4 KiB pages; the child exits at once; log-log)", "populated anonymous memory", "fork time (ms)");
        static double X(ulong bytes) => Math.Log2(bytes / (double)(1UL << 20));
        static double Y(double ms) => Math.Log10(Math.Max(ms, 1e-4));
        foreach (var group in rows.GroupBy(r => r.Series))
            Line(plot, [.. group.Select(g => X(g.SizeBytes))], [.. group.Select(g => Y(g.ForkMs))], group.Key);
        var sizes = rows.Select(r => r.SizeBytes).Distinct().Order().ToArray();
        plot.Axes.Bottom.SetTicks([.. sizes.Select(X)], [.. sizes.Select(Size.Format)]);
        double lo = Math.Floor(rows.Min(r => Y(r.ForkMs))), hi = Math.Ceiling(rows.Max(r => Y(r.ForkMs)) + 0.05);
        var ticks = new ScottPlot.TickGenerators.NumericManual();
        for (double e = lo; e <= hi + 1e-9; e++)
        {
            ticks.AddMajor(e, Math.Pow(10, e).ToString("G", CultureInfo.InvariantCulture));
            if (e < hi) for (int k = 2; k <= 9; k++) ticks.AddMinor(e + Math.Log10(k));
        }
        plot.Axes.Left.TickGenerator = ticks;
        plot.Grid.MinorLineWidth = 1;
        double x0 = X(sizes[0]), x1 = X(sizes[^1]);
        double pad = sizes.Length == 1 ? 1 : (x1 - x0) * 0.08;
        plot.Axes.SetLimits(x0 - pad, x1 + pad, lo, hi + (hi - lo) * 0.35);
        Figure.Save(plot, path);
    }

    /// <summary>mthp-reuse: write faults, copies and reuses (pgreuse) of all writes, grouped by do_wp_page behaviour.</summary>
    public static void MthpReuse(MthpReuseCommand.Report r, string path)
    {
        var runs = r.Runs.Where(x => x.AllWrites is not null).ToList();
        Plot plot = Figure.Create($"mthp-reuse: write faults after fork on {Size.Format(r.FolioBytes)} mTHPs ({Size.Format(r.SizeBytes)} written)", "do_wp_page behaviour", "events (all writes)");
        (string Name, Func<MthpReuseCommand.Phase, long> Value)[] kinds =
            [("write faults", p => p.WpFaults), ("copies (wp_page_copy)", p => p.Copies), ("reuses (pgreuse)", p => p.Pgreuse)];
        var palette = new ScottPlot.Palettes.Category10();
        for (int k = 0; k < kinds.Length; k++)
        {
            var bars = runs.Select((run, i) => new Bar
            {
                Position = i + 1 + (k - 1) * 0.27,
                Value = kinds[k].Value(run.AllWrites!),
                Size = 0.25,
                FillColor = palette.GetColor(k),
            }).ToList();
            var plotted = plot.Add.Bars(bars);
            plotted.LegendText = kinds[k].Name;
        }
        Figure.Categories(plot.Axes.Bottom, [.. runs.Select(x => MthpLegend(x.Mode))]);
        plot.Axes.SetLimitsY(0, MaxY(plot) * 1.2);
        Figure.Save(plot, path);
    }

    private static string MthpLegend(string mode) => mode switch
    {
        "copy" => "copy (before 6.15)",
        "subpage" => "reuse subpage (6.15+)",
        "whole" => "reuse whole mTHP (2024 RFC)",
        "host" => "host kernel",
        _ => mode,
    };

    /// <summary>
    /// scaling: every series' growth against its work on log-log axes, each cost and each work divided by its
    /// first point's, so one figure holds series of different units: a line of slope 1 is linear growth, a flat
    /// line is a cost that does not grow. Emulated solid, host kernel dashed, in the series' colour.
    /// </summary>
    public static void Scaling(ScalingCommand.Report r, string path)
    {
        Plot plot = Figure.Create("scaling: each cost against its work, relative to the smallest point (log-log)", "work / work at the first point (working set, VMAs, populated size, arena)", "cost / cost at the first point");
        var palette = new ScottPlot.Palettes.Category10();
        int k = 0;
        double maxX = 1, maxY = 1, minY = 1;
        foreach (ScalingCommand.Series s in r.Series.Where(s => s.Points.Count > 1 && s.Name != "boot-rss"))
        {
            ScottPlot.Color color = palette.GetColor(k++);
            var p0 = s.Points[0];
            double[] xs = [.. s.Points.Select(p => Math.Log10(p.X / (double)p0.X))];
            double[] ys = [.. s.Points.Select(p => Math.Log10(p.Emulated / p0.Emulated))];
            var emu = plot.Add.Scatter(xs, ys);
            emu.LegendText = $"{s.Name} ({s.Unit}), emulated";
            emu.Color = color;
            emu.MarkerSize = 7;
            emu.LineWidth = 2;
            maxX = Math.Max(maxX, xs.Max());
            maxY = Math.Max(maxY, ys.Max());
            minY = Math.Min(minY, ys.Min());
            if (s.Points.All(p => p.Host is > 0) && p0.Host is { } h0)
            {
                double[] hy = [.. s.Points.Select(p => Math.Log10(p.Host!.Value / h0))];
                var host = plot.Add.Scatter(xs, hy);
                host.LegendText = $"{s.Name}, host kernel";
                host.Color = color;
                host.MarkerSize = 7;
                host.LineWidth = 2;
                host.LinePattern = LinePattern.Dashed;
                maxY = Math.Max(maxY, hy.Max());
                minY = Math.Min(minY, hy.Min());
            }
        }
        var ideal = plot.Add.Line(0, 0, Math.Ceiling(maxX), Math.Ceiling(maxX));
        ideal.LegendText = "linear growth (slope 1)";
        ideal.Color = Colors.Gray;
        ideal.LinePattern = LinePattern.Dotted;
        LogTicks(plot.Axes.Bottom, 0, Math.Ceiling(maxX));
        LogTicks(plot.Axes.Left, Math.Floor(Math.Min(0, minY)), Math.Ceiling(maxY));
        plot.Axes.SetLimits(-0.1, Math.Ceiling(maxX) + 0.1, Math.Floor(Math.Min(0, minY)) - 0.1, Math.Ceiling(maxY) + 0.1);
        Figure.Save(plot, path);
    }

    /// <summary>Ticks at the powers of ten between <paramref name="lo"/> and <paramref name="hi"/> (log10 units), labelled 1x, 10x, ...</summary>
    private static void LogTicks(IAxis axis, double lo, double hi)
    {
        var positions = new List<double>();
        var labels = new List<string>();
        for (double e = lo; e <= hi + 1e-9; e++)
        {
            positions.Add(e);
            labels.Add(Math.Pow(10, e).ToString("G", CultureInfo.InvariantCulture) + "x");
        }
        axis.SetTicks([.. positions], [.. labels]);
    }

    private static void Line(Plot plot, double[] xs, double[] ys, string legend)
    {
        var line = plot.Add.Scatter(xs, ys);
        line.LegendText = legend;
        line.MarkerSize = 8;
        line.LineWidth = 2;
    }

    private static double MaxY(Plot plot)
    {
        plot.Axes.AutoScale();
        double top = plot.Axes.GetLimits().Top;
        return double.IsFinite(top) && top > 0 ? top : 1;
    }
}
