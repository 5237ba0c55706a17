using System.Globalization;
using System.Text;
using NativeMmu.Fuzz.Model;

namespace NativeMmu.Fuzz;

/// <summary>The operations of a system-fuzz program.</summary>
public enum SysOpKind
{
    Mmap,
    Munmap,
    Mprotect,
    Madvise,
    /// <summary>Cpu.Load (throws SegmentationFault: kind and address are compared).</summary>
    Load,
    /// <summary>Cpu.Store.</summary>
    Store,
    /// <summary>Cpu.TryLoad (returns the fault kind, no address).</summary>
    TryLoad,
    /// <summary>Cpu.TryStore.</summary>
    TryStore,
    /// <summary>Cpu.Read of a span longer than 16 bytes.</summary>
    Read,
    /// <summary>Cpu.Write of a span longer than 16 bytes.</summary>
    Write,
    /// <summary>fork; runs only when the emulator's Process has a Fork method.</summary>
    Fork,
    Exit,
    /// <summary>Process.Prctl (the COW PTE series' PR_SET_COW_PTE, or an option the kernel refuses).</summary>
    Prctl,
}

/// <summary>
/// An address operand: absolute (<see cref="Label"/> 0) or relative to the address an earlier mmap
/// returned (label N is the mmap that named itself mN). A label whose mmap failed or is not in the
/// program stands for 0. Arithmetic wraps at 2^64, as it does in C.
/// </summary>
public readonly record struct AddrExpr(int Label, ulong Offset)
{
    public static AddrExpr Absolute(ulong a) => new(0, a);
    public static AddrExpr Relative(int label, long offset) => new(label, unchecked((ulong)offset));

    public ulong Resolve(IReadOnlyDictionary<int, ulong> labels)
        => Label == 0 ? Offset : unchecked((labels.TryGetValue(Label, out ulong b) ? b : 0) + Offset);

    public override string ToString()
    {
        if (Label == 0) return Hex(Offset);
        long off = unchecked((long)Offset);
        if (off == 0) return $"m{Label}";
        return off > 0 ? $"m{Label}+{Hex((ulong)off)}" : $"m{Label}-{Hex(unchecked((ulong)-off))}";
    }

    internal static string Hex(ulong v) => "0x" + v.ToString("x", CultureInfo.InvariantCulture);

    public static AddrExpr Parse(string s)
    {
        if (s.StartsWith('m'))
        {
            int i = 1;
            while (i < s.Length && char.IsAsciiDigit(s[i])) i++;
            int label = int.Parse(s.AsSpan(1, i - 1), CultureInfo.InvariantCulture);
            if (label <= 0) throw new FormatException($"bad label in '{s}'");
            if (i == s.Length) return new(label, 0);
            char sign = s[i];
            if (sign is not ('+' or '-')) throw new FormatException($"bad address '{s}'");
            ulong mag = SysProgram.ParseNumber(s[(i + 1)..]);
            return new(label, sign == '+' ? mag : unchecked(0 - mag));
        }
        return new(0, SysProgram.ParseNumber(s));
    }
}

/// <summary>
/// One operation. Which fields matter depends on <see cref="Kind"/>: mmap uses Label (the name it gives
/// its result), Addr, Length, Prot and Flags (MAP_* bits beyond MAP_PRIVATE | MAP_ANONYMOUS); munmap
/// Addr and Length; mprotect Addr, Length and Prot; madvise Addr, Length and Advice; loads Addr and
/// Width; stores Addr, Width and Value; spans Addr, Length and (for writes) Value as the pattern; fork
/// Child; prctl Option and Value as arg2 (arg3 to arg5 are 0).
/// </summary>
public sealed record SysOp
{
    public SysOpKind Kind { get; init; }
    public int Proc { get; init; }
    public AddrExpr Addr { get; init; }
    public ulong Length { get; init; }
    public int Width { get; init; }
    public ulong Value { get; init; }
    public int Prot { get; init; }
    public int Flags { get; init; }
    public int Advice { get; init; }
    public int Label { get; init; }
    public int Child { get; init; }
    public int Option { get; init; }

    /// <summary>Byte i of a span write with pattern v: (v + 131·i) mod 256.</summary>
    public static byte PatternByte(ulong pattern, int i) => unchecked((byte)(pattern + (ulong)i * 131));

    public override string ToString()
    {
        string p = $"p{Proc}";
        return Kind switch
        {
            SysOpKind.Mmap => $"{p} mmap m{Label} {Addr} {AddrExpr.Hex(Length)} {ProtText(Prot)} {FlagsText(Flags)}",
            SysOpKind.Munmap => $"{p} munmap {Addr} {AddrExpr.Hex(Length)}",
            SysOpKind.Mprotect => $"{p} mprotect {Addr} {AddrExpr.Hex(Length)} {ProtText(Prot)}",
            SysOpKind.Madvise => $"{p} madvise {Addr} {AddrExpr.Hex(Length)} {Linux.AdviceName(Advice)}",
            SysOpKind.Load => $"{p} load{Width} {Addr}",
            SysOpKind.TryLoad => $"{p} tryload{Width} {Addr}",
            SysOpKind.Store => $"{p} store{Width} {Addr} {AddrExpr.Hex(Value)}",
            SysOpKind.TryStore => $"{p} trystore{Width} {Addr} {AddrExpr.Hex(Value)}",
            SysOpKind.Read => $"{p} read {Addr} {AddrExpr.Hex(Length)}",
            SysOpKind.Write => $"{p} write {Addr} {AddrExpr.Hex(Length)} {AddrExpr.Hex(Value & 0xff)}",
            SysOpKind.Fork => $"{p} fork p{Child}",
            SysOpKind.Exit => $"{p} exit",
            SysOpKind.Prctl => $"{p} prctl {PrctlOptionText(Option)}{(Value != 0 ? " " + AddrExpr.Hex(Value) : "")}",
            _ => throw new InvalidOperationException(Kind.ToString()),
        };
    }

    /// <summary>"cow_pte" for PR_SET_COW_PTE, otherwise the option's number in hex.</summary>
    public static string PrctlOptionText(int option)
        => option == Linux.PrSetCowPte ? "cow_pte" : AddrExpr.Hex((uint)option);

    public static int ParsePrctlOption(string s)
        => s == "cow_pte" ? Linux.PrSetCowPte : s.StartsWith("0x", StringComparison.OrdinalIgnoreCase) ? unchecked((int)checked((uint)SysProgram.ParseNumber(s))) : throw new FormatException($"bad prctl option '{s}'");

    /// <summary>"rwx" with '-' for missing bits, or hex when bits beyond R/W/X are set.</summary>
    public static string ProtText(int prot)
        => (prot & ~Linux.ProtAccess) == 0 ? ModelProcess.ProtString(prot) : AddrExpr.Hex((uint)prot);

    public static int ParseProt(string s)
    {
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase)) return (int)SysProgram.ParseNumber(s);
        if (s.Length != 3) throw new FormatException($"bad prot '{s}'");
        int prot = 0;
        if (s[0] == 'r') prot |= Linux.ProtRead; else if (s[0] != '-') throw new FormatException($"bad prot '{s}'");
        if (s[1] == 'w') prot |= Linux.ProtWrite; else if (s[1] != '-') throw new FormatException($"bad prot '{s}'");
        if (s[2] == 'x') prot |= Linux.ProtExec; else if (s[2] != '-') throw new FormatException($"bad prot '{s}'");
        return prot;
    }

    private static readonly (int Bit, string Name)[] FlagNames =
    [
        (Linux.MapFixed, "fixed"), (Linux.MapFixedNoReplace, "noreplace"), (Linux.MapPopulate, "populate"), (Linux.MapNonBlock, "nonblock"),
        (Linux.MapLocked, "locked"), (Linux.MapNoReserve, "noreserve"), (Linux.MapStack, "stack"), (Linux.MapGrowsDown, "growsdown"),
        (Linux.MapDenyWrite, "denywrite"), (Linux.MapExecutable, "executable"), (Linux.MapSync, "sync"),
    ];

    /// <summary>Comma-separated flag names (fixed, noreplace, populate, nonblock, locked, noreserve, stack, growsdown, denywrite, executable, sync), "-" for none; other bits in hex.</summary>
    public static string FlagsText(int flags)
    {
        if (flags == 0) return "-";
        var parts = new List<string>();
        int rest = flags;
        foreach (var (bit, name) in FlagNames)
        {
            if ((flags & bit) != 0) { parts.Add(name); rest &= ~bit; }
        }
        if (rest != 0) parts.Add(AddrExpr.Hex((uint)rest));
        return string.Join(',', parts);
    }

    public static int ParseFlags(string s)
    {
        if (s == "-") return 0;
        int flags = 0;
        foreach (string part in s.Split(','))
        {
            int bit = 0;
            foreach (var (b, n) in FlagNames) if (n == part) bit = b;
            if (bit == 0) bit = (int)SysProgram.ParseNumber(part);
            flags |= bit;
        }
        return flags;
    }
}

/// <summary>
/// A system-fuzz program: how many processes exist at the start (p0..pN-1) and the operations.
/// </summary>
/// <remarks>
/// <para>Text format (what the fuzzer prints and <c>--replay</c> reads), one item per line; '#' starts
/// a comment, blank lines are ignored:</para>
/// <code>
/// seed 0x5eed            (the program's generator seed; informational)
/// processes 2            (p0 and p1 exist at the start)
/// cowpte lazy            (optional: the kernel boots with KernelConfig.CowPte Lazy; "cowpte eager" for
///                        Eager, "... all" adds CowPteAllProcesses; without the line CowPte is Off)
/// p0 mmap m1 0x0 0x3000 rw- populate      mmap(addr, len, prot, MAP_PRIVATE|MAP_ANONYMOUS|flags), result named m1
/// p0 mmap m2 m1+0x1000 0x1000 r-- fixed   flags: '-' or a comma list of fixed, noreplace, populate, nonblock,
///                                         locked, noreserve, stack, growsdown, denywrite, executable, sync
/// p0 munmap m1+0x2000 0x1000
/// p0 mprotect m1 0x2000 r--               prot: rwx letters with '-' for missing bits, or hex (e.g. 0xb)
/// p0 madvise m1 0x3000 dontneed           advice: MADV_ name in lower case without the prefix, or a number
/// p0 load8 m1+0xffc                       load1/2/4/8: Cpu.Load; tryload1..8: Cpu.TryLoad
/// p0 store4 m1+0x10 0xdeadbeef            store1..8: Cpu.Store; trystore1..8: Cpu.TryStore
/// p0 read m1+0x10 0x2000                  Cpu.Read of 0x2000 bytes
/// p0 write m1+0x10 0x2000 0xab            Cpu.Write; byte i is (0xab + 131*i) mod 256
/// p0 fork p2                              the child gets the next free process number
/// p0 prctl cow_pte                        prctl(PR_SET_COW_PTE, 0, 0, 0, 0); an option may be a hex
/// p0 prctl cow_pte 0x1                    number, and a second operand is arg2
/// p1 exit
/// </code>
/// <para>Addresses are hex numbers, or mN / mN+0x.. / mN-0x.. relative to the address the mmap named mN
/// returned (0 when it failed or is absent). Operations on a process that does not exist or has exited
/// are skipped, as are accesses that would reach past the canonical user half (2^47) and forks when
/// the emulator cannot fork.</para>
/// </remarks>
public sealed record SysProgram(ulong Seed, int Processes, IReadOnlyList<SysOp> Ops)
{
    public const int MaxProcesses = 16;

    /// <summary>The kernel's copy-on-write page tables (KernelConfig.CowPte) for this program: Off unless the program says so.</summary>
    public CowPteMode CowPte { get; init; } = CowPteMode.Off;

    /// <summary>KernelConfig.CowPteAllProcesses (only with <see cref="CowPte"/> on).</summary>
    public bool CowPteAllProcesses { get; init; }

    /// <summary>The config header line ("cowpte lazy", "cowpte eager all"), or null for CowPte Off.</summary>
    public string? ConfigLine => CowPte == CowPteMode.Off ? null
        : "cowpte " + (CowPte == CowPteMode.Lazy ? "lazy" : "eager") + (CowPteAllProcesses ? " all" : "");

    public SysProgram WithOps(IReadOnlyList<SysOp> ops) => this with { Ops = ops };

    public override string ToString()
    {
        var sb = new StringBuilder();
        sb.Append("# nativemmu fuzz system program (replay with: nativemmu fuzz system --replay FILE)\n");
        sb.Append("seed ").Append(AddrExpr.Hex(Seed)).Append('\n');
        sb.Append("processes ").Append(Processes.ToString(CultureInfo.InvariantCulture)).Append('\n');
        if (ConfigLine is { } config) sb.Append(config).Append('\n');
        foreach (SysOp op in Ops) sb.Append(op).Append('\n');
        return sb.ToString();
    }

    internal static ulong ParseNumber(string s)
    {
        if (s.StartsWith("0x", StringComparison.OrdinalIgnoreCase))
            return ulong.Parse(s.AsSpan(2), NumberStyles.AllowHexSpecifier, CultureInfo.InvariantCulture);
        return ulong.Parse(s, NumberStyles.None, CultureInfo.InvariantCulture);
    }

    private static int ParseProc(string s)
    {
        if (s.Length < 2 || s[0] != 'p') throw new FormatException($"expected a process like p0, got '{s}'");
        int p = int.Parse(s.AsSpan(1), NumberStyles.None, CultureInfo.InvariantCulture);
        if (p >= MaxProcesses) throw new FormatException($"process p{p}: at most {MaxProcesses} processes");
        return p;
    }

    public static SysProgram Parse(string text)
    {
        ulong seed = 0;
        int processes = 1;
        CowPteMode cowPte = CowPteMode.Off;
        bool cowPteAll = false;
        var ops = new List<SysOp>();
        int lineNo = 0;
        foreach (string raw in text.Split('\n'))
        {
            lineNo++;
            string line = raw;
            int hash = line.IndexOf('#');
            if (hash >= 0) line = line[..hash];
            string[] t = line.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries);
            if (t.Length == 0) continue;
            try
            {
                if (t[0] == "seed") { seed = ParseNumber(t[1]); continue; }
                if (t[0] == "processes")
                {
                    processes = int.Parse(t[1], CultureInfo.InvariantCulture);
                    if (processes is < 1 or > MaxProcesses) throw new FormatException($"processes must be 1..{MaxProcesses}");
                    continue;
                }
                if (t[0] == "cowpte")
                {
                    (cowPte, cowPteAll) = (t.Length, t[1]) switch
                    {
                        (2, "off") => (CowPteMode.Off, false),
                        (2 or 3, "lazy") => (CowPteMode.Lazy, t.Length == 3),
                        (2 or 3, "eager") => (CowPteMode.Eager, t.Length == 3),
                        _ => throw new FormatException("cowpte takes off, lazy or eager, and for the last two optionally all"),
                    };
                    if (t.Length == 3 && t[2] != "all") throw new FormatException($"cowpte: '{t[2]}' is not 'all'");
                    continue;
                }
                ops.Add(ParseOp(t));
            }
            catch (Exception e) when (e is FormatException or OverflowException or IndexOutOfRangeException or ArgumentException)
            {
                throw new FormatException($"line {lineNo}: {e.Message}: {raw.Trim()}", e);
            }
        }
        return new SysProgram(seed, processes, ops) { CowPte = cowPte, CowPteAllProcesses = cowPteAll };
    }

    private static SysOp ParseOp(string[] t)
    {
        int proc = ParseProc(t[0]);
        string verb = t[1];
        void Need(int n)
        {
            if (t.Length != n) throw new FormatException($"'{verb}' takes {n - 2} operand(s)");
        }
        switch (verb)
        {
            case "mmap":
                Need(7);
                if (!t[2].StartsWith('m')) throw new FormatException("mmap names its result mN");
                return new SysOp
                {
                    Kind = SysOpKind.Mmap, Proc = proc, Label = int.Parse(t[2].AsSpan(1), CultureInfo.InvariantCulture),
                    Addr = AddrExpr.Parse(t[3]), Length = ParseNumber(t[4]), Prot = SysOp.ParseProt(t[5]), Flags = SysOp.ParseFlags(t[6]),
                };
            case "munmap":
                Need(4);
                return new SysOp { Kind = SysOpKind.Munmap, Proc = proc, Addr = AddrExpr.Parse(t[2]), Length = ParseNumber(t[3]) };
            case "mprotect":
                Need(5);
                return new SysOp { Kind = SysOpKind.Mprotect, Proc = proc, Addr = AddrExpr.Parse(t[2]), Length = ParseNumber(t[3]), Prot = SysOp.ParseProt(t[4]) };
            case "madvise":
                Need(5);
                if (!Linux.TryParseAdvice(t[4], out int advice)) throw new FormatException($"bad advice '{t[4]}'");
                return new SysOp { Kind = SysOpKind.Madvise, Proc = proc, Addr = AddrExpr.Parse(t[2]), Length = ParseNumber(t[3]), Advice = advice };
            case "read":
                Need(4);
                return new SysOp { Kind = SysOpKind.Read, Proc = proc, Addr = AddrExpr.Parse(t[2]), Length = CheckSpan(ParseNumber(t[3])) };
            case "write":
                Need(5);
                return new SysOp { Kind = SysOpKind.Write, Proc = proc, Addr = AddrExpr.Parse(t[2]), Length = CheckSpan(ParseNumber(t[3])), Value = ParseNumber(t[4]) & 0xff };
            case "fork":
                Need(3);
                return new SysOp { Kind = SysOpKind.Fork, Proc = proc, Child = ParseProc(t[2]) };
            case "exit":
                Need(2);
                return new SysOp { Kind = SysOpKind.Exit, Proc = proc };
            case "prctl":
                if (t.Length is not (3 or 4)) throw new FormatException("'prctl' takes an option and optionally arg2");
                return new SysOp { Kind = SysOpKind.Prctl, Proc = proc, Option = SysOp.ParsePrctlOption(t[2]), Value = t.Length == 4 ? ParseNumber(t[3]) : 0 };
        }
        foreach (var (prefix, kind, store) in new[] { ("tryload", SysOpKind.TryLoad, false), ("trystore", SysOpKind.TryStore, true), ("load", SysOpKind.Load, false), ("store", SysOpKind.Store, true) })
        {
            if (!verb.StartsWith(prefix, StringComparison.Ordinal)) continue;
            int width = int.Parse(verb.AsSpan(prefix.Length), NumberStyles.None, CultureInfo.InvariantCulture);
            if (width is not (1 or 2 or 4 or 8)) throw new FormatException($"width must be 1, 2, 4 or 8: '{verb}'");
            Need(store ? 4 : 3);
            ulong value = store ? ParseNumber(t[3]) : 0;
            if (width < 8) value &= (1UL << (8 * width)) - 1;
            return new SysOp { Kind = kind, Proc = proc, Width = width, Addr = AddrExpr.Parse(t[2]), Value = value };
        }
        throw new FormatException($"unknown operation '{verb}'");
    }

    private static ulong CheckSpan(ulong len)
        => len is > 16 and <= (1 << 20) ? len : throw new FormatException("a span is 17 bytes to 1 MiB long");
}
