using NativeMmu.Cli.Host;
using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Model;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Host;

/// <summary>
/// What <c>fuzz host</c> generates, counted over a corpus of its programs: every system call, mmap flag
/// and madvise advice the emulator accepts, none of the excluded ones, and a share of the edge cases
/// (unusual, unaligned and overflowing ranges, holes, PROT_NONE and write-only mappings, fork followed
/// by writes on both sides).
/// </summary>
public class HostGeneratorCoverageTests
{
    private const int Programs = 2000;
    /// <summary>The fewest occurrences a case must have in the corpus.</summary>
    private const int AtLeast = 20;

    private static readonly List<SysProgram> Corpus = Enumerable.Range(0, Programs).Select(i => HostFuzzer.Generate(0x5eed, (ulong)i)).ToList();

    private static IEnumerable<SysOp> Ops => Corpus.SelectMany(p => p.Ops);

    private static bool IsRangeCall(SysOp o) => o.Kind is SysOpKind.Munmap or SysOpKind.Mprotect or SysOpKind.Madvise;

    private static void Covers(string what, int count) => Assert.That(count, Is.GreaterThanOrEqualTo(AtLeast), what);

    [Test]
    public void Every_operation_kind_is_generated()
    {
        foreach (SysOpKind k in Enum.GetValues<SysOpKind>())
        {
            // prctl(PR_SET_COW_PTE) is the COW PTE series', which the host kernel has not: an exclusion.
            if (k == SysOpKind.Prctl) Assert.That(Ops.Count(o => o.Kind == k), Is.Zero, "prctl is an exclusion");
            else Covers(k.ToString(), Ops.Count(o => o.Kind == k));
        }
        Assert.That(Corpus.All(p => p.CowPte == CowPteMode.Off), Is.True, "no program boots with copy-on-write page tables");
    }

    [Test]
    public void Every_advice_the_emulator_accepts_is_generated_and_no_excluded_one()
    {
        var advices = Ops.Where(o => o.Kind == SysOpKind.Madvise).GroupBy(o => o.Advice).ToDictionary(g => g.Key, g => g.Count());
        foreach (Advice a in Enum.GetValues<Advice>())
        {
            if (!Madvise.BehaviorValid(a) || a == Advice.Collapse) continue;
            Covers($"MADV_{a}", advices.GetValueOrDefault((int)a));
        }
        // The exclusions: KSM, MADV_COLLAPSE, the guard-region advice (MADV_GUARD_INSTALL 102, _REMOVE 103).
        foreach (int excluded in new[] { Linux.MadvMergeable, Linux.MadvUnmergeable, Linux.MadvCollapse, 102, 103 })
            Assert.That(advices.ContainsKey(excluded), Is.False, $"advice {excluded} is an exclusion");
        Covers("advice values no kernel accepts", advices.Where(kv => !Linux.AdviceValid(kv.Key) && kv.Key is not (Linux.MadvMergeable or Linux.MadvUnmergeable)).Sum(kv => kv.Value));
    }

    [Test]
    public void Every_mmap_flag_the_emulator_parses_is_generated()
    {
        int[] flags =
        [
            Linux.MapFixed, Linux.MapFixedNoReplace, Linux.MapPopulate, Linux.MapNonBlock, Linux.MapLocked, Linux.MapNoReserve,
            Linux.MapStack, Linux.MapDenyWrite, Linux.MapExecutable, Linux.MapSync,
        ];
        var mmaps = Ops.Where(o => o.Kind == SysOpKind.Mmap).ToList();
        foreach (int f in flags) Covers($"mmap flag 0x{f:x}", mmaps.Count(o => (o.Flags & f) != 0));
        // MAP_GROWSDOWN is an exclusion (no stack expansion); MAP_SHARED and MAP_HUGETLB the emulator refuses.
        Assert.That(mmaps.Count(o => (o.Flags & (Linux.MapGrowsDown | Linux.MapShared | 0x40000)) != 0), Is.Zero);
    }

    [Test]
    public void Prot_none_write_only_and_grows_bits_are_generated()
    {
        var mmaps = Ops.Where(o => o.Kind == SysOpKind.Mmap).ToList();
        var mprotects = Ops.Where(o => o.Kind == SysOpKind.Mprotect).ToList();
        Covers("mmap PROT_NONE", mmaps.Count(o => o.Prot == Linux.ProtNone));
        Covers("mmap PROT_WRITE alone", mmaps.Count(o => o.Prot == Linux.ProtWrite));
        Covers("mmap PROT_EXEC alone", mmaps.Count(o => o.Prot == Linux.ProtExec));
        Covers("mmap with prot bits beyond R/W/X", mmaps.Count(o => (o.Prot & ~Linux.ProtAccess) != 0));
        Covers("mprotect PROT_NONE", mprotects.Count(o => o.Prot == Linux.ProtNone));
        Covers("mprotect PROT_WRITE alone", mprotects.Count(o => o.Prot == Linux.ProtWrite));
        Covers("mprotect PROT_GROWSDOWN", mprotects.Count(o => (o.Prot & Linux.ProtGrowsDown) != 0));
        Covers("mprotect PROT_GROWSUP", mprotects.Count(o => (o.Prot & Linux.ProtGrowsUp) != 0));
    }

    [Test]
    public void Unusual_unaligned_and_overflowing_ranges_are_generated()
    {
        var mmaps = Ops.Where(o => o.Kind == SysOpKind.Mmap).ToList();
        var ranges = Ops.Where(IsRangeCall).ToList();
        Covers("mmap of length 0", mmaps.Count(o => o.Length == 0));
        Covers("mmap of a length not a page multiple", mmaps.Count(o => !Linux.PageAligned(o.Length)));
        Covers("mmap of a length beyond TASK_SIZE", mmaps.Count(o => o.Length > Linux.TaskSize));
        Covers("mmap at an unaligned address", mmaps.Count(o => !Linux.PageAligned(o.Addr.Offset)));
        Covers("mmap of a 2 MiB multiple", mmaps.Count(o => o.Length != 0 && o.Length % Linux.PmdSize == 0));
        foreach (SysOpKind k in new[] { SysOpKind.Munmap, SysOpKind.Mprotect, SysOpKind.Madvise })
        {
            var of = ranges.Where(o => o.Kind == k).ToList();
            Covers($"{k} of length 0", of.Count(o => o.Length == 0));
            Covers($"{k} of a length not a page multiple", of.Count(o => !Linux.PageAligned(o.Length)));
            Covers($"{k} at an unaligned address", of.Count(o => !Linux.PageAligned(o.Addr.Offset)));
            Covers($"{k} whose page-rounded end wraps or passes TASK_SIZE", of.Count(o => o.Length > Linux.TaskSize));
        }
    }

    [Test]
    public void Ranges_over_holes_and_past_a_mapping_are_generated()
    {
        int holes = 0, below = 0;
        foreach (SysProgram p in Corpus)
        {
            var lengths = new Dictionary<int, ulong>();
            foreach (SysOp o in p.Ops)
            {
                if (o.Kind == SysOpKind.Mmap) lengths[o.Label] = Linux.PageAlign(o.Length);
                if (!IsRangeCall(o) || o.Addr.Label == 0 || !lengths.TryGetValue(o.Addr.Label, out ulong len) || len == 0 || o.Length == 0) continue;
                long off = unchecked((long)o.Addr.Offset);
                if (off < 0) below++;
                else if ((ulong)off < len && Linux.PageAlign(o.Length) > len - (ulong)off && o.Length <= Linux.TaskSize) holes++;
            }
        }
        Covers("ranges starting inside a mapping and running past its end", holes);
        Covers("ranges starting below a mapping", below);
        Covers("munmap of part of a mapping (a hole for what follows)", Ops.Count(o => o.Kind == SysOpKind.Munmap && o.Addr.Label != 0 && o.Addr.Offset != 0));
    }

    [Test]
    public void Fork_followed_by_writes_on_both_sides_is_generated()
    {
        int both = 0;
        foreach (SysProgram p in Corpus)
        {
            for (int i = 0; i < p.Ops.Count; i++)
            {
                SysOp f = p.Ops[i];
                if (f.Kind != SysOpKind.Fork) continue;
                var before = p.Ops.Take(i).Where(o => o.Kind == SysOpKind.Mmap).Select(o => o.Label).ToHashSet();
                bool Writes(int proc) => p.Ops.Skip(i + 1).Any(o => o.Proc == proc && o.Kind is SysOpKind.Store or SysOpKind.TryStore or SysOpKind.Write && before.Contains(o.Addr.Label));
                if (Writes(f.Proc) && Writes(f.Child)) both++;
            }
        }
        Covers("fork, then the parent and the child write to memory mapped before it", both);
    }
}
