using System.Reflection;
using BenchmarkDotNet.Attributes;
using BenchmarkDotNet.Columns;
using BenchmarkDotNet.Configs;
using BenchmarkDotNet.Diagnosers;
using BenchmarkDotNet.Exporters;
using BenchmarkDotNet.Exporters.Json;
using BenchmarkDotNet.Jobs;
using BenchmarkDotNet.Loggers;
using BenchmarkDotNet.Reports;
using BenchmarkDotNet.Validators;
using Perfolizer.Horology;

namespace NativeMmu.Benchmarks;

/// <summary>
/// The one configuration every benchmark runs under: allocation counts, GitHub Markdown and full JSON
/// reports, a Categories column, times in nanoseconds, and a short job sized for a small, noisy host.
/// </summary>
/// <remarks>
/// The short job is the default only: command-line job options still apply to it (--warmupCount,
/// --iterationCount, --launchCount, --inProcess, ...), and a job chosen with --job (short, medium, long,
/// dry, ...) replaces it.
/// </remarks>
public sealed class BenchConfig : ManualConfig
{
    /// <summary>The default job's id, as it appears in the Job column and the report file names.</summary>
    public const string QuickJobId = "Quick";

    public BenchConfig() : this([]) { }

    public BenchConfig(string[] args)
    {
        CategoryRule.ThrowIfAnyBenchmarkLacksCategory(typeof(BenchConfig).Assembly);

        AddLogger(ConsoleLogger.Default);
        AddColumnProvider(DefaultColumnProviders.Instance);
        AddColumn(CategoriesColumn.Default);
        AddAnalyser(DefaultConfig.Instance.GetAnalysers().ToArray());
        AddValidator(DefaultConfig.Instance.GetValidators().ToArray());
        AddValidator(CategoryRule.Instance);
        AddDiagnoser(MemoryDiagnoser.Default);
        AddExporter(MarkdownExporter.GitHub, JsonExporter.Full);
        WithSummaryStyle(SummaryStyle.Default.WithTimeUnit(TimeUnit.Nanosecond));

        if (!ChoosesJob(args))
            AddJob(Job.Default.WithWarmupCount(3).WithIterationCount(10).WithLaunchCount(1).WithId(QuickJobId).AsDefault());
    }

    /// <summary>Whether the command line picks a base job of its own (-j/--job), which then replaces the default.</summary>
    private static bool ChoosesJob(string[] args)
        => args.Any(a => a == "-j" || a.StartsWith("--job", StringComparison.OrdinalIgnoreCase));
}

/// <summary>Every benchmark carries a [BenchmarkCategory] (on the method or its class): reports are grouped and filtered by area.</summary>
public sealed class CategoryRule : IValidator
{
    public static readonly CategoryRule Instance = new();

    public bool TreatsWarningsAsErrors => true;

    public IEnumerable<ValidationError> Validate(ValidationParameters validationParameters)
        => validationParameters.Benchmarks
            .Where(b => b.Descriptor.Categories.Length == 0)
            .Select(b => new ValidationError(true, $"{b.Descriptor.DisplayInfo} has no [BenchmarkCategory]", b));

    /// <summary>Fails at startup, before anything runs, naming every [Benchmark] method without a category.</summary>
    public static void ThrowIfAnyBenchmarkLacksCategory(Assembly assembly)
    {
        string[] missing = assembly.GetTypes()
            .Where(t => t is { IsClass: true, IsAbstract: false })
            .SelectMany(t => t.GetMethods(BindingFlags.Public | BindingFlags.Instance)
                .Where(m => m.IsDefined(typeof(BenchmarkAttribute), inherit: true))
                .Where(m => !m.IsDefined(typeof(BenchmarkCategoryAttribute), inherit: true)
                            && !t.IsDefined(typeof(BenchmarkCategoryAttribute), inherit: true))
                .Select(m => $"{t.FullName}.{m.Name}"))
            .ToArray();
        if (missing.Length > 0)
            throw new InvalidOperationException("Every benchmark needs a [BenchmarkCategory]; missing on: " + string.Join(", ", missing));
    }
}
