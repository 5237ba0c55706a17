using System.Diagnostics;
using NativeMmu.Fuzz.Model;

namespace NativeMmu.Fuzz;

/// <summary>
/// Delta debugging for failing programs. A candidate is kept when it still fails with the same
/// category (the kind of difference, e.g. "load:value" or "frames"). Steps: cut everything after the
/// failing operation; remove chunks of operations (ddmin, halving the chunk size down to single
/// operations) until no single operation can go; simplify the arguments of each operation (lengths to
/// one page, offsets to zero, values to 0 or 1, widths to 1, flags and prot to the plainest, the process
/// to p0); boot a plainer kernel (copy-on-write page tables off, or on without the all-processes switch);
/// renumber processes and labels densely. Bounded by a number of trial runs and a time limit.
/// </summary>
internal sealed class Shrinker
{
    private readonly Func<SysProgram, RunResult> _run;
    private readonly int _maxTrials;
    private readonly TimeSpan _maxTime;
    private int _trials;
    private Stopwatch _clock = new();

    public Shrinker(Func<SysProgram, RunResult> run, int maxTrials = 4000, TimeSpan? maxTime = null)
    {
        _run = run;
        _maxTrials = maxTrials;
        _maxTime = maxTime ?? TimeSpan.FromSeconds(60);
    }

    public int Trials => _trials;

    private bool Exhausted => _trials >= _maxTrials || _clock.Elapsed > _maxTime;

    /// <summary>The smallest program found that fails like <paramref name="failure"/>, and its failure.</summary>
    public (SysProgram Program, RunFailure Failure) Shrink(SysProgram program, RunFailure failure)
    {
        _clock = Stopwatch.StartNew();
        _trials = 0;
        string category = failure.Category;
        RunFailure best = failure;

        bool Try(SysProgram candidate, out RunFailure? f)
        {
            f = null;
            if (Exhausted) return false;
            _trials++;
            RunResult r = _run(candidate);
            if (r.Failure is { } rf && rf.Category == category)
            {
                f = rf;
                return true;
            }
            return false;
        }

        // Operations after the failing one play no part.
        if (best.OpIndex >= 0 && best.OpIndex + 1 < program.Ops.Count)
        {
            SysProgram cut = program.WithOps(program.Ops.Take(best.OpIndex + 1).ToList());
            if (Try(cut, out RunFailure? f)) { program = cut; best = f!; }
        }

        bool changed = true;
        while (changed && !Exhausted)
        {
            changed = false;
            // ddmin over complements.
            int n = 2;
            while (program.Ops.Count >= 2 && !Exhausted)
            {
                int count = program.Ops.Count;
                int chunk = (count + n - 1) / n;
                bool reduced = false;
                for (int start = 0; start < count && !Exhausted; start += chunk)
                {
                    var ops = program.Ops.Take(start).Concat(program.Ops.Skip(start + chunk)).ToList();
                    SysProgram cand = program.WithOps(ops);
                    if (Try(cand, out RunFailure? f))
                    {
                        program = cand;
                        best = f!;
                        n = Math.Max(n - 1, 2);
                        reduced = changed = true;
                        break;
                    }
                }
                if (!reduced)
                {
                    if (chunk <= 1) break;
                    n = Math.Min(n * 2, count);
                }
            }
            if (program.Ops.Count == 1 && !Exhausted)
            {
                SysProgram empty = program.WithOps([]);
                if (Try(empty, out RunFailure? f)) { program = empty; best = f!; changed = true; }
            }

            // Simpler arguments, one operation at a time.
            for (int i = 0; i < program.Ops.Count && !Exhausted; i++)
            {
                foreach (SysOp simpler in Simplifications(program.Ops[i]))
                {
                    if (simpler == program.Ops[i]) continue;
                    var ops = program.Ops.ToList();
                    ops[i] = simpler;
                    SysProgram cand = program.WithOps(ops);
                    if (Try(cand, out RunFailure? f))
                    {
                        program = cand;
                        best = f!;
                        changed = true;
                    }
                }
            }

            // The plainest kernel that still fails: without copy-on-write page tables, or without the all-processes switch.
            foreach (SysProgram plainer in PlainerConfigs(program))
            {
                if (Exhausted) break;
                if (Try(plainer, out RunFailure? f)) { program = plainer; best = f!; changed = true; break; }
            }

            if (program.Processes > 1 && !Exhausted && Compact(program) is { } compact && compact != program)
            {
                if (Try(compact, out RunFailure? f)) { program = compact; best = f!; changed = true; }
            }
        }

        SysProgram renamed = RenameLabels(program);
        if (renamed != program && Try(renamed, out RunFailure? rf)) { program = renamed; best = rf!; }
        return (program, best);
    }

    /// <summary>The program on a plainer kernel: CowPte Off, then (with CowPte on) without CowPteAllProcesses.</summary>
    private static IEnumerable<SysProgram> PlainerConfigs(SysProgram program)
    {
        if (program.CowPte != CowPteMode.Off) yield return program with { CowPte = CowPteMode.Off, CowPteAllProcesses = false };
        if (program.CowPteAllProcesses) yield return program with { CowPteAllProcesses = false };
    }

    /// <summary>Simpler variants of one operation, plainest first.</summary>
    private static IEnumerable<SysOp> Simplifications(SysOp op)
    {
        if (op.Proc != 0) yield return op with { Proc = 0 };
        AddrExpr a = op.Addr;
        if (a.Label != 0 && a.Offset != 0)
        {
            yield return op with { Addr = a with { Offset = 0 } };
            long off = unchecked((long)a.Offset);
            ulong pageOff = a.Offset & (Linux.PageSize - 1);
            if (pageOff != 0 && off > 0) yield return op with { Addr = a with { Offset = a.Offset - pageOff } };
            if (off > (long)Linux.PageSize || off < -(long)Linux.PageSize)
                yield return op with { Addr = a with { Offset = unchecked((ulong)((off < 0 ? -1 : 1) * (long)Linux.PageSize + (long)pageOff)) } };
        }
        switch (op.Kind)
        {
            case SysOpKind.Mmap:
                if (op.Addr != default && (op.Flags & (Linux.MapFixed | Linux.MapFixedNoReplace)) == 0) yield return op with { Addr = default };
                foreach (ulong len in new[] { Linux.PageSize, 2 * Linux.PageSize, Linux.PmdSize })
                    if (op.Length > len) yield return op with { Length = len };
                if (op.Prot != (Linux.ProtRead | Linux.ProtWrite)) yield return op with { Prot = Linux.ProtRead | Linux.ProtWrite };
                foreach (int bit in new[] { Linux.MapPopulate, Linux.MapNonBlock, Linux.MapFixedNoReplace, Linux.MapFixed })
                    if ((op.Flags & bit) != 0) yield return op with { Flags = op.Flags & ~bit };
                break;
            case SysOpKind.Munmap:
            case SysOpKind.Mprotect:
            case SysOpKind.Madvise:
                foreach (ulong len in new[] { Linux.PageSize, 2 * Linux.PageSize })
                    if (op.Length > len) yield return op with { Length = len };
                if (op.Kind == SysOpKind.Mprotect && op.Prot != Linux.ProtRead) yield return op with { Prot = Linux.ProtRead };
                if (op.Kind == SysOpKind.Madvise && op.Advice != Linux.MadvDontNeed) yield return op with { Advice = Linux.MadvDontNeed };
                break;
            case SysOpKind.Load:
            case SysOpKind.TryLoad:
                if (op.Width > 1) yield return op with { Width = 1 };
                if (op.Kind == SysOpKind.TryLoad) yield return op with { Kind = SysOpKind.Load };
                break;
            case SysOpKind.Store:
            case SysOpKind.TryStore:
                if (op.Width > 1) yield return op with { Width = 1, Value = op.Value & 0xff };
                if (op.Value > 1) yield return op with { Value = 1 };
                if (op.Value != 0) yield return op with { Value = 0 };
                if (op.Kind == SysOpKind.TryStore) yield return op with { Kind = SysOpKind.Store };
                break;
            case SysOpKind.Prctl:
                if (op.Value != 0) yield return op with { Value = 0 };
                if (op.Option != Linux.PrSetCowPte) yield return op with { Option = Linux.PrSetCowPte };
                break;
            case SysOpKind.Read:
            case SysOpKind.Write:
                if (op.Length > 17) yield return op with { Length = 17 };
                if (op.Length > Linux.PageSize + 17) yield return op with { Length = Linux.PageSize + 17 };
                break;
        }
    }

    /// <summary>Processes renumbered densely in order of first use (forked children after the initial ones).</summary>
    private static SysProgram? Compact(SysProgram program)
    {
        var initialUsed = new SortedSet<int>();
        var children = new List<int>();
        foreach (SysOp op in program.Ops)
        {
            if (op.Proc < program.Processes) initialUsed.Add(op.Proc);
            if (op.Kind == SysOpKind.Fork && !children.Contains(op.Child)) children.Add(op.Child);
        }
        if (initialUsed.Count == 0) return program with { Processes = 1 };
        var map = new Dictionary<int, int>();
        foreach (int p in initialUsed) map[p] = map.Count;
        int processes = map.Count;
        foreach (int c in children) if (!map.ContainsKey(c)) map[c] = map.Count;
        // Operations of a process that never exists never run: they go.
        var ops = program.Ops.Where(op => map.ContainsKey(op.Proc)).Select(op => op with
        {
            Proc = map[op.Proc],
            Child = op.Kind == SysOpKind.Fork ? map[op.Child] : op.Child,
        }).ToList();
        return program with { Processes = processes, Ops = ops };
    }

    /// <summary>Labels renumbered m1, m2, ... in program order.</summary>
    private static SysProgram RenameLabels(SysProgram program)
    {
        var map = new Dictionary<int, int>();
        foreach (SysOp op in program.Ops)
            if (op.Kind == SysOpKind.Mmap && !map.ContainsKey(op.Label)) map[op.Label] = map.Count + 1;
        AddrExpr Re(AddrExpr a) => a.Label == 0 ? a : map.TryGetValue(a.Label, out int l) ? a with { Label = l } : AddrExpr.Absolute(a.Offset);
        var ops = program.Ops.Select(op => op with { Label = op.Kind == SysOpKind.Mmap ? map[op.Label] : op.Label, Addr = Re(op.Addr) }).ToList();
        return program.WithOps(ops);
    }
}
