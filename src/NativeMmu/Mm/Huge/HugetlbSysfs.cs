using System.Globalization;
using System.Text;
using NativeMmu.Cpus;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// /sys/kernel/mm/hugepages/hugepages-&lt;size&gt;kB/ (hugetlb_sysfs_init): nr_hugepages and
/// nr_overcommit_hugepages writable, free_hugepages, resv_hugepages and surplus_hugepages read-only,
/// demote (write-only) and demote_size where a smaller size exists,
/// and the HugePages_* lines of /proc/meminfo (hugetlb_report_meminfo).
/// </summary>
public sealed partial class Hugetlb
{
    private static readonly string[] Files = ["nr_hugepages", "nr_overcommit_hugepages", "free_hugepages", "resv_hugepages", "surplus_hugepages"];

    /// <summary>The directories under /sys/kernel/mm/hugepages.</summary>
    public IEnumerable<string> SysfsDirectories => Hstates.Select(h => h.Name);

    /// <summary>The files of each directory.</summary>
    public static IReadOnlyList<string> SysfsFiles => Files;

    /// <summary>Reads a file below /sys/kernel/mm/hugepages/ ("hugepages-2048kB/nr_hugepages"), as the kernel prints it.</summary>
    public string Read(string path)
    {
        if (ResolveDemote(path) is ({ } src, var demote))
        {
            if (demote == "demote") throw new UnauthorizedAccessException($"EACCES: /sys/kernel/mm/hugepages/{path} is write-only");
            return $"{DemoteTarget(src)!.SizeBytes >> 10}kB\n";
        }
        (Hstate h, string file) = Resolve(path);
        long value = file switch
        {
            "nr_hugepages" => h.PersistentHugepages,
            "nr_overcommit_hugepages" => h.NrOvercommitHugepages,
            "free_hugepages" => h.FreeHugepages,
            "resv_hugepages" => h.ResvHugepages,
            "surplus_hugepages" => h.SurplusHugepages,
            _ => throw new FileNotFoundException($"/sys/kernel/mm/hugepages/{path}"),
        };
        return value.ToString(CultureInfo.InvariantCulture) + "\n";
    }

    /// <summary>
    /// Writes nr_hugepages (__nr_hugepages_store_common → set_max_huge_pages) or nr_overcommit_hugepages.
    /// The read-only files refuse writes (EACCES: their mode is 0444), and a value that is not a number is EINVAL.
    /// </summary>
    public void Write(string path, string value)
    {
        if (ResolveDemote(path) is ({ } src, "demote"))
        {
            if (!long.TryParse(value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long n))
                throw new ArgumentException($"EINVAL: /sys/kernel/mm/hugepages/{path} <- {value}");
            using CpuScope s = _m.EnterCpu();
            Demote(s.Cpu.Id, src, n);
            return;
        }
        if (ResolveDemote(path) is (_, "demote_size")) throw new ArgumentException("EINVAL: only the one smaller size exists");
        (Hstate h, string file) = Resolve(path);
        if (!long.TryParse(value.Trim(), NumberStyles.None, CultureInfo.InvariantCulture, out long count))
            throw new ArgumentException($"EINVAL: /sys/kernel/mm/hugepages/{path} <- {value}");
        switch (file)
        {
            case "nr_hugepages":
                using (CpuScope s = _m.EnterCpu()) SetMaxHugePages(s.Cpu.Id, h, count);
                break;
            case "nr_overcommit_hugepages":
                SetOvercommit(h, count);
                break;
            default:
                throw new UnauthorizedAccessException($"EACCES: /sys/kernel/mm/hugepages/{path} is read-only");
        }
    }

    /// <summary>demote and demote_size exist only for sizes with a smaller one to demote to (1 GiB here).</summary>
    private (Hstate?, string?) ResolveDemote(string path)
    {
        string[] parts = path.Trim('/').Split('/');
        if (parts.Length == 2 && parts[1] is "demote" or "demote_size")
            foreach (Hstate h in Hstates)
                if (h.Name == parts[0] && DemoteTarget(h) != null) return (h, parts[1]);
        return (null, null);
    }

    private (Hstate, string) Resolve(string path)
    {
        string[] parts = path.Trim('/').Split('/');
        if (parts.Length == 2)
            foreach (Hstate h in Hstates)
                if (h.Name == parts[0] && Files.Contains(parts[1])) return (h, parts[1]);
        throw new FileNotFoundException($"/sys/kernel/mm/hugepages/{path}");
    }

    /// <summary>hugetlb_report_meminfo: the default size's counts, its size, and every size's pages in kB.</summary>
    public void ReportMeminfo(StringBuilder sb)
    {
        Hstate d = Default;
        sb.Append(CultureInfo.InvariantCulture, $"HugePages_Total:   {d.NrHugepages,5}\n");
        sb.Append(CultureInfo.InvariantCulture, $"HugePages_Free:    {d.FreeHugepages,5}\n");
        sb.Append(CultureInfo.InvariantCulture, $"HugePages_Rsvd:    {d.ResvHugepages,5}\n");
        sb.Append(CultureInfo.InvariantCulture, $"HugePages_Surp:    {d.SurplusHugepages,5}\n");
        sb.Append(CultureInfo.InvariantCulture, $"Hugepagesize:   {d.SizeBytes >> 10,8} kB\n");
        ulong total = 0;
        foreach (Hstate h in Hstates) total += (ulong)h.NrHugepages * h.SizeBytes;
        sb.Append(CultureInfo.InvariantCulture, $"Hugetlb:        {total >> 10,8} kB\n");
    }
}
