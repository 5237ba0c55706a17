using System.Globalization;
using ScottPlot;

namespace NativeMmu.Cli.Plots;

/// <summary>
/// What every picture the commands draw has in common: one size, labelled axes, a legend, the machine and
/// the date in a footnote, and the file format taken from the name (.png or .svg).
/// </summary>
public static class Figure
{
    public const int Width = 960;
    public const int Height = 600;

    /// <summary>A plot with its title, axis labels and the footnote naming this machine and today.</summary>
    public static Plot Create(string title, string xLabel, string yLabel)
    {
        var plot = new Plot();
        plot.Title(title);
        plot.XLabel(xLabel);
        plot.YLabel(yLabel);
        plot.Axes.AddPanel(new FootnotePanel(Footnote()));
        return plot;
    }

    /// <summary>Checks the name before a run spends minutes measuring: the extension picks the format.</summary>
    public static void ValidatePath(string path)
    {
        string ext = Path.GetExtension(path).ToLowerInvariant();
        if (ext is not (".png" or ".svg")) throw new ArgumentException($"--plot {path}: the file name must end in .png or .svg");
    }

    /// <summary>Writes the plot to <paramref name="path"/> as PNG or SVG and says where on stderr.</summary>
    public static void Save(Plot plot, string path)
    {
        ValidatePath(path);
        plot.ShowLegend(Alignment.UpperLeft);
        if (Path.GetExtension(path).Equals(".svg", StringComparison.OrdinalIgnoreCase)) plot.SaveSvg(path, Width, Height);
        else plot.SavePng(path, Width, Height);
        Console.Error.WriteLine($"plot written to {path}");
    }

    /// <summary>Tick labels in millions for rates of the order of 10^8 per minute.</summary>
    public static void Millions(IAxis axis)
        => axis.TickGenerator = new ScottPlot.TickGenerators.NumericAutomatic { LabelFormatter = v => (v / 1e6).ToString("N0", CultureInfo.InvariantCulture) + " M" };

    /// <summary>Categorical ticks: the labels at 1, 2, 3, ...</summary>
    public static void Categories(IAxis axis, IReadOnlyList<string> labels)
        => axis.SetTicks([.. Enumerable.Range(1, labels.Count).Select(i => (double)i)], [.. labels]);

    /// <summary>"CPU model, N CPUs, Linux release · date (UTC)", from /proc where it can be read.</summary>
    public static string Footnote()
    {
        string cpu = ReadFirst("/proc/cpuinfo", "model name") ?? System.Runtime.InteropServices.RuntimeInformation.ProcessArchitecture.ToString();
        string kernel = File.Exists("/proc/sys/kernel/osrelease") ? "Linux " + File.ReadAllText("/proc/sys/kernel/osrelease").Trim() : Environment.OSVersion.ToString();
        return $"{cpu}, {Environment.ProcessorCount} CPUs, {kernel} · {DateTime.UtcNow.ToString("yyyy-MM-dd", CultureInfo.InvariantCulture)}";
    }

    private static string? ReadFirst(string file, string key)
    {
        if (!File.Exists(file)) return null;
        foreach (string line in File.ReadLines(file))
        {
            int colon = line.IndexOf(':');
            if (colon > 0 && line[..colon].Trim() == key) return line[(colon + 1)..].Trim();
        }
        return null;
    }

    /// <summary>A line of small text under the plot, right-aligned: ScottPlot's title panel always sits on top.</summary>
    private sealed class FootnotePanel(string text) : IPanel
    {
        private readonly LabelStyle _label = new() { Text = text, FontSize = 11, ForeColor = Colors.Gray, Alignment = Alignment.LowerRight };

        public bool IsVisible { get; set; } = true;
        public Edge Edge => Edge.Bottom;
        public bool ShowDebugInformation { get; set; }
        public float MinimumSize { get; set; }
        public float MaximumSize { get; set; } = float.MaxValue;

        public float Measure(Paint paint) => _label.Measure(_label.Text, paint).Height + 8;

        public PixelRect GetPanelRect(PixelRect dataRect, float size, float offset, Paint paint)
            => new(left: dataRect.Left, right: dataRect.Right, bottom: dataRect.Bottom + offset + size, top: dataRect.Bottom + offset);

        public void Render(RenderPack rp, float size, float offset)
        {
            PixelRect rect = GetPanelRect(rp.DataRect, size, offset, rp.Paint);
            _label.Render(rp.Canvas, new Pixel(rect.Right, rect.Bottom), rp.Paint);
        }
    }
}
