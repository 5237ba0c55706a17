using BenchmarkDotNet.Attributes;
using NativeMmu.Arch.X86;

namespace NativeMmu.Benchmarks.Encodings;

/// <summary>
/// The pure entry encodings of arch/x86: PTE construction and the bit helpers, and the swap-entry PTE
/// format. Each operation is one independent chain over a different PFN or offset; results are folded
/// into the return value so nothing is dropped as dead code.
/// </summary>
[BenchmarkCategory("Encodings")]
public class EncodingBenchmarks
{
    private const int N = 1024;

    // Fields, not constants, so the JIT cannot fold the chains.
    private ulong _pgprot = PgProt.PageCopy;
    private ulong _firstPfn = 0x12_3456;
    private ulong _firstOffset = 0x3_0000_0000;

    /// <summary>pfn_pte, pte_mkwrite, pte_mkdirty, pte_wrprotect (which parks Dirty in SavedDirty).</summary>
    [Benchmark(OperationsPerInvoke = N)]
    public ulong Pte_PfnPte_MkWrite_MkDirty_Wrprotect()
    {
        ulong prot = _pgprot, pfn = _firstPfn, acc = 0;
        for (int i = 0; i < N; i++)
            acc ^= Pte.PfnPte(pfn + (ulong)i, prot).MkWrite().MkDirty().Wrprotect().Value;
        return acc;
    }

    /// <summary>__swp_entry then __swp_offset and __swp_type back (the offset is stored inverted).</summary>
    [Benchmark(OperationsPerInvoke = N)]
    public ulong SwpEntry_ArchEncode_ArchOffset_RoundTrip()
    {
        ulong first = _firstOffset, acc = 0;
        for (int i = 0; i < N; i++)
        {
            Pte pte = SwpEntry.ArchEncode(i & 15, first + (ulong)i);
            acc += SwpEntry.ArchOffset(pte) + (ulong)SwpEntry.ArchType(pte);
        }
        return acc;
    }
}
