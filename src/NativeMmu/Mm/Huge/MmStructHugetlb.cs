namespace NativeMmu.Mm
{
    public sealed partial class MmStruct
    {
        /// <summary>mm->hugetlb_usage: base pages mapped by hugetlb entries (HugetlbPages in /proc/PID/status). Atomic: faults add under mmap_lock for read.</summary>
        internal long HugetlbUsage;
    }
}
