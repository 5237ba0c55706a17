using NativeMmu.Fuzz.Model;

namespace NativeMmu.Fuzz;

/// <summary>SplitMix64: a small, fast generator whose sequence depends only on the seed.</summary>
internal struct SplitMix64(ulong seed) : IProgramChoices
{
    private ulong _state = seed;

    public ulong Next()
    {
        ulong z = unchecked(_state += 0x9E3779B97F4A7C15UL);
        z = unchecked((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9UL);
        z = unchecked((z ^ (z >> 27)) * 0x94D049BB133111EBUL);
        return z ^ (z >> 31);
    }

    /// <summary>Uniform in [0, n).</summary>
    public int Below(int n) => (int)(Next() % (ulong)n);
    public ulong Below(ulong n) => Next() % n;
    /// <summary>Uniform in [lo, hi].</summary>
    public int Range(int lo, int hi) => lo + Below(hi - lo + 1);
    public bool Chance(int percent) => Below(100) < percent;
    public T Pick<T>(IReadOnlyList<T> items) => items[Below(items.Count)];
    public readonly bool Exhausted => false;

    public static ulong Mix(ulong a, ulong b) => new SplitMix64(a ^ unchecked(b * 0xD1B54A32D192ED03UL)).Next();
}

/// <summary>
/// Random system-fuzz programs: 1-200 operations over 1-4 processes. Addresses are mostly relative to
/// earlier mappings (inside, at their edges, across page boundaries), sometimes in a fixed low zone,
/// near TASK_SIZE or wild; sizes are mostly a few pages, sometimes multiples of 2 MiB; arguments
/// include the invalid and edge values the errno rules are about. Memory use stays far below the
/// 64 MiB machine: MAP_POPULATE of writable memory is capped per program. With copy-on-write page
/// tables in the mix (fuzz system), a third of the programs boot with CowPte Lazy or Eager (some with
/// the all-processes switch); those call prctl(PR_SET_COW_PTE) before most of their forks and work on
/// parent and child after each fork, and prctl appears now and then in the others too (EINVAL).
/// </summary>
internal static class ProgramGenerator
{
    /// <summary>
    /// The program of a seed (what <c>fuzz system</c> runs, with <paramref name="hugetlb"/>: MAP_HUGETLB
    /// mappings in the mix, for a machine with a 2 MiB pool; with <paramref name="cowPte"/>: programs that
    /// boot with copy-on-write page tables, and prctl operations; without either, the same programs as
    /// before them, which fuzz host runs, as mainline Linux has no PR_SET_COW_PTE). Decode and Record, the
    /// byte form of fuzz system's programs, have both.
    /// </summary>
    public static SysProgram Generate(ulong seed, bool fork, bool hugetlb = false, bool cowPte = false)
        => new ProgramGenerator<SplitMix64>(new SplitMix64(seed), fork, hugetlb, cowPte).Build(seed);

    /// <summary>
    /// The program a byte string stands for: the bytes are the generator's choices (see
    /// <see cref="ByteChoices"/>), so every byte string is a valid program of at most 200 operations,
    /// and the program ends where the bytes do. Its seed is a hash of the bytes (informational).
    /// </summary>
    public static SysProgram Decode(byte[] data, int length, bool fork)
        => new ProgramGenerator<ByteChoices>(new ByteChoices(data, length), fork, hugetlb: true, cowPte: true).Build(Fnv1a(data.AsSpan(0, length)));

    /// <summary>The program of a seed together with its choices as bytes: <see cref="Decode"/> of the bytes gives the same program.</summary>
    public static (SysProgram Program, byte[] Bytes) Record(ulong seed, bool fork)
    {
        var bytes = new List<byte>(256);
        SysProgram p = new ProgramGenerator<ProgramChoiceRecorder>(new ProgramChoiceRecorder(seed, bytes), fork, hugetlb: true, cowPte: true).Build(seed);
        return (p, bytes.ToArray());
    }

    /// <summary>FNV-1a, 64 bits.</summary>
    public static ulong Fnv1a(ReadOnlySpan<byte> data)
    {
        ulong h = 0xcbf29ce484222325;
        foreach (byte b in data) h = unchecked((h ^ b) * 0x100000001b3);
        return h;
    }
}

/// <summary>The generator proper, over any source of choices.</summary>
internal sealed class ProgramGenerator<TChoices> where TChoices : struct, IProgramChoices
{
    private const ulong Page = Linux.PageSize;
    /// <summary>A low zone no top-down placement reaches, for MAP_FIXED mappings.</summary>
    private const ulong FixedZone = 0x1000_0000;
    private const int PopulateBudgetPages = 4096;
    private const int MaxLiveProcesses = 8;

    private TChoices _rng;
    private readonly bool _fork;
    private readonly List<(int Label, ulong Length, int Proc)> _maps = [];
    /// <summary>The mappings each process made or inherited, so that most operations land on its own memory.</summary>
    private readonly Dictionary<int, List<(int Label, ulong Length, int Proc)>> _mapsOf = [];
    /// <summary>Recent stores (process, address): loads, spans and madvise often go back to them.</summary>
    private readonly List<(int Proc, AddrExpr Addr)> _recent = [];
    private readonly List<int> _live = [];
    private int _nextProc;
    private int _nextLabel = 1;
    private int _populateBudget = PopulateBudgetPages;
    /// <summary>One MAP_HUGETLB page per program: with every forked copy it stays inside the runner's pool.</summary>
    private bool _hugetlbMapped;

    private readonly bool _hugetlb;

    /// <summary>Copy-on-write page tables may be on (the program's CowPte) and prctl is an operation.</summary>
    private readonly bool _cowPte;
    private CowPteMode _mode;
    private bool _all;
    /// <summary>Processes whose next fork shares tables (prctl(PR_SET_COW_PTE) called, or MMF_COW_PTE inherited).</summary>
    private readonly HashSet<int> _sharing = [];
    /// <summary>An operation decided together with the one just returned (the fork after its prctl).</summary>
    private SysOp? _pending;
    /// <summary>After a fork that shared tables: its parent and child, and how many more operations mostly go to them.</summary>
    private (int Parent, int Child, int Left) _focus;

    internal ProgramGenerator(TChoices choices, bool fork, bool hugetlb = false, bool cowPte = false)
    {
        _rng = choices;
        _fork = fork;
        _hugetlb = hugetlb;
        _cowPte = cowPte;
        // With fork every live process may end up holding its own copy of the populated memory.
        if (fork) _populateBudget = PopulateBudgetPages / MaxLiveProcesses;
    }

    internal SysProgram Build(ulong seed)
    {
        int r = _rng.Below(100);
        int processes = r < 40 ? 1 : r < 65 ? 2 : r < 85 ? 3 : 4;
        for (int i = 0; i < processes; i++)
        {
            _live.Add(i);
            _mapsOf[i] = [];
        }
        _nextProc = processes;
        if (_cowPte)
        {
            int c = _rng.Below(100);
            if (c < 34)
            {
                _mode = c < 17 ? CowPteMode.Lazy : CowPteMode.Eager;
                _all = _rng.Chance(30);
            }
        }
        int count = _rng.Range(1, 200);
        var ops = new List<SysOp>(count);
        for (int i = 0; i < count && _live.Count > 0 && !_rng.Exhausted; i++) ops.Add(NextOp(i == 0));
        return new SysProgram(seed, processes, ops) { CowPte = _mode, CowPteAllProcesses = _all };
    }

    private bool CanFork => _fork && _live.Count < MaxLiveProcesses && _nextProc < SysProgram.MaxProcesses;

    private SysOp NextOp(bool first)
    {
        if (_pending is { } next)
        {
            _pending = null;
            return next;
        }
        int proc = _rng.Pick(_live);
        if (_mode != CowPteMode.Off && _focus.Left > 0)
        {
            _focus.Left--;
            if (_rng.Chance(70))
            {
                int p = _rng.Chance(50) ? _focus.Parent : _focus.Child;
                if (_live.Contains(p)) proc = p;
            }
        }
        if (first || _maps.Count == 0 && _rng.Chance(70)) return Mmap(proc);
        if (_cowPte)
        {
            if (_rng.Chance(_mode != CowPteMode.Off ? 3 : 1)) return Prctl(proc);
            if (_mode != CowPteMode.Off && CanFork && _rng.Chance(4))
            {
                // Mostly the process that stored last: a fork shares only tables with entries.
                if (_recent.Count > 0 && _rng.Chance(60) && _live.Contains(_recent[^1].Proc)) proc = _recent[^1].Proc;
                return Fork(proc);
            }
        }
        int r = _rng.Below(100);
        if (r < 14) return Mmap(proc);
        if (r < 20) return new SysOp { Kind = SysOpKind.Munmap, Proc = proc, Addr = SyscallAddr(proc), Length = SyscallLength(proc) };
        if (r < 29) return new SysOp { Kind = SysOpKind.Mprotect, Proc = proc, Addr = SyscallAddr(proc), Length = SyscallLength(proc), Prot = MprotectProt() };
        if (r < 39) return new SysOp { Kind = SysOpKind.Madvise, Proc = proc, Addr = SyscallAddr(proc), Length = SyscallLength(proc), Advice = PickAdvice() };
        if (r < 56) return Scalar(SysOpKind.Load, proc);
        if (r < 75) return Scalar(SysOpKind.Store, proc);
        if (r < 79) return Scalar(SysOpKind.TryLoad, proc);
        if (r < 83) return Scalar(SysOpKind.TryStore, proc);
        if (r < 88) return Span(SysOpKind.Read, proc);
        if (r < 94) return Span(SysOpKind.Write, proc);
        if (r < 98 && CanFork) return Fork(proc);
        if (r < 99 || _live.Count == 1) return Scalar(SysOpKind.Store, proc);
        _live.Remove(proc);
        return new SysOp { Kind = SysOpKind.Exit, Proc = proc };
    }

    /// <summary>
    /// A fork. With copy-on-write page tables on and the parent not yet sharing, mostly its
    /// prctl(PR_SET_COW_PTE) comes first and the fork next; after a fork that shares, parent and child get
    /// most of the next operations (writes, munmap, mprotect, madvise on both sides break the tables).
    /// </summary>
    private SysOp Fork(int proc)
    {
        int child = _nextProc++;
        _live.Add(child);
        _mapsOf[child] = [.. _mapsOf[proc]];
        var fork = new SysOp { Kind = SysOpKind.Fork, Proc = proc, Child = child };
        if (_mode == CowPteMode.Off) return fork;
        SysOp? prctl = null;
        if (!_all && !_sharing.Contains(proc) && _rng.Chance(70))
        {
            prctl = new SysOp { Kind = SysOpKind.Prctl, Proc = proc, Option = Linux.PrSetCowPte };
            _sharing.Add(proc);
        }
        if (_all || _sharing.Contains(proc))
        {
            _sharing.Add(proc);
            _sharing.Add(child);
            _focus = (proc, child, _rng.Range(6, 20));
        }
        if (prctl is null) return fork;
        _pending = fork;
        return prctl;
    }

    /// <summary>prctl: mostly PR_SET_COW_PTE as the series defines it, sometimes with arg2 set or an option no kernel has (EINVAL).</summary>
    private SysOp Prctl(int proc)
    {
        int r = _rng.Below(100);
        if (r < 88)
        {
            if (_mode != CowPteMode.Off) _sharing.Add(proc);
            return new SysOp { Kind = SysOpKind.Prctl, Proc = proc, Option = Linux.PrSetCowPte };
        }
        if (r < 94) return new SysOp { Kind = SysOpKind.Prctl, Proc = proc, Option = Linux.PrSetCowPte, Value = _rng.Pick(new[] { 1UL, 0x100UL, ulong.MaxValue }) };
        return new SysOp { Kind = SysOpKind.Prctl, Proc = proc, Option = _rng.Pick(new[] { 0, 1000, 0x7fff_ffff, -1 }) };
    }

    // ---------------------------------------------------------------------------------------------
    // mmap
    // ---------------------------------------------------------------------------------------------

    private SysOp Mmap(int proc)
    {
        // With copy-on-write page tables, more mappings that cover whole PTE tables: Lazy shares only those.
        ulong len = _mode != CowPteMode.Off && _rng.Chance(25) ? (ulong)_rng.Range(1, 2) * Linux.PmdSize : MmapLength();
        int prot = MmapProt();
        int flags = 0;
        int r = _rng.Below(100);
        if (r < 16) flags |= Linux.MapFixed;
        else if (r < 24) flags |= Linux.MapFixedNoReplace;
        if (_rng.Chance(12))
        {
            ulong pages = Linux.PageAlign(len) / Page;
            bool costs = (prot & Linux.ProtWrite) != 0;
            if (!costs || (len != 0 && pages <= (ulong)_populateBudget))
            {
                flags |= Linux.MapPopulate;
                if (_rng.Chance(10)) flags |= Linux.MapNonBlock;
                if (costs && (flags & Linux.MapNonBlock) == 0) _populateBudget -= (int)pages;
            }
        }
        if (_rng.Chance(4)) flags |= Linux.MapStack;
        if (_hugetlb && !_hugetlbMapped && _rng.Chance(8))
        {
            // MAP_HUGETLB with the default size, MAP_HUGE_2MB, or now and then a size with no hstate.
            _hugetlbMapped = true;
            int r2 = _rng.Below(100);
            int log = r2 < 40 ? 0 : r2 < 92 ? 21 : 24;
            flags = (flags & ~Linux.MapPopulate) | Linux.MapHugeTlb | (log << Linux.MapHugeShift);
            len = _rng.Chance(70) ? Linux.PmdSize : (ulong)_rng.Range(1, 2 * (int)Page);
        }
        AddrExpr addr = (flags & (Linux.MapFixed | Linux.MapFixedNoReplace)) != 0 ? FixedAddr(len) : HintAddr(len);
        int label = _nextLabel++;
        var map = (label, len is > 0 and <= 64UL << 20 ? len : Page, proc);
        _maps.Add(map);
        _mapsOf[proc].Add(map);
        return new SysOp { Kind = SysOpKind.Mmap, Proc = proc, Label = label, Addr = addr, Length = len, Prot = prot, Flags = flags };
    }

    private ulong MmapLength()
    {
        int r = _rng.Below(100);
        if (r < 50) return (ulong)_rng.Range(1, 8) * Page;
        if (r < 62) return (ulong)_rng.Range(9, 64) * Page;
        if (r < 72) return (ulong)_rng.Range(1, 5 * (int)Page);
        if (r < 84) return (ulong)_rng.Range(1, 4) * Linux.PmdSize;
        if (r < 88) return Linux.PmdSize + (_rng.Chance(50) ? Page : unchecked(0 - Page));
        if (r < 93) return 0;
        if (r < 96) return _rng.Pick(new[] { Linux.TaskSize + Page, Linux.CanonicalEnd, ulong.MaxValue, ulong.MaxValue - Page + 1, ulong.MaxValue - 2 * Page });
        return (ulong)_rng.Range(65, 128) * Page;
    }

    private int MmapProt()
    {
        int r = _rng.Below(100);
        if (r < 45) return Linux.ProtRead | Linux.ProtWrite;
        if (r < 60) return Linux.ProtRead;
        if (r < 68) return Linux.ProtNone;
        if (r < 74) return Linux.ProtAccess;
        if (r < 80) return Linux.ProtRead | Linux.ProtExec;
        if (r < 85) return Linux.ProtWrite;
        if (r < 90) return Linux.ProtExec;
        if (r < 93) return Linux.ProtWrite | Linux.ProtExec;
        return _rng.Pick(new[] { Linux.ProtRead | Linux.ProtWrite | Linux.ProtSem, Linux.ProtSem, Linux.ProtRead | 0x10, 0x40, Linux.ProtRead | Linux.ProtWrite | 0x100, Linux.ProtRead | Linux.ProtWrite | Linux.ProtGrowsDown, Linux.ProtGrowsUp });
    }

    private AddrExpr HintAddr(ulong len)
    {
        int r = _rng.Below(100);
        if (r < 65) return AddrExpr.Absolute(0);
        if (r < 77 && _maps.Count > 0)
        {
            var m = _rng.Pick(_maps);
            return AddrExpr.Relative(m.Label, (long)(_rng.Range(-4, (int)(m.Length / Page) + 4) * (long)Page) + (_rng.Chance(20) ? _rng.Range(1, 4095) : 0));
        }
        if (r < 85) return AddrExpr.Absolute(_rng.Pick(new ulong[] { 0x1000, 0x123, 0xfff0, 0x10001, Linux.MmapMinAddr - Page }));
        if (r < 93) return AddrExpr.Absolute(FixedZone + (ulong)_rng.Range(0, 64) * Page + (_rng.Chance(20) ? (ulong)_rng.Range(1, 4095) : 0));
        return AddrExpr.Absolute(Linux.TaskSize - (ulong)_rng.Range(0, 16) * Page - (_rng.Chance(30) ? (ulong)_rng.Range(1, 4095) : 0));
    }

    private AddrExpr FixedAddr(ulong len)
    {
        int r = _rng.Below(100);
        if (r < 45 && _maps.Count > 0)
        {
            var m = _rng.Pick(_maps);
            return AddrExpr.Relative(m.Label, _rng.Range(-4, (int)(m.Length / Page) + 4) * (long)Page);
        }
        if (r < 75) return AddrExpr.Absolute(FixedZone + (ulong)_rng.Range(0, 64) * Page);
        if (r < 81) return AddrExpr.Absolute(FixedZone + (ulong)_rng.Range(0, 64) * Page + (ulong)_rng.Range(1, 4095));
        if (r < 87) return AddrExpr.Absolute(_rng.Pick(new ulong[] { 0, 0x1000, 0xf000, Linux.MmapMinAddr, Linux.MmapMinAddr + Page }));
        if (r < 95)
        {
            ulong alen = Math.Min(Linux.PageAlign(len), 64UL << 20);
            ulong top = Linux.TaskSize - alen;
            return AddrExpr.Absolute(_rng.Below(4) switch
            {
                0 => top,
                1 => top + Page,
                2 => top - Page * (ulong)_rng.Range(1, 8),
                _ => top + (ulong)_rng.Range(1, 4095) - (_rng.Chance(50) ? Page : 0),
            });
        }
        return AddrExpr.Absolute(_rng.Pick(new[] { Linux.TaskSize, Linux.CanonicalEnd, 0xffff_ffff_ffff_f000UL, Linux.TaskSize - Page }));
    }

    // ---------------------------------------------------------------------------------------------
    // munmap, mprotect, madvise
    // ---------------------------------------------------------------------------------------------

    /// <summary>A mapping of this process (mostly) or of any process.</summary>
    private (int Label, ulong Length, int Proc) PickMap(int proc)
        => _mapsOf[proc].Count > 0 && _rng.Chance(80) ? _rng.Pick(_mapsOf[proc]) : _rng.Pick(_maps);

    /// <summary>A recent store of this process, if there is one.</summary>
    private AddrExpr? Recent(int proc)
    {
        for (int tries = 0; tries < 4 && _recent.Count > 0; tries++)
        {
            var (p, a) = _recent[_recent.Count - 1 - _rng.Below(Math.Min(_recent.Count, 16))];
            if (p == proc || _rng.Chance(10)) return a;
        }
        return null;
    }

    private void Remember(int proc, AddrExpr a)
    {
        _recent.Add((proc, a));
        if (_recent.Count > 64) _recent.RemoveAt(0);
    }

    private AddrExpr SyscallAddr(int proc)
    {
        int r = _rng.Below(100);
        if (r < 15 && Recent(proc) is { } near)
            return near with { Offset = unchecked((near.Offset & Linux.PageMask) - (_rng.Chance(50) ? 0 : Page * (ulong)_rng.Below(3))) };
        if (r < 75 && _maps.Count > 0)
        {
            var m = PickMap(proc);
            return AddrExpr.Relative(m.Label, _rng.Range(-2, (int)(m.Length / Page) + 2) * (long)Page);
        }
        if (r < 80 && _maps.Count > 0) return AddrExpr.Relative(PickMap(proc).Label, _rng.Range(1, 3 * (int)Page));
        if (r < 90) return AddrExpr.Absolute(FixedZone + (ulong)_rng.Range(-4, 64) * Page);
        if (r < 95) return AddrExpr.Absolute(Linux.TaskSize - (ulong)_rng.Range(1, 16) * Page);
        return AddrExpr.Absolute(_rng.Pick(new[] { 0UL, Page, Linux.TaskSize, Linux.CanonicalEnd, 0xffff_ffff_ffff_f000UL, Linux.TaskSize - Page }));
    }

    private ulong SyscallLength(int proc)
    {
        int r = _rng.Below(100);
        if (r < 55)
        {
            ulong pages = _maps.Count > 0 ? PickMap(proc).Length / Page + 2 : 8;
            return (ulong)_rng.Range(1, (int)Math.Min(pages, 1100)) * Page;
        }
        if (r < 65) return 0;
        if (r < 75) return (ulong)_rng.Range(1, 3 * (int)Page);
        if (r < 85) return (ulong)_rng.Range(1, 3) * Linux.PmdSize;
        if (r < 95) return _maps.Count > 0 ? PickMap(proc).Length : Page;
        return _rng.Pick(new[] { ulong.MaxValue, ulong.MaxValue - Page + 1, Linux.CanonicalEnd, Linux.TaskSize, ulong.MaxValue - 3 * Page });
    }

    private int MprotectProt()
    {
        int r = _rng.Below(100);
        if (r < 90) return _rng.Pick(new[] { Linux.ProtNone, Linux.ProtRead, Linux.ProtRead | Linux.ProtWrite, Linux.ProtRead | Linux.ProtWrite, Linux.ProtWrite, Linux.ProtExec, Linux.ProtRead | Linux.ProtExec, Linux.ProtAccess });
        if (r < 95) return _rng.Pick(new[] { Linux.ProtRead | Linux.ProtSem, Linux.ProtSem, Linux.ProtRead | 0x10, 0x20, Linux.ProtRead | Linux.ProtWrite | 0x80 });
        return _rng.Pick(new[] { Linux.ProtGrowsDown, Linux.ProtGrowsUp, Linux.ProtGrowsDown | Linux.ProtGrowsUp }) | _rng.Pick(new[] { Linux.ProtNone, Linux.ProtRead, Linux.ProtRead | Linux.ProtWrite });
    }

    private static readonly int[] Advices =
    [
        Linux.MadvDontNeed, Linux.MadvDontNeed, Linux.MadvDontNeed, Linux.MadvDontNeed, Linux.MadvDontNeedLocked,
        Linux.MadvDontFork, Linux.MadvDontFork, Linux.MadvDoFork, Linux.MadvWipeOnFork, Linux.MadvWipeOnFork, Linux.MadvKeepOnFork,
        Linux.MadvHugePage, Linux.MadvHugePage, Linux.MadvNoHugePage, Linux.MadvNoHugePage,
        Linux.MadvNormal, Linux.MadvRandom, Linux.MadvSequential, Linux.MadvWillNeed, Linux.MadvCold, Linux.MadvPageOut,
        Linux.MadvDontDump, Linux.MadvDoDump, Linux.MadvRemove,
    ];

    private static readonly int[] InvalidAdvices = [5, 6, 7, Linux.MadvMergeable, Linux.MadvUnmergeable, 26, 99, 1000, -1];

    private int PickAdvice() => _rng.Chance(10) ? _rng.Pick(InvalidAdvices) : _rng.Pick(Advices);

    // ---------------------------------------------------------------------------------------------
    // Loads and stores
    // ---------------------------------------------------------------------------------------------

    private SysOp Scalar(SysOpKind kind, int proc)
    {
        int width = 1 << _rng.Below(4);
        ulong value = _rng.Chance(10) ? 0 : _rng.Next();
        if (width < 8) value &= (1UL << (8 * width)) - 1;
        bool store = kind is SysOpKind.Store or SysOpKind.TryStore;
        AddrExpr addr = !store && _rng.Chance(45) && Recent(proc) is { } back ? back : AccessAddr(proc, width);
        if (store) Remember(proc, addr);
        return new SysOp { Kind = kind, Proc = proc, Width = width, Addr = addr, Value = store ? value : 0 };
    }

    private SysOp Span(SysOpKind kind, int proc)
    {
        ulong len = (ulong)(_rng.Chance(70) ? _rng.Range(17, 600) : _rng.Range(17, 3 * (int)Page + 64));
        AddrExpr addr = _rng.Chance(35) && Recent(proc) is { } back
            ? back with { Offset = unchecked(back.Offset - (ulong)_rng.Below(Math.Min(len, 256UL))) }
            : AccessAddr(proc, (int)len);
        if (kind == SysOpKind.Write) Remember(proc, addr);
        return new SysOp { Kind = kind, Proc = proc, Length = len, Addr = addr, Value = kind == SysOpKind.Write ? _rng.Next() & 0xff : 0 };
    }

    private AddrExpr AccessAddr(int proc, int width)
    {
        int r = _rng.Below(100);
        if (r < 80 && _maps.Count > 0)
        {
            var m = PickMap(proc);
            long len = (long)m.Length;
            long pages = Math.Max(1, len / (long)Page);
            int s = _rng.Below(100);
            long off;
            if (s < 35) off = (long)_rng.Below((ulong)len);
            else if (s < 60 && width > 1) off = _rng.Range(1, (int)pages) * (long)Page - _rng.Range(1, Math.Min(width - 1, 4000));
            else if (s < 75) off = _rng.Chance(50) ? -_rng.Range(1, 8192) : len + _rng.Range(0, 8192);
            else off = _rng.Range(0, (int)pages - 1) * (long)Page + _rng.Range(0, (int)(Page / (ulong)Math.Min(width, 8)) - 1) * Math.Min(width, 8);
            return AddrExpr.Relative(m.Label, off);
        }
        if (r < 90) return AddrExpr.Absolute(FixedZone + (ulong)_rng.Range(-2, 64 * (int)Page));
        ulong wild = _rng.Pick(new[] { 0UL, Page, Linux.MmapMinAddr - 4, Linux.TaskSize - 8, Linux.TaskSize - Page - 4, 0x7fff_0000_0000UL, Linux.CanonicalEnd - 64UL * 1024 });
        return AddrExpr.Absolute(wild);
    }
}
