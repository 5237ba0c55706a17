using System.Globalization;
using System.Text;

namespace NativeMmu.Fuzz;

/// <summary>
/// One encoding-fuzz case: a level, a start value and the helper applications, in a text form that
/// <c>nativemmu fuzz encodings --replay FILE</c> runs again.
/// </summary>
/// <remarks>
/// <code>
/// # comment
/// level pmd                       pte, pmd, pud, p4d, pgd4, pgd5, swap or pferr
/// start 0x8000000000000025        the value the steps start from
/// step pmd_mkdirty()              one helper per line, as the fuzzer prints them
/// step pmd_modify(newprot=0x25)
/// step pfn_pmd(pfn=0x1, prot=0x63)
/// </code>
/// </remarks>
public sealed class EncodingCase
{
    internal EncodingCase(FuzzLevel level, ulong start, FuzzStep[] steps)
    {
        Level = level;
        Start = start;
        Steps = steps;
    }

    internal FuzzLevel Level { get; }
    internal FuzzStep[] Steps { get; }

    /// <summary>The level's name (pte, pmd, …).</summary>
    public string LevelName => FuzzCatalog.Name(Level);

    public ulong Start { get; }

    /// <summary>The steps as printed, e.g. <c>pmd_modify(newprot=0x25)</c>.</summary>
    public IReadOnlyList<string> StepTexts => Steps.Select(s => FuzzCatalog.Describe(Level, s)).ToArray();

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("# nativemmu fuzz encodings case (replay with: nativemmu fuzz encodings --replay FILE)\n");
        sb.Append("level ").Append(LevelName).Append('\n');
        sb.Append("start 0x").Append(Start.ToString("x16", CultureInfo.InvariantCulture)).Append('\n');
        foreach (FuzzStep s in Steps) sb.Append("step ").Append(FuzzCatalog.Describe(Level, s)).Append('\n');
        return sb.ToString();
    }

    public static EncodingCase Parse(string text)
    {
        FuzzLevel? level = null;
        ulong? start = null;
        var steps = new List<FuzzStep>();
        int lineNo = 0;
        foreach (string raw in text.Split('\n'))
        {
            lineNo++;
            string line = raw;
            int hash = line.IndexOf('#');
            if (hash >= 0) line = line[..hash];
            line = line.Trim();
            if (line.Length == 0) continue;
            try
            {
                int space = line.IndexOf(' ');
                string key = space < 0 ? line : line[..space];
                string rest = space < 0 ? "" : line[(space + 1)..].Trim();
                switch (key)
                {
                    case "level":
                        if (!FuzzCatalog.TryParseLevel(rest, out FuzzLevel l))
                            throw new FormatException($"unknown level '{rest}'; expected one of {string.Join(", ", FuzzCatalog.LevelNames)}");
                        level = l;
                        break;
                    case "start":
                        start = SysProgram.ParseNumber(rest);
                        break;
                    case "step":
                        if (level is not { } at) throw new FormatException("'level' must come before the steps");
                        steps.Add(ParseStep(at, rest));
                        break;
                    default:
                        throw new FormatException($"unknown item '{key}'");
                }
            }
            catch (Exception e) when (e is FormatException or OverflowException or ArgumentException)
            {
                throw new FormatException($"line {lineNo}: {e.Message}: {raw.Trim()}", e);
            }
        }
        if (level is null) throw new FormatException("no 'level' line");
        if (start is null) throw new FormatException("no 'start' line");
        return new EncodingCase(level.Value, start.Value, [.. steps]);
    }

    private static FuzzStep ParseStep(FuzzLevel level, string call)
    {
        int open = call.IndexOf('(');
        if (open < 0 || !call.EndsWith(')')) throw new FormatException($"expected name(args), got '{call}'");
        string name = call[..open].Trim();
        if (!FuzzCatalog.TryParseCall(level, name, out FuzzOp op))
            throw new FormatException($"'{name}' is not a helper of level {FuzzCatalog.Name(level)}");
        string inner = call[(open + 1)..^1].Trim();
        ReadOnlySpan<string> names = FuzzCatalog.ArgNames(op);
        string[] args = inner.Length == 0 ? [] : inner.Split(',', StringSplitOptions.TrimEntries);
        if (args.Length != names.Length) throw new FormatException($"{name} takes {names.Length} argument(s)");
        Span<ulong> values = stackalloc ulong[2];
        for (int i = 0; i < args.Length; i++)
        {
            int eq = args[i].IndexOf('=');
            string value = eq < 0 ? args[i] : args[i][(eq + 1)..];
            if (eq >= 0 && args[i][..eq].Trim() != names[i]) throw new FormatException($"argument {i + 1} of {name} is {names[i]}");
            values[i] = SysProgram.ParseNumber(value.Trim());
        }
        return new FuzzStep(op, values[0], values[1]);
    }
}
