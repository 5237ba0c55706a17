namespace NativeMmu.Physical;

/// <summary>Node/zone state items of /proc/vmstat (nr_*), kept as per-CPU deltas as the kernel does.</summary>
public enum VmStat
{
    NrFreePages,
    NrAnonPages,
    /// <summary>NR_ANON_THPS: pages of PMD-mapped anonymous THPs (vmstat prints it in THPs).</summary>
    NrAnonThps,
    NrPageTablePages,
    NrZeroPageUsers,
    Count,
}
