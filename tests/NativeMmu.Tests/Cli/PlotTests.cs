using System.Buffers.Binary;
using System.Xml.Linq;
using NativeMmu.Cli.Commands;
using NativeMmu.Cli.Plots;

namespace NativeMmu.Tests.Cli;

/// <summary>Every --plot writes a PNG or an SVG of the figure's size with the plot drawn in it.</summary>
[TestFixture]
public sealed class PlotTests
{
    private string _dir = null!;

    [SetUp]
    public void SetUp() => _dir = Directory.CreateTempSubdirectory("nativemmu-plots-").FullName;

    [TearDown]
    public void TearDown() => Directory.Delete(_dir, recursive: true);

    private static readonly MultiFaultCommand.Report MultiFaultReport = new("multi-fault", "multi-fault", 10,
        [new(1, 445e6, 37.9e6, 1.08e9), new(2, 750e6, 57.9e6, 1.97e9)]);

    private static readonly PtReclaimCommand.Report PtReclaimReport = new("pt-reclaim", 50UL << 30, 25600,
        [new("off", 0, 102608, 0, 0, 2.8, 1), new("sync", 0, 208, 0, 0, 2.1, 1)]);

    private static readonly Dictionary<string, IReadOnlyList<(int, long)>> PtReclaimSeries = new()
    {
        ["off"] = [(0, 0), (12800, 51304), (25600, 102608)],
        ["sync"] = [(0, 0), (12800, 208), (25600, 208)],
    };

    private static readonly MthpReuseCommand.Report MthpReport = new("mthp-reuse", 1UL << 20, 64UL << 10,
    [
        new("copy", new(1, 1, 0, 0), new(256, 256, 0, 0)),
        new("subpage", new(1, 0, 1, 0), new(256, 0, 256, 0)),
        new("whole", new(1, 0, 1, 0), new(16, 0, 16, 0)),
    ]);

    private static readonly ScalingCommand.Report ScalingReport = new("scaling",
    [
        new("fault", "ns/fault", [new(2L << 20, 170, 1900), new(128L << 20, 190, 2000), new(8L << 30, 240, 2300)]),
        new("mmap", "ns/(mmap+munmap)", [new(10, 1200, 2500), new(65_000, 1250, 2600)]),
        new("boot", "ms", [new(1L << 30, 40, null), new(16L << 30, 700, null)]),
    ]);

    private static IEnumerable<TestCaseData> Figures()
    {
        foreach (string ext in new[] { "png", "svg" })
        {
            yield return new TestCaseData((Action<string>)(p => CommandPlots.MultiFault(MultiFaultReport, p)), ext, "multi-fault").SetArgDisplayNames("multi-fault", ext);
            yield return new TestCaseData((Action<string>)(p => CommandPlots.PtReclaim(PtReclaimReport, PtReclaimSeries, p)), ext, "pt-reclaim").SetArgDisplayNames("pt-reclaim", ext);
            yield return new TestCaseData((Action<string>)(p => CommandPlots.Fork([("emulated, copy", 1UL << 30, 20.5), ("host kernel", 1UL << 30, 60.1)], p)), ext, "fork").SetArgDisplayNames("fork", ext);
            yield return new TestCaseData((Action<string>)(p => CommandPlots.MthpReuse(MthpReport, p)), ext, "mthp-reuse").SetArgDisplayNames("mthp-reuse", ext);
            yield return new TestCaseData((Action<string>)(p => CommandPlots.Scaling(ScalingReport, p)), ext, "scaling").SetArgDisplayNames("scaling", ext);
        }
    }

    [TestCaseSource(nameof(Figures))]
    public void A_plot_is_written_at_the_figure_size_with_its_title_drawn(Action<string> draw, string ext, string title)
    {
        string path = Path.Combine(_dir, $"{title}.{ext}");
        draw(path);
        Assert.That(File.Exists(path), Is.True, "--plot writes the file it was given");
        if (ext == "png") AssertPng(path);
        else AssertSvg(path, title);
    }

    private static void AssertPng(string path)
    {
        byte[] png = File.ReadAllBytes(path);
        Assert.That(png.AsSpan(0, 8).ToArray(), Is.EqualTo(new byte[] { 0x89, (byte)'P', (byte)'N', (byte)'G', 0x0d, 0x0a, 0x1a, 0x0a }), "a PNG signature");
        Assert.That(System.Text.Encoding.ASCII.GetString(png, 12, 4), Is.EqualTo("IHDR"), "the first chunk is the header");
        Assert.That(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(16)), Is.EqualTo(Figure.Width));
        Assert.That(BinaryPrimitives.ReadInt32BigEndian(png.AsSpan(20)), Is.EqualTo(Figure.Height));
        // A blank 960x600 canvas compresses to a few hundred bytes; axes, ticks, lines and text take tens of kB.
        Assert.That(png.Length, Is.GreaterThan(15_000), "the image holds a drawn plot, not an empty canvas");
    }

    private static void AssertSvg(string path, string title)
    {
        XDocument svg = XDocument.Load(path);
        Assert.That(svg.Root!.Name.LocalName, Is.EqualTo("svg"));
        Assert.That((string?)svg.Root.Attribute("width"), Does.StartWith(Figure.Width.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That((string?)svg.Root.Attribute("height"), Does.StartWith(Figure.Height.ToString(System.Globalization.CultureInfo.InvariantCulture)));
        Assert.That(svg.Descendants().Count(e => e.Name.LocalName is "path" or "line" or "rect" or "polyline"), Is.GreaterThan(20), "axes, grid and the data are drawn");
        Assert.That(svg.Descendants().Where(e => e.Name.LocalName == "text").Select(e => e.Value), Has.Some.Contains(title), "the title is text in the SVG");
        Assert.That(svg.Descendants().Where(e => e.Name.LocalName == "text").Select(e => e.Value), Has.Some.Contains(DateTime.UtcNow.ToString("yyyy-MM-dd", System.Globalization.CultureInfo.InvariantCulture)), "the footnote dates the figure");
    }

    [Test]
    public void Multi_fault_with_plot_draws_the_points_it_measured()
    {
        string path = Path.Combine(_dir, "run.png");
        int exit = MultiFaultCommand.Run([1], 0.2, "multi-fault", noHost: true, json: true, noCeiling: true, plotPath: path);
        Assert.That(exit, Is.Zero);
        AssertPng(path);
    }

    [Test]
    public void A_plot_name_without_png_or_svg_is_refused_before_anything_is_measured()
        => Assert.That(() => MultiFaultCommand.Run([1], 30, "multi-fault", noHost: true, json: true, noCeiling: true, plotPath: Path.Combine(_dir, "run.jpg")),
            Throws.ArgumentException.With.Message.Contains(".png or .svg"));
}
