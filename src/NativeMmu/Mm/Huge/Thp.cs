using System.Globalization;
using NativeMmu.Arch.X86;

namespace NativeMmu.Mm;

/// <summary>A value of a THP "enabled" knob. <see cref="Inherit"/> exists only for the per-size knobs.</summary>
public enum ThpMode
{
    Never,
    Madvise,
    Always,
    Inherit,
}

/// <summary>enum mthp_stat_item: the per-size counters under hugepages-&lt;size&gt;kB/stats/.</summary>
public enum MthpStat
{
    AnonFaultAlloc,
    AnonFaultFallback,
    AnonFaultFallbackCharge,
    Split,
    SplitFailed,
    SplitDeferred,
    NrAnon,
    NrAnonPartiallyMapped,
    Count,
}

/// <summary>
/// /sys/kernel/mm/transparent_hugepage (mm/huge_memory.c): the top-level mode, the per-size knobs of
/// anonymous mTHP (orders 2..9, 16 KiB..2 MiB; order 1 is never used for anonymous memory), use_zero_page,
/// and the per-size stats. The knobs may be changed at any time, as through sysfs.
/// </summary>
public sealed class Thp
{
    /// <summary>HPAGE_PMD_ORDER.</summary>
    public const int PmdOrder = Geometry.PmdShift - Geometry.PageShift;
    /// <summary>THP_ORDERS_ALL_ANON: orders 2..PMD_ORDER.</summary>
    public const uint OrdersAllAnon = ((1u << (PmdOrder + 1)) - 1) & ~0b11u;

    private readonly ThpMode[] _perSize = new ThpMode[PmdOrder + 1];
    private readonly long[] _stats = new long[(PmdOrder + 1) * (int)MthpStat.Count];

    public Thp()
    {
        // The kernel's boot defaults: the PMD size inherits the top-level mode, every smaller size is off.
        for (int order = 0; order <= PmdOrder; order++) _perSize[order] = ThpMode.Never;
        _perSize[PmdOrder] = ThpMode.Inherit;
        Recompute();
    }

    private ThpMode _enabled = ThpMode.Madvise;

    /// <summary>/sys/kernel/mm/transparent_hugepage/enabled (always / madvise / never). Default madvise.</summary>
    public ThpMode Enabled
    {
        get => _enabled;
        set
        {
            if (value == ThpMode.Inherit) throw new ArgumentException("the top-level knob has no inherit");
            _enabled = value;
            Recompute();
        }
    }

    /// <summary>
    /// Whether any order below PMD order could be allowed for some VMA: the fault path's one-load test
    /// before it looks for an mTHP order at all.
    /// </summary>
    internal bool AnyAnonOrderPossible;

    /// <summary>Whether PMD order could be allowed for some VMA: the fault path's one-load test before create_huge_pmd.</summary>
    internal bool PmdOrderPossible;

    private bool OrderPossible(int order) => _perSize[order] is ThpMode.Always or ThpMode.Madvise || (_perSize[order] == ThpMode.Inherit && _enabled != ThpMode.Never);

    private void Recompute()
    {
        bool any = false;
        for (int order = 2; order < PmdOrder; order++) any |= OrderPossible(order);
        Volatile.Write(ref AnyAnonOrderPossible, any);
        Volatile.Write(ref PmdOrderPossible, OrderPossible(PmdOrder));
    }

    /// <summary>use_zero_page: a read fault on a PMD-sized range maps the huge zero page.</summary>
    public bool UseZeroPage { get; set; } = true;

    /// <summary>hugepages-&lt;size&gt;kB/enabled for one order.</summary>
    public ThpMode this[int order]
    {
        get => _perSize[CheckOrder(order)];
        set
        {
            _perSize[CheckOrder(order)] = value;
            Recompute();
        }
    }

    /// <summary>Sets the per-size knob for a folio size in bytes (e.g. 64 KiB).</summary>
    public void SetSize(ulong folioBytes, ThpMode mode) => this[OrderOfSize(folioBytes)] = mode;

    /// <summary>Every per-size knob to never (the top-level mode is left alone).</summary>
    public void DisableAllSizes()
    {
        for (int order = 2; order <= PmdOrder; order++) _perSize[order] = ThpMode.Never;
        Recompute();
    }

    public static int OrderOfSize(ulong folioBytes)
    {
        int order = System.Numerics.BitOperations.Log2(folioBytes) - Geometry.PageShift;
        if ((folioBytes & (folioBytes - 1)) != 0 || order < 2 || order > PmdOrder)
            throw new ArgumentException($"no anonymous mTHP size of {folioBytes} bytes (16K..2M, a power of two)");
        return order;
    }

    private static int CheckOrder(int order) => order is >= 2 and <= PmdOrder
        ? order : throw new ArgumentOutOfRangeException(nameof(order), "anonymous mTHP orders are 2..9");

    /// <summary>
    /// __thp_vma_allowable_orders for an anonymous VMA at fault time: the orders whose knob says always,
    /// madvise (with VM_HUGEPAGE) or inherit (with the top level always, or madvise and VM_HUGEPAGE).
    /// </summary>
    internal uint AllowableOrders(VmFlags vmFlags)
    {
        if ((vmFlags & (VmFlags.NoHugePage | VmFlags.Shared)) != 0) return 0; // shared anonymous memory is shmem's
        bool madvised = (vmFlags & VmFlags.HugePage) != 0;
        bool inherit = Enabled == ThpMode.Always || (madvised && Enabled == ThpMode.Madvise);
        uint mask = 0;
        for (int order = 2; order <= PmdOrder; order++)
        {
            ThpMode mode = _perSize[order];
            if (mode == ThpMode.Always || (mode == ThpMode.Madvise && madvised) || (mode == ThpMode.Inherit && inherit))
                mask |= 1u << order;
        }
        return mask & OrdersAllAnon;
    }

    /// <summary>count_mthp_stat / mod_mthp_stat (orders 1..PMD_ORDER only).</summary>
    internal void Count(int order, MthpStat item, long delta = 1)
    {
        if (order < 1 || order > PmdOrder) return;
        Interlocked.Add(ref _stats[order * (int)MthpStat.Count + (int)item], delta);
    }

    /// <summary>A per-size stat: hugepages-&lt;size&gt;kB/stats/&lt;name&gt;.</summary>
    public long Stat(int order, MthpStat item) => Volatile.Read(ref _stats[CheckOrder(order) * (int)MthpStat.Count + (int)item]);

    public static string StatName(MthpStat item) => item switch
    {
        MthpStat.AnonFaultAlloc => "anon_fault_alloc",
        MthpStat.AnonFaultFallback => "anon_fault_fallback",
        MthpStat.AnonFaultFallbackCharge => "anon_fault_fallback_charge",
        MthpStat.Split => "split",
        MthpStat.SplitFailed => "split_failed",
        MthpStat.SplitDeferred => "split_deferred",
        MthpStat.NrAnon => "nr_anon",
        MthpStat.NrAnonPartiallyMapped => "nr_anon_partially_mapped",
        _ => throw new ArgumentOutOfRangeException(nameof(item)),
    };

    private static string ModeName(ThpMode m) => m switch
    {
        ThpMode.Always => "always",
        ThpMode.Madvise => "madvise",
        ThpMode.Never => "never",
        _ => "inherit",
    };

    /// <summary>sysfs rendering: every choice, the current one in brackets ("always [madvise] never").</summary>
    private static string RenderChoice(ThpMode current, bool withInherit)
    {
        ThpMode[] choices = withInherit ? [ThpMode.Always, ThpMode.Inherit, ThpMode.Madvise, ThpMode.Never] : [ThpMode.Always, ThpMode.Madvise, ThpMode.Never];
        return string.Join(' ', choices.Select(c => c == current ? $"[{ModeName(c)}]" : ModeName(c)));
    }

    /// <summary>Reads a file below /sys/kernel/mm/transparent_hugepage/ (path relative to it), as the kernel prints it.</summary>
    public string Read(string path)
    {
        string[] parts = path.Trim('/').Split('/');
        if (parts is ["enabled"]) return RenderChoice(Enabled, withInherit: false) + "\n";
        if (parts is ["use_zero_page"]) return (UseZeroPage ? "1" : "0") + "\n";
        if (parts is ["hpage_pmd_size"]) return Geometry.PmdSize.ToString(CultureInfo.InvariantCulture) + "\n";
        if (parts.Length >= 2 && TryParseSizeDir(parts[0], out int order))
        {
            if (parts is [_, "enabled"]) return RenderChoice(_perSize[order], withInherit: true) + "\n";
            if (parts is [_, "stats", var stat])
                for (var i = (MthpStat)0; i < MthpStat.Count; i++)
                    if (StatName(i) == stat) return Stat(order, i).ToString(CultureInfo.InvariantCulture) + "\n";
        }
        throw new FileNotFoundException($"/sys/kernel/mm/transparent_hugepage/{path}");
    }

    /// <summary>Writes a knob below /sys/kernel/mm/transparent_hugepage/ ("enabled", "hugepages-64kB/enabled", "use_zero_page").</summary>
    public void Write(string path, string value)
    {
        string[] parts = path.Trim('/').Split('/');
        string v = value.Trim();
        if (parts is ["use_zero_page"])
        {
            UseZeroPage = v switch { "1" => true, "0" => false, _ => throw new ArgumentException("EINVAL") };
            return;
        }
        ThpMode mode = v switch
        {
            "always" => ThpMode.Always,
            "madvise" => ThpMode.Madvise,
            "never" => ThpMode.Never,
            "inherit" => ThpMode.Inherit,
            _ => throw new ArgumentException("EINVAL"),
        };
        if (parts is ["enabled"] && mode != ThpMode.Inherit) Enabled = mode;
        else if (parts is [var dir, "enabled"] && TryParseSizeDir(dir, out int order)) this[order] = mode;
        else throw new ArgumentException($"EINVAL: /sys/kernel/mm/transparent_hugepage/{path} <- {value}");
    }

    private static bool TryParseSizeDir(string dir, out int order)
    {
        order = 0;
        if (!dir.StartsWith("hugepages-", StringComparison.Ordinal) || !dir.EndsWith("kB", StringComparison.Ordinal)) return false;
        if (!ulong.TryParse(dir.AsSpan(10, dir.Length - 12), NumberStyles.None, CultureInfo.InvariantCulture, out ulong kb)) return false;
        ulong bytes = kb << 10;
        if (bytes == 0 || (bytes & (bytes - 1)) != 0) return false;
        order = System.Numerics.BitOperations.Log2(bytes) - Geometry.PageShift;
        return order is >= 2 and <= PmdOrder;
    }
}
