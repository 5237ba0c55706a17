using NativeMmu.Mm;
using NativeMmu.Mm.Huge;

namespace NativeMmu.Tests.Mm.Hugetlb;

/// <summary>Kernels with hugetlb pools, and the helpers of the hugetlb selftests (vm_util.h's get_free_hugepages and friends).</summary>
internal static class HugetlbSupport
{
    public const ulong Size2M = 2UL << 20;
    public const ulong Size1G = 1UL << 30;

    /// <summary>
    /// A kernel with <paramref name="pages"/> huge pages of <paramref name="size"/> in the pool and the
    /// invariant mode on. A 1 GiB pool needs the gigantic pages and some memory besides.
    /// </summary>
    public static Kernel Boot(ulong size, int pages, HvoMode hvo, int cpus = 2)
    {
        ulong memory = size == Size1G ? (ulong)(pages + 1) * Size1G : 64UL << 20;
        return new Kernel(new KernelConfig
        {
            MemoryBytes = memory,
            Cpus = cpus,
            DebugVm = true,
            HugePages2M = size == Size2M ? pages : 0,
            HugePages1G = size == Size1G ? pages : 0,
            Hvo = hvo,
        });
    }

    /// <summary>Every HugeTLB Vmemmap Optimization design: each hugetlb test runs in all of them.</summary>
    public static IEnumerable<HvoMode> Modes => Enum.GetValues<HvoMode>();

    public static Hstate Hstate(Kernel k, ulong size) => k.Machine.Hugetlb.ForSize(size)!;

    /// <summary>get_free_hugepages: HugePages_Free of the size.</summary>
    public static long FreeHugepages(Kernel k, ulong size) => Hstate(k, size).FreeHugepages;

    /// <summary>MAP_HUGE_2MB or MAP_HUGE_1GB.</summary>
    public static MapFlags HugeFlag(ulong size) => size == Size1G ? MapFlags.Huge1GB : MapFlags.Huge2MB;

    /// <summary>mmap(NULL, len, PROT_READ|PROT_WRITE, MAP_PRIVATE|MAP_ANONYMOUS|MAP_HUGETLB|MAP_HUGE_*, -1, 0).</summary>
    public static Errno MmapHugetlb(Process p, ulong len, ulong size, out ulong addr, Prot prot = Prot.ReadWrite, MapFlags extra = MapFlags.None)
        => p.Mmap(0, len, prot, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb | HugeFlag(size) | extra, out addr);

    public static ulong MapHugetlb(Process p, ulong len, ulong size)
    {
        Errno e = MmapHugetlb(p, len, size, out ulong addr);
        Assert.That(e, Is.EqualTo(Errno.Success), "mmap(MAP_HUGETLB)");
        return addr;
    }
}
