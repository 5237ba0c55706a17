using System.Runtime.CompilerServices;

namespace NativeMmu.Arch.X86;

/// <summary>
/// x86-64 paging geometry. The levels below the PGD never change; PGDIR_SHIFT does (39 with
/// 4-level paging, 48 with LA57), so it lives in <see cref="PagingMode"/>.
/// </summary>
public static class Geometry
{
    public const int PageShift = 12;
    public const ulong PageSize = 1UL << PageShift;
    public const ulong PageMask = ~(PageSize - 1);
    public const int PmdShift = 21;
    public const ulong PmdSize = 1UL << PmdShift;
    public const ulong PmdMask = ~(PmdSize - 1);
    public const int PudShift = 30;
    public const ulong PudSize = 1UL << PudShift;
    public const ulong PudMask = ~(PudSize - 1);
    public const int P4dShift = 39;
    public const ulong P4dSize = 1UL << P4dShift;
    public const ulong P4dMask = ~(P4dSize - 1);
    public const int PtrsPerTable = 512;
    public const int PtrsPerPte = 512;
    public const int PtrsPerPmd = 512;
    public const int PtrsPerPud = 512;
    public const int HPagePmdOrder = PmdShift - PageShift;
    public const int HPagePmdNr = 1 << HPagePmdOrder;

    /// <summary>DEFAULT_MAP_WINDOW = TASK_SIZE_MAX with 4-level paging: 2^47 - one page.</summary>
    public const ulong DefaultMapWindow = (1UL << 47) - PageSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int PteIndex(ulong address) => (int)((address >> PageShift) & (PtrsPerPte - 1));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int PmdIndex(ulong address) => (int)((address >> PmdShift) & (PtrsPerPmd - 1));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int PudIndex(ulong address) => (int)((address >> PudShift) & (PtrsPerPud - 1));
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static int P4dIndex(ulong address) => (int)((address >> P4dShift) & 511);

    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static ulong PageAlign(ulong x) => (x + PageSize - 1) & PageMask;
    [MethodImpl(MethodImplOptions.AggressiveInlining)] public static bool PageAligned(ulong x) => (x & (PageSize - 1)) == 0;

    /// <summary>pmd_addr_end: the end of the PMD range containing addr, clamped to end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong PmdAddrEnd(ulong addr, ulong end) => AddrEnd(addr, end, PmdSize);
    /// <summary>pud_addr_end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong PudAddrEnd(ulong addr, ulong end) => AddrEnd(addr, end, PudSize);
    /// <summary>p4d_addr_end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong P4dAddrEnd(ulong addr, ulong end) => AddrEnd(addr, end, P4dSize);

    /// <summary>The kernel's pXd_addr_end: boundary - 1 &lt; end - 1 so that end == 0 (top of space) works.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong AddrEnd(ulong addr, ulong end, ulong size)
    {
        ulong boundary = (addr + size) & ~(size - 1);
        return boundary - 1 < end - 1 ? boundary : end;
    }
}

/// <summary>4-level paging (PGDIR_SHIFT 39, P4D folded) or 5-level (LA57, PGDIR_SHIFT 48).</summary>
public sealed class PagingMode
{
    public static readonly PagingMode FourLevel = new(levels: 4);
    public static readonly PagingMode FiveLevel = new(levels: 5);

    private PagingMode(int levels)
    {
        Levels = levels;
        PgdirShift = levels == 5 ? 48 : 39;
        PtrsPerP4d = levels == 5 ? 512 : 1;
        VirtualMaskShift = levels == 5 ? 56 : 47;
    }

    public int Levels { get; }
    /// <summary>pgtable_l5_enabled().</summary>
    public bool L5Enabled => Levels == 5;
    public int PgdirShift { get; }
    public ulong PgdirSize => 1UL << PgdirShift;
    /// <summary>PTRS_PER_P4D: 1 when the level is folded.</summary>
    public int PtrsPerP4d { get; }
    /// <summary>__VIRTUAL_MASK_SHIFT.</summary>
    public int VirtualMaskShift { get; }
    /// <summary>TASK_SIZE_MAX: the top of the user address space.</summary>
    public ulong TaskSizeMax => (1UL << VirtualMaskShift) - Geometry.PageSize;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public int PgdIndex(ulong address) => (int)((address >> PgdirShift) & 511);

    /// <summary>pgd_addr_end.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong PgdAddrEnd(ulong addr, ulong end) => Geometry.AddrEnd(addr, end, PgdirSize);

    /// <summary>p4d_addr_end: with a folded P4D it is the PGD's range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong P4dAddrEnd(ulong addr, ulong end) => L5Enabled ? Geometry.P4dAddrEnd(addr, end) : end;

    public override string ToString() => $"{Levels}-level";
}
