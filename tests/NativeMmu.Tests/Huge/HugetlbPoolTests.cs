using System.Text.RegularExpressions;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Mm.Huge;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Huge;

/// <summary>The hugetlb pools: sizes, the nr_hugepages family of knobs, reservations, surplus pages and the free routing.</summary>
public unsafe class HugetlbPoolTests
{
    internal static Kernel Boot(ulong memoryBytes = 64UL << 20, int pages2M = 0, int pages1G = 0, int cpus = 2)
        => new(new KernelConfig { MemoryBytes = memoryBytes, Cpus = cpus, DebugVm = true, HugePages2M = pages2M, HugePages1G = pages1G });

    private static long Meminfo(Kernel k, string field)
    {
        Match m = Regex.Match(Stats.RenderMeminfo(k.Machine), $@"^{field}:\s+(\d+)( kB)?$", RegexOptions.Multiline);
        Assert.That(m.Success, Is.True, $"/proc/meminfo has a {field} line");
        return long.Parse(m.Groups[1].Value);
    }

    [Test]
    public void Boot_reserves_the_command_lines_2MiB_pages_and_meminfo_reports_them()
    {
        using Kernel k = Boot(pages2M: 4);
        Hugetlb hugetlb = k.Machine.Hugetlb;
        Hstate h = hugetlb.Default;
        Assert.That(h.Order, Is.EqualTo(9));
        Assert.That(h.SizeBytes, Is.EqualTo(2UL << 20));
        Assert.That(hugetlb.ForSize(1UL << 30)!.Order, Is.EqualTo(18));
        Assert.That(hugetlb.ForSize(4096), Is.Null);
        Assert.That((h.NrHugepages, h.FreeHugepages, h.ResvHugepages, h.SurplusHugepages), Is.EqualTo((4L, 4L, 0L, 0L)));
        Assert.That(Meminfo(k, "HugePages_Total"), Is.EqualTo(4));
        Assert.That(Meminfo(k, "HugePages_Free"), Is.EqualTo(4));
        Assert.That(Meminfo(k, "Hugepagesize"), Is.EqualTo(2048));
        Assert.That(Meminfo(k, "Hugetlb"), Is.EqualTo(4 * 2048));
        Assert.That(Stats.RenderMeminfo(k.Machine), Does.Contain("HugePages_Total:       4\n").And.Contain("Hugepagesize:       2048 kB\n"));
    }

    [Test]
    public void The_nr_hugepages_knob_grows_and_shrinks_the_pool_and_every_frame_comes_back()
    {
        using Kernel k = Boot();
        Hugetlb hugetlb = k.Machine.Hugetlb;
        long free0 = TestSupport.SettledFreeFrames(k);
        hugetlb.Write("hugepages-2048kB/nr_hugepages", "5\n");
        Assert.That(hugetlb.Read("hugepages-2048kB/nr_hugepages"), Is.EqualTo("5\n"));
        Assert.That(hugetlb.Read("hugepages-2048kB/free_hugepages"), Is.EqualTo("5\n"));
        Assert.That(k.FreeFrames, Is.EqualTo(free0 - 5 * 512), "five 2 MiB folios taken from the buddy lists");
        hugetlb.Write("hugepages-2048kB/nr_hugepages", "2");
        Assert.That(hugetlb.Default.NrHugepages, Is.EqualTo(2));
        hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(k.FreeFrames, Is.EqualTo(free0), "the shrunk pool's folios are back with the page allocator");
    }

    [Test]
    public void The_pool_stops_growing_where_memory_runs_out()
    {
        using Kernel k = Boot(memoryBytes: 32UL << 20);
        long reached = k.Machine.Hugetlb.SetMaxHugePages(0, k.Machine.Hugetlb.Default, 1000);
        Assert.That(reached, Is.InRange(1, 15), "a 32 MiB machine holds fewer than sixteen 2 MiB pages beside its boot memory");
        Assert.That(k.Machine.Hugetlb.Default.NrHugepages, Is.EqualTo(reached));
    }

    [TestCase("hugepages-2048kB/free_hugepages")]
    [TestCase("hugepages-2048kB/resv_hugepages")]
    [TestCase("hugepages-1048576kB/surplus_hugepages")]
    public void The_counters_are_read_only(string path)
    {
        using Kernel k = Boot();
        Assert.That(() => k.Machine.Hugetlb.Write(path, "1"), Throws.TypeOf<UnauthorizedAccessException>());
    }

    [Test]
    public void Unknown_files_and_bad_values_are_refused()
    {
        using Kernel k = Boot();
        Hugetlb hugetlb = k.Machine.Hugetlb;
        Assert.That(() => hugetlb.Read("hugepages-4096kB/nr_hugepages"), Throws.TypeOf<FileNotFoundException>());
        Assert.That(() => hugetlb.Write("hugepages-2048kB/nr_hugepages", "-1"), Throws.ArgumentException);
        Assert.That(() => hugetlb.Write("hugepages-2048kB/nr_hugepages", "many"), Throws.ArgumentException);
        Assert.That(() => hugetlb.Write("hugepages-1048576kB/nr_overcommit_hugepages", "1"), Throws.ArgumentException, "gigantic pages cannot be overcommitted");
        Assert.That(hugetlb.SysfsDirectories, Is.EqualTo(new[] { "hugepages-2048kB", "hugepages-1048576kB" }));
    }

    [Test]
    public void A_folio_from_the_pool_is_typed_hugetlb_and_its_last_put_returns_it_to_the_pool()
    {
        using Kernel k = Boot(pages2M: 2);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        using CpuScope s = m.EnterCpu();
        ulong pfn = m.Hugetlb.AllocHugetlbFolio(h, s.Cpu.Id, useReserve: false);
        Assert.That(pfn, Is.Not.Zero);
        Assert.That(pfn % 512, Is.Zero, "naturally aligned");
        Page* head = m.Vmemmap.PfnToPage(pfn);
        Assert.That(head->RefCount, Is.EqualTo(1));
        Assert.That(m.Hugetlb.IsHugetlbFolio(pfn), Is.True);
        Assert.That(Folio.Order(head), Is.EqualTo(9));
        Assert.That(h.FreeHugepages, Is.EqualTo(1));
        Interlocked.Increment(ref head->RefCount); // a second reference, e.g. GUP's
        Rmap.FolioPut(s.Cpu, m, pfn + 5);           // put through a subpage, as a GUP put does
        Assert.That(h.FreeHugepages, Is.EqualTo(1), "one reference left");
        Rmap.FolioPut(s.Cpu, m, pfn);
        Assert.That(h.FreeHugepages, Is.EqualTo(2), "free_huge_folio queued it again");
        Assert.That(head->RefCount, Is.Zero, "pool folios are frozen");
        Assert.That(m.Hugetlb.IsHugetlbFolio(pfn), Is.True, "still a hugetlb folio in the pool");
        Assert.That(h.NrHugepages, Is.EqualTo(2));
    }

    [Test]
    public void Without_a_reservation_a_reserved_free_page_is_not_handed_out()
    {
        using Kernel k = Boot(pages2M: 1);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        Assert.That(m.Hugetlb.HugetlbAcctMemory(h, 1), Is.True);
        Assert.That(h.ResvHugepages, Is.EqualTo(1));
        Assert.That(m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: false), Is.Zero, "the only free page is promised");
        ulong pfn = m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: true);
        Assert.That(pfn, Is.Not.Zero);
        Assert.That(h.ResvHugepages, Is.Zero, "the reservation was consumed");
        Assert.That(m.Hugetlb.TestRestoreReserve(pfn), Is.True);
        using CpuScope s = m.EnterCpu();
        Rmap.FolioPut(s.Cpu, m, pfn);
        Assert.That(h.ResvHugepages, Is.EqualTo(1), "freed before it was mapped: the reservation comes back (HPG_restore_reserve)");
        pfn = m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: true);
        m.Hugetlb.ClearRestoreReserve(pfn); // what instantiating it in a mapping does
        Rmap.FolioPut(s.Cpu, m, pfn);
        Assert.That(h.ResvHugepages, Is.Zero, "a mapped folio's reservation is spent");
        Assert.That(h.FreeHugepages, Is.EqualTo(1));
    }

    [Test]
    public void A_reservation_beyond_the_pool_is_ENOMEM_without_overcommit_and_gathers_surplus_pages_with_it()
    {
        using Kernel k = Boot(pages2M: 1);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        long free0 = TestSupport.SettledFreeFrames(k);
        Assert.That(m.Hugetlb.HugetlbAcctMemory(h, 3), Is.False, "no overcommit: ENOMEM");
        Assert.That((h.ResvHugepages, h.NrHugepages, h.SurplusHugepages), Is.EqualTo((0L, 1L, 0L)), "a failed reservation changes nothing");
        m.Hugetlb.Write("hugepages-2048kB/nr_overcommit_hugepages", "2");
        Assert.That(m.Hugetlb.HugetlbAcctMemory(h, 3), Is.True);
        Assert.That((h.ResvHugepages, h.NrHugepages, h.FreeHugepages, h.SurplusHugepages), Is.EqualTo((3L, 3L, 3L, 2L)));
        Assert.That(Meminfo(k, "HugePages_Surp"), Is.EqualTo(2));
        Assert.That(Meminfo(k, "HugePages_Rsvd"), Is.EqualTo(3));
        Assert.That(m.Hugetlb.HugetlbAcctMemory(h, -3), Is.True);
        Assert.That((h.ResvHugepages, h.NrHugepages, h.FreeHugepages, h.SurplusHugepages), Is.EqualTo((0L, 1L, 1L, 0L)), "return_unused_surplus_pages");
        Assert.That(k.FreeFrames, Is.EqualTo(free0));
    }

    [Test]
    public void An_empty_pool_hands_out_surplus_pages_within_overcommit_and_frees_them_on_the_last_put()
    {
        using Kernel k = Boot();
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        long free0 = TestSupport.SettledFreeFrames(k);
        Assert.That(m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: false), Is.Zero, "no pool, no overcommit");
        m.Hugetlb.SetOvercommit(h, 1);
        ulong a = m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: false);
        Assert.That(a, Is.Not.Zero);
        Assert.That(m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: false), Is.Zero, "overcommit allows one");
        Assert.That((h.NrHugepages, h.SurplusHugepages, h.FreeHugepages), Is.EqualTo((1L, 1L, 0L)));
        using CpuScope s = m.EnterCpu();
        Rmap.FolioPut(s.Cpu, m, a);
        Assert.That((h.NrHugepages, h.SurplusHugepages), Is.EqualTo((0L, 0L)), "a surplus folio leaves the pool when freed");
        Assert.That(TestSupport.SettledFreeFrames(k), Is.EqualTo(free0));
    }

    [Test]
    public void Shrinking_below_the_pages_in_use_leaves_them_as_surplus_freed_on_their_last_put()
    {
        using Kernel k = Boot(pages2M: 2);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        ulong a = m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: false);
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That((h.NrHugepages, h.SurplusHugepages, h.PersistentHugepages), Is.EqualTo((1L, 1L, 0L)), "the page in use stays, as surplus");
        using CpuScope s = m.EnterCpu();
        Rmap.FolioPut(s.Cpu, m, a);
        Assert.That((h.NrHugepages, h.SurplusHugepages), Is.EqualTo((0L, 0L)));
    }

    [Test]
    public void A_1GiB_pool_comes_from_a_contiguous_range_at_boot_and_at_run_time()
    {
        using Kernel k = Boot(memoryBytes: 3UL << 30, pages1G: 1);
        Machine m = k.Machine;
        Hstate g = m.Hugetlb.ForSize(1UL << 30)!;
        Assert.That((g.NrHugepages, g.FreeHugepages), Is.EqualTo((1L, 1L)), "hugepagesz=1G hugepages=1");
        long free0 = TestSupport.SettledFreeFrames(k);
        m.Hugetlb.Write("hugepages-1048576kB/nr_hugepages", "2");
        Assert.That(g.NrHugepages, Is.EqualTo(2), "the third GiB is free and contiguous (the first holds the boot memory)");
        Assert.That(k.FreeFrames, Is.EqualTo(free0 - 262144));
        m.Hugetlb.Write("hugepages-1048576kB/nr_hugepages", "3");
        Assert.That(g.NrHugepages, Is.EqualTo(2), "no third contiguous free GiB");
        Assert.That(Meminfo(k, "Hugetlb"), Is.EqualTo(2 * 1048576));
        ulong pfn = m.Hugetlb.AllocHugetlbFolio(g, 0, useReserve: false);
        Assert.That(pfn % 262144, Is.Zero);
        Assert.That(Folio.Order(m.Vmemmap.PfnToPage(pfn)), Is.EqualTo(18));
        Assert.That(Folio.HeadPfn(m, pfn + 262143), Is.EqualTo(pfn));
        using (CpuScope s = m.EnterCpu()) Rmap.FolioPut(s.Cpu, m, pfn);
        m.Hugetlb.Write("hugepages-1048576kB/nr_hugepages", "0");
        Assert.That(k.FreeFrames, Is.EqualTo(free0 + 262144), "both gigantic ranges back with the buddy lists");
    }

    [Test]
    public void A_range_with_a_page_in_use_is_not_taken_for_a_1GiB_page()
    {
        using Kernel k = Boot(memoryBytes: 2UL << 30);
        Machine m = k.Machine;
        // The only candidate range is the second GiB; pin one frame of it.
        var held = new List<ulong>();
        using (CpuScope s = m.EnterCpu())
        {
            ulong p;
            while ((p = m.Allocator.AllocPages(s.Cpu.Id, FrameAllocator.MaxOrder, Gfp.None)) != 0 && p < (1UL << 18)) held.Add(p);
            Assert.That(p, Is.GreaterThanOrEqualTo(1UL << 18), "a block inside the second GiB");
            Assert.That(m.Hugetlb.SetMaxHugePages(s.Cpu.Id, m.Hugetlb.ForSize(1UL << 30)!, 1), Is.Zero);
            m.Allocator.FreePages(s.Cpu.Id, p, FrameAllocator.MaxOrder);
            Assert.That(m.Hugetlb.SetMaxHugePages(s.Cpu.Id, m.Hugetlb.ForSize(1UL << 30)!, 1), Is.EqualTo(1));
            foreach (ulong b in held) m.Allocator.FreePages(s.Cpu.Id, b, FrameAllocator.MaxOrder);
        }
    }
}
