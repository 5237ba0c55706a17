using System.Runtime.CompilerServices;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Arch.X86;

/// <summary>
/// The branch-free value operations every level shares: saved-dirty moves (pgtable.h) and the L1TF
/// PFN inversion of non-present entries (pgtable-invert.h).
/// </summary>
public static class EntryBits
{
    /// <summary>mksaveddirty_shift: with RW clear, move DIRTY to SAVED_DIRTY so no Write=0,Dirty=1 entry exists.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong MkSavedDirtyShift(ulong v)
    {
        ulong cond = (~v >> BitRw) & 1;
        v |= ((v >> BitDirty) & cond) << BitSavedDirty;
        v &= ~(cond << BitDirty);
        return v;
    }

    /// <summary>clear_saveddirty_shift: with RW set, move SAVED_DIRTY back to DIRTY.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong ClearSavedDirtyShift(ulong v)
    {
        ulong cond = (v >> BitRw) & 1;
        v |= ((v >> BitSavedDirty) & cond) << BitDirty;
        v &= ~(cond << BitSavedDirty);
        return v;
    }

    /// <summary>__pte_needs_invert: a non-zero entry with PRESENT clear keeps its PFN inverted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool NeedsInvert(ulong v) => v != 0 && (v & Present) == 0;

    /// <summary>protnone_mask: all ones when the entry is inverted.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong ProtnoneMask(ulong v) => NeedsInvert(v) ? ~0UL : 0UL;

    /// <summary>flip_protnone_guard: invert the PFN field when the invert state changes.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong FlipProtnoneGuard(ulong oldval, ulong val, ulong mask)
        => NeedsInvert(oldval) != NeedsInvert(val) ? (val & ~mask) | (~val & mask) : val;

    /// <summary>check_pgprot/massage_pgprot: the emulated CPU supports every bit (NX included).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong CheckPgprot(ulong prot) => prot;
}
