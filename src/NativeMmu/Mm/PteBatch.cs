using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;

namespace NativeMmu.Mm;

/// <summary>fpb_t: which differences between the entries of a batch matter (6.17's FPB_RESPECT_* spelling).</summary>
[Flags]
internal enum FpbFlags
{
    /// <summary>Dirty, soft-dirty, write and young are ignored; every other bit must match.</summary>
    None = 0,
    /// <summary>FPB_RESPECT_DIRTY: dirty (and saved-dirty) must match.</summary>
    RespectDirty = 1 << 0,
    /// <summary>FPB_RESPECT_SOFT_DIRTY.</summary>
    RespectSoftDirty = 1 << 1,
    /// <summary>FPB_RESPECT_WRITE: write must match.</summary>
    RespectWrite = 1 << 2,
    /// <summary>
    /// Only presence, specialness and the run of PFNs count: the batch zap_present_ptes releases at once.
    /// The kernel's zap also compares the protection bits; a run that mprotect split is released in one
    /// batch here, as it always has been in this emulator.
    /// </summary>
    PfnRunOnly = 1 << 3,
}

/// <summary>mm/internal.h's folio_pte_batch, for every caller (zap, fork's copy, the whole-folio reuse test).</summary>
internal static unsafe partial class Memory
{
    /// <summary>
    /// folio_pte_batch: how many entries from <paramref name="ptep"/> on (<paramref name="pte"/> is the
    /// first, present and mapping a page of the folio; at most <paramref name="max"/>, and not past
    /// <paramref name="folioEndPfn"/>) map consecutive pages with the same bits, as <paramref name="flags"/>
    /// compares them. Reads only; the PTL is held by the caller.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static int FolioPteBatch(Pte* ptep, Pte pte, ulong folioEndPfn, int max, FpbFlags flags)
    {
        ulong want = BatchBits(pte, flags);
        ulong pfn = pte.Pfn;
        int nr = 1;
        while (nr < max && pfn + (ulong)nr < folioEndPfn)
        {
            Pte e = PgTable.Get(ptep + nr);
            if (!e.Present || e.Pfn != pfn + (ulong)nr || BatchBits(e, flags) != want) break;
            nr++;
        }
        return nr;
    }

    /// <summary>__pte_batch_clear_ignored: the entry with what the batch ignores cleared, PFN aside.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong BatchBits(Pte e, FpbFlags flags)
    {
        if ((flags & FpbFlags.PfnRunOnly) != 0) return e.Value & PageTableBits.Special;
        if ((flags & FpbFlags.RespectDirty) == 0) e = e.MkClean();
        if ((flags & FpbFlags.RespectSoftDirty) == 0) e = e.ClearSoftDirty();
        e = e.MkOld();
        if ((flags & FpbFlags.RespectWrite) == 0) e = e.Wrprotect(); // also parks a dirty bit in saved-dirty
        return e.Value & ~PageTableBits.PtePfnMask;
    }
}
