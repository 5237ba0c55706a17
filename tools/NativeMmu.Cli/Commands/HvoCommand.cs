using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Mm.Huge;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu hvo`: HugeTLB Vmemmap Optimization per design and size. For each run a fresh kernel
/// grows the pool to --count pages through nr_hugepages (one batch, as set_max_huge_pages allocates
/// it), then shrinks it to 0 (one restore batch). Reported: the struct-page frames (nr_memmap_pages +
/// nr_memmap_boot_pages) before and with the pool, the frames HVO freed per page, what it cost (PTE
/// tables of split vmemmap PMDs, the shared tail page), allocation and free time per page (the best of
/// three grow/shrink cycles; the kernel documents HVO as about 2x slower than Off), the kernel TLB
/// flushes of the first grow and shrink, and the RFC's "300 GB of 1 GiB pages" figure from the
/// measured per-page saving.
/// </summary>
public static class HvoCommand
{
    public sealed record Run(
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("size_bytes")] ulong SizeBytes,
        [property: JsonPropertyName("count")] int Count,
        [property: JsonPropertyName("vmemmap_frames_before")] long VmemmapFramesBefore,
        [property: JsonPropertyName("vmemmap_frames_after")] long VmemmapFramesAfter,
        [property: JsonPropertyName("saved_frames_per_page")] long SavedFramesPerPage,
        [property: JsonPropertyName("alloc_us_per_page")] double AllocUsPerPage,
        [property: JsonPropertyName("free_us_per_page")] double FreeUsPerPage,
        [property: JsonPropertyName("tlb_flushes")] long TlbFlushes,
        [property: JsonPropertyName("pte_table_frames")] long PteTableFrames,
        [property: JsonPropertyName("shared_tail_frames")] long SharedTailFrames,
        [property: JsonPropertyName("net_saved_frames")] long NetSavedFrames,
        [property: JsonPropertyName("vmemmap_frames_after_free")] long VmemmapFramesAfterFree);

    public sealed record Rfc(
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("pages")] int Pages,
        [property: JsonPropertyName("saved_frames_per_page")] long SavedFramesPerPage,
        [property: JsonPropertyName("saved_mib")] double SavedMib,
        [property: JsonPropertyName("net_saved_mib")] double NetSavedMib,
        [property: JsonPropertyName("arithmetic")] string Arithmetic);

    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("runs")] IReadOnlyList<Run> Runs,
        [property: JsonPropertyName("rfc_300gb")] IReadOnlyList<Rfc> Rfc300Gb);

    private static readonly (string Name, HvoMode Mode)[] Modes =
        [("off", HvoMode.Off), ("keep-two", HvoMode.KeepTwo), ("keep-head", HvoMode.KeepHead), ("shared-tails", HvoMode.SharedTails)];

    public static Command Create()
    {
        var size = new Option<string>("--size") { Description = "Huge page size: 2M | 1G | both", DefaultValueFactory = _ => "both" };
        size.AcceptOnlyFromAmong("2M", "1G", "both");
        var count = new Option<int>("--count") { Description = "Huge pages in the pool per run", DefaultValueFactory = _ => 8 };
        var mode = new Option<string>("--mode") { Description = "HVO design: off | keep-two (the 2020 RFC) | keep-head (5.18 to 7.0) | shared-tails (2026) | all", DefaultValueFactory = _ => "all" };
        mode.AcceptOnlyFromAmong("off", "keep-two", "keep-head", "shared-tails", "all");
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var cmd = new Command("hvo", "HugeTLB Vmemmap Optimization: vmemmap frames freed per huge page, its costs and its speed, per design")
        {
            size, count, mode, json,
        };
        cmd.SetAction(r =>
        {
            int n = r.GetValue(count);
            if (n < 1)
            {
                Console.Error.WriteLine("hvo: --count must be at least 1");
                return 1;
            }
            Report report = Measure(r.GetValue(size)!, n, r.GetValue(mode)!);
            if (r.GetValue(json)) Console.Out.WriteLine(JsonSerializer.Serialize(report));
            else Print(report);
            return 0;
        });
        return cmd;
    }

    public static Report Measure(string size, int count, string mode)
    {
        var runs = new List<Run>();
        foreach (ulong bytes in size switch { "2M" => new[] { 2UL << 20 }, "1G" => [1UL << 30], _ => [2UL << 20, 1UL << 30] })
            foreach ((string name, HvoMode m) in Modes)
                if (mode == "all" || mode == name) runs.Add(One(name, m, bytes, count));
        var rfc = new List<Rfc>();
        foreach (Run run in runs.Where(x => x.SizeBytes == 1UL << 30 && x.Mode != "off"))
        {
            const int pages = 300;
            double mib = pages * (double)run.SavedFramesPerPage * 4096 / (1 << 20);
            double netPerPage = (double)run.NetSavedFrames / run.Count;
            double netMib = pages * netPerPage * 4096 / (1 << 20);
            string arithmetic = string.Create(CultureInfo.InvariantCulture,
                $"{pages} pages x {run.SavedFramesPerPage} frames x 4 KiB = {pages * run.SavedFramesPerPage} frames = {mib:F1} MiB; net of PTE tables and shared pages {netPerPage:F2} frames per page -> {netMib:F1} MiB");
            rfc.Add(new Rfc(run.Mode, pages, run.SavedFramesPerPage, Math.Round(mib, 1), Math.Round(netMib, 1), arithmetic));
        }
        return new Report("hvo", runs, rfc);
    }

    private static long Memmap(Kernel k) => k.VmstatValue("nr_memmap_pages") + k.VmstatValue("nr_memmap_boot_pages");

    /// <summary>One design and size on a fresh kernel with room for the pool.</summary>
    public static Run One(string name, HvoMode mode, ulong bytes, int count)
    {
        bool gigantic = bytes == 1UL << 30;
        // 1 GiB pages need whole free GiBs: the first holds the boot memory, so one more.
        ulong memory = gigantic ? (ulong)(count + 1) << 30 : (64UL << 20) + (ulong)count * bytes * 2;
        using var kernel = new Kernel(new KernelConfig { MemoryBytes = memory, Cpus = 2, Hvo = mode });
        Machine m = kernel.Machine;
        Hugetlb hugetlb = m.Hugetlb;
        Hstate h = hugetlb.ForSize(bytes)!;
        using Cpu cpu = kernel.AttachCpu();
        long before = Memmap(kernel), flushes0 = m.Vmemmap.KernelTlbFlushes, split0 = m.Vmemmap.SplitPmds;
        double bestAlloc = double.MaxValue, bestFree = double.MaxValue;
        long after = 0, freed = 0, shared = 0, flushes = 0, pte = 0;
        for (int cycle = 0; cycle < 3; cycle++)
        {
            var sw = Stopwatch.StartNew();
            long got = hugetlb.SetMaxHugePages(cpu.Id, h, count);
            double alloc = sw.Elapsed.TotalMicroseconds / count;
            if (got != count) throw new InvalidOperationException($"hvo: only {got} of {count} {h.Name} pages could be allocated");
            if (cycle == 0)
            {
                after = Memmap(kernel);
                freed = hugetlb.VmemmapFramesFreed;
                shared = hugetlb.SharedTailPages;
                pte = m.Vmemmap.SplitPmds - split0;
            }
            sw.Restart();
            hugetlb.SetMaxHugePages(cpu.Id, h, 0);
            double free = sw.Elapsed.TotalMicroseconds / count;
            if (cycle == 0) flushes = m.Vmemmap.KernelTlbFlushes - flushes0;
            bestAlloc = Math.Min(bestAlloc, alloc);
            bestFree = Math.Min(bestFree, free);
        }
        long afterFree = Memmap(kernel);
        return new Run(name, bytes, count, before, after, freed / count, Math.Round(bestAlloc, 2), Math.Round(bestFree, 2),
            flushes, pte, shared, freed - pte - shared, afterFree);
    }

    private static void Print(Report r)
    {
        Console.WriteLine("HugeTLB Vmemmap Optimization: struct-page frames per design (one grow batch, one shrink batch)");
        Console.WriteLine($"{"mode",-13} {"size",5} {"count",5} {"memmap before",13} {"with pool",10} {"saved/page",10} {"pte tbl",7} {"shared",6} {"net saved",9} {"alloc us/pg",11} {"free us/pg",10} {"x off",5} {"flushes",7}");
        foreach (Run run in r.Runs)
        {
            Run? off = r.Runs.FirstOrDefault(x => x.Mode == "off" && x.SizeBytes == run.SizeBytes);
            string ratio = off is null || off.AllocUsPerPage <= 0 ? "-" : (run.AllocUsPerPage / off.AllocUsPerPage).ToString("F1", CultureInfo.InvariantCulture);
            string sz = run.SizeBytes == 1UL << 30 ? "1G" : "2M";
            Console.WriteLine(string.Create(CultureInfo.InvariantCulture,
                $"{run.Mode,-13} {sz,5} {run.Count,5} {run.VmemmapFramesBefore,13} {run.VmemmapFramesAfter,10} {run.SavedFramesPerPage,10} {run.PteTableFrames,7} {run.SharedTailFrames,6} {run.NetSavedFrames,9} {run.AllocUsPerPage,11:F1} {run.FreeUsPerPage,10:F1} {ratio,5} {run.TlbFlushes,7}"));
        }
        foreach (Rfc x in r.Rfc300Gb) Console.WriteLine($"RFC figure, {x.Mode}: {x.Arithmetic} (the RFC: 4797 MB)");
    }
}
