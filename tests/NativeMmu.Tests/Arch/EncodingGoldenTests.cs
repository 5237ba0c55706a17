using System.Globalization;
using NativeMmu.Arch.X86;
using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Oracle;

namespace NativeMmu.Tests.Arch;

/// <summary>The hand-checked table in TestData/encodings-golden.txt, against production and oracle alike.</summary>
public class EncodingGoldenTests
{
    private static string GoldenPath => Path.Combine(AppContext.BaseDirectory, "TestData", "encodings-golden.txt");

    public static IEnumerable<TestCaseData> Cases()
    {
        string[] lines = File.ReadAllLines(GoldenPath);
        for (int i = 0; i < lines.Length; i++)
        {
            string text = StripComment(lines[i]);
            if (text.Length == 0)
                continue;
            yield return new TestCaseData(i + 1, text).SetName($"Golden line {i + 1}: {text}");
        }
    }

    [Test]
    public void The_golden_table_has_about_thirty_cases_or_more()
        => Assert.That(Cases().Count(), Is.GreaterThanOrEqualTo(30));

    [TestCaseSource(nameof(Cases))]
    public void Golden_case_holds_for_production_and_oracle(int line, string text)
    {
        string[] halves = text.Split("=>", StringSplitOptions.TrimEntries);
        Assert.That(halves, Has.Length.EqualTo(2), $"line {line}: expected '<level> <helper> [args] => <value>'");
        ulong expected = ParseNumber(halves[1]);
        string[] words = halves[0].Split(' ', StringSplitOptions.RemoveEmptyEntries);
        Assert.That(words, Has.Length.GreaterThanOrEqualTo(2), $"line {line}: missing helper");

        if (words[0] == "const")
        {
            (ulong productionConstant, ulong oracleConstant) = Constant(words[1]);
            Assert.Multiple(() =>
            {
                Assert.That(productionConstant, Is.EqualTo(expected), $"production {words[1]}");
                Assert.That(oracleConstant, Is.EqualTo(expected), $"oracle {words[1]}");
            });
            return;
        }

        Assert.That(FuzzCatalog.TryParseLevel(words[0], out FuzzLevel level), $"line {line}: unknown level {words[0]}");
        var args = new Dictionary<string, ulong>();
        foreach (string word in words.Skip(2))
        {
            string[] kv = word.Split('=');
            Assert.That(kv, Has.Length.EqualTo(2), $"line {line}: bad argument '{word}'");
            args[kv[0]] = ParseNumber(kv[1]);
        }
        ulong v = args.GetValueOrDefault("v");

        string helper = words[1];
        if (FuzzCatalog.TryParseOp(level, helper, out FuzzOp op))
        {
            ReadOnlySpan<string> names = FuzzCatalog.ArgNames(op);
            ulong a = names.Length > 0 ? Required(args, names[0], line) : 0;
            ulong b = names.Length > 1 ? Required(args, names[1], line) : 0;
            Assert.Multiple(() =>
            {
                Assert.That(Hex(ProductionSubject.Instance.Apply(level, op, v, a, b)), Is.EqualTo(Hex(expected)), "production");
                Assert.That(Hex(OracleSubject.Reference.Apply(level, op, v, a, b)), Is.EqualTo(Hex(expected)), "oracle");
            });
            return;
        }

        int index = FuzzCatalog.Observables(level).ToList().IndexOf(helper);
        Assert.That(index, Is.GreaterThan(0), $"line {line}: '{helper}' is neither a helper nor an observable of {words[0]}");
        var production = new ulong[FuzzCatalog.MaxObservables];
        var oracle = new ulong[FuzzCatalog.MaxObservables];
        ProductionSubject.Instance.Observe(level, v, production);
        OracleSubject.Reference.Observe(level, v, oracle);
        Assert.Multiple(() =>
        {
            Assert.That(Hex(production[index]), Is.EqualTo(Hex(expected)), "production");
            Assert.That(Hex(oracle[index]), Is.EqualTo(Hex(expected)), "oracle");
        });
    }

    private static (ulong Production, ulong Oracle) Constant(string name) => name switch
    {
        "_PAGE_TABLE" => (PageTableBits.PageTable, OracleProt.PageTable),
        "_KERNPG_TABLE" => (PageTableBits.KernPgTable, OracleProt.KernPgTable),
        "PAGE_NONE" => (PgProt.PageNone, OracleProt.PageNone),
        "PTE_PFN_MASK" => (PageTableBits.PtePfnMask, OracleProt.PtePfnMask),
        "PHYSICAL_PMD_PAGE_MASK" => (PageTableBits.PhysicalPmdPageMask, OracleProt.PhysicalPmdPageMask),
        "PHYSICAL_PUD_PAGE_MASK" => (PageTableBits.PhysicalPudPageMask, OracleProt.PhysicalPudPageMask),
        "MAX_SWAPFILES" => (SwpEntry.MaxSwapfiles, OracleSwap.MaxSwapfiles),
        "SWP_HWPOISON" => (SwpEntry.SwpHwpoison, OracleSwap.Hwpoison),
        "SWP_MIGRATION_WRITE" => (SwpEntry.SwpMigrationWrite, OracleSwap.MigrationWrite),
        "SWP_DEVICE_EXCLUSIVE" => (SwpEntry.SwpDeviceExclusive, OracleSwap.DeviceExclusive),
        "SWP_PTE_MARKER" => (SwpEntry.SwpPteMarker, OracleSwap.PteMarker),
        "X86_PF_INSTR" => ((ulong)X86PfError.Instr, OraclePfError.Masks[4]),
        "X86_PF_SHSTK" => ((ulong)X86PfError.Shstk, OraclePfError.Masks[6]),
        "X86_PF_RMP" => ((ulong)X86PfError.Rmp, OraclePfError.Masks[8]),
        _ => throw new ArgumentException($"unknown constant {name}"),
    };

    private static ulong Required(Dictionary<string, ulong> args, string name, int line)
    {
        Assert.That(args.ContainsKey(name), $"line {line}: missing argument {name}");
        return args[name];
    }

    private static string StripComment(string line)
    {
        int hash = line.IndexOf('#');
        return (hash >= 0 ? line[..hash] : line).Trim();
    }

    private static ulong ParseNumber(string text)
    {
        string t = text.Trim().Replace("_", "");
        return t.StartsWith("0x", StringComparison.OrdinalIgnoreCase)
            ? ulong.Parse(t.AsSpan(2), NumberStyles.HexNumber, CultureInfo.InvariantCulture)
            : ulong.Parse(t, CultureInfo.InvariantCulture);
    }

    private static string Hex(ulong v) => $"0x{v:x16}";
}
