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
    /// <summary>NR_MEMMAP (nr_memmap_pages): struct-page memory allocated after boot.</summary>
    NrMemmapPages,
    /// <summary>NR_MEMMAP_BOOT (nr_memmap_boot_pages): struct-page memory allocated at boot.</summary>
    NrMemmapBootPages,
    Count,
}
