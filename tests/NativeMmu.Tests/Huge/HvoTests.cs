using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Mm.Huge;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Tests.Huge;

/// <summary>HugeTLB Vmemmap Optimization in each design: the frames it frees, what it costs, restore, fake heads, poison.</summary>
public unsafe class HvoTests
{
    private static Kernel Boot(HvoMode mode, ulong memoryBytes = 64UL << 20, int pages2M = 0, int pages1G = 0)
        => new(new KernelConfig { MemoryBytes = memoryBytes, Cpus = 2, DebugVm = true, Hvo = mode, HugePages2M = pages2M, HugePages1G = pages1G });

    private static long Memmap(Kernel k) => k.VmstatValue("nr_memmap_pages") + k.VmstatValue("nr_memmap_boot_pages");

    private static List<ulong> PoolFolios(Machine m, Hstate h)
    {
        // Take every free folio out and put it back: their head PFNs.
        var heads = new List<ulong>();
        ulong pfn;
        while ((pfn = m.Hugetlb.AllocHugetlbFolio(h, 0, useReserve: false)) != 0) heads.Add(pfn);
        using CpuScope s = m.EnterCpu();
        foreach (ulong head in heads) Rmap.FolioPut(s.Cpu, m, head);
        return heads;
    }

    private static readonly object[] Savings2M =
    [
        new object[] { HvoMode.Off, 0 },
        new object[] { HvoMode.KeepTwo, 6 },
        new object[] { HvoMode.KeepHead, 7 },
        new object[] { HvoMode.SharedTails, 7 },
    ];

    [TestCaseSource(nameof(Savings2M))]
    public void Eight_2MiB_pages_free_the_designs_frames_less_one_PTE_table_per_split_PMD_and_the_shared_page(HvoMode mode, int perPage)
    {
        using Kernel k = Boot(mode);
        Machine m = k.Machine;
        long free0 = TestSupport.SettledFreeFrames(k), memmap0 = Memmap(k), flushes0 = m.Vmemmap.KernelTlbFlushes;
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "8");
        List<ulong> heads = PoolFolios(m, m.Hugetlb.Default);
        Assert.That(heads, Has.Count.EqualTo(8));
        // One vmemmap PMD maps the struct pages of 128 MiB (32768 frames): a 64 MiB machine has one.
        long pteTables = heads.Select(p => p >> 15).Distinct().Count();
        long shared = mode == HvoMode.SharedTails ? 1 : 0;
        if (mode == HvoMode.Off) pteTables = 0;
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.EqualTo(8L * perPage), $"{perPage} vmemmap frames freed per 2 MiB page");
        Assert.That(m.Vmemmap.SplitPmds, Is.EqualTo(pteTables), "one PTE table per vmemmap PMD split");
        Assert.That(Memmap(k), Is.EqualTo(memmap0 - 8L * perPage + shared), "nr_memmap(_boot)_pages lowered; the shared tail page is memmap too");
        Assert.That(k.FreeFrames, Is.EqualTo(free0 - 8 * 512 + 8L * perPage - pteTables - shared),
            "net: the pool's frames, given back the freed vmemmap frames, less the PTE tables and the shared page");
        Assert.That(m.Vmemmap.KernelTlbFlushes - flushes0, Is.EqualTo(mode == HvoMode.Off ? 0 : 2), "6.7's batch: one flush after the splits, one after the remaps");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.Zero);
        Assert.That(Memmap(k), Is.EqualTo(memmap0), "restored: every struct page has its frame again");
        Assert.That(m.Vmemmap.KernelTlbFlushes - flushes0, Is.EqualTo(mode == HvoMode.Off ? 0 : 3), "one flush for the restore batch");
        Assert.That(TestSupport.SettledFreeFrames(k), Is.EqualTo(free0 - pteTables), "every frame back but the PTE tables of the split vmemmap PMDs, which stay split");
    }

    [TestCase(HvoMode.KeepTwo, 4094)]
    [TestCase(HvoMode.KeepHead, 4095)]
    [TestCase(HvoMode.SharedTails, 4095)]
    public void A_1GiB_page_frees_the_designs_frames_less_eight_PTE_tables(HvoMode mode, int perPage)
    {
        using Kernel k = Boot(mode, memoryBytes: 2UL << 30, pages1G: 1);
        Machine m = k.Machine;
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.EqualTo(perPage));
        Assert.That(m.Vmemmap.SplitPmds, Is.EqualTo(8), "16 MiB of struct pages lie under eight vmemmap PMDs");
        Hstate g = m.Hugetlb.ForSize(1UL << 30)!;
        long free0 = TestSupport.SettledFreeFrames(k), memmap0 = Memmap(k);
        m.Hugetlb.Write("hugepages-1048576kB/nr_hugepages", "0");
        Assert.That(g.NrHugepages, Is.Zero);
        long shared = mode == HvoMode.SharedTails ? 1 : 0;
        Assert.That(Memmap(k), Is.EqualTo(memmap0 + perPage - shared));
        Assert.That(TestSupport.SettledFreeFrames(k), Is.EqualTo(free0 + 262144 - perPage + shared));
    }

    [TestCase(HvoMode.Off)]
    [TestCase(HvoMode.KeepTwo)]
    [TestCase(HvoMode.KeepHead)]
    [TestCase(HvoMode.SharedTails)]
    public void Page_folio_finds_the_head_from_every_subpage_in_every_mode(HvoMode mode)
    {
        using Kernel k = Boot(mode, memoryBytes: 2UL << 30, pages2M: 2, pages1G: 1);
        Machine m = k.Machine;
        foreach (Hstate h in m.Hugetlb.Hstates)
            foreach (ulong head in PoolFolios(m, h))
            {
                Assert.That(m.Hugetlb.VmemmapOptimized(head), Is.EqualTo(mode != HvoMode.Off));
                for (ulong i = 0; i < h.PagesPerHugePage; i++)
                    if (Folio.HeadPfn(m, head + i) != head)
                        Assert.Fail($"{mode}: compound_head of subpage {i} of {head:x} is {Folio.HeadPfn(m, head + i):x}");
                if (head + h.PagesPerHugePage < m.Memory.Frames)
                    Assert.That(Folio.HeadPfn(m, head + h.PagesPerHugePage), Is.Not.EqualTo(head), "the next frame is not in the folio");
            }
        Assert.That(Folio.HeadPfn(m, 5000), Is.EqualTo(5000UL), "an order-0 page is its own folio");
    }

    [Test]
    public void Keep_head_makes_fake_heads_that_page_fixed_fake_head_resolves()
    {
        using Kernel k = Boot(HvoMode.KeepHead, pages2M: 1);
        Machine m = k.Machine;
        ulong head = PoolFolios(m, m.Hugetlb.Default)[0];
        Page* alias = m.Vmemmap.PfnToPage(head + 64);
        Assert.That(alias->IsHead, Is.True, "struct page 64 reads the head's bytes: it looks like a head");
        Assert.That(alias->IsTail, Is.False);
        Assert.That(Folio.HeadPfn(m, head + 64), Is.EqualTo(head), "page_fixed_fake_head");
        Assert.That(m.Vmemmap.CompoundHeadKey & Vmemmap.KeyFakeHeads, Is.Not.Zero, "the static key is on while a folio has fake heads");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(m.Vmemmap.CompoundHeadKey, Is.Zero, "and off again when none has");
        Assert.That(m.Vmemmap.PfnToPage(head + 64)->IsHead, Is.False, "restored: struct page 64 is its own again");
    }

    [Test]
    public void In_keep_two_the_tails_alias_one_another_which_is_why_the_kernel_maps_them_read_only()
    {
        using Kernel k = Boot(HvoMode.KeepTwo, pages2M: 1);
        Machine m = k.Machine;
        ulong head = PoolFolios(m, m.Hugetlb.Default)[0];
        Page* p130 = m.Vmemmap.PfnToPageForWrite(head + 130); // vmemmap page 2, mapped writable onto page 1
        p130->SetFlagAtomic(PG.Arch1);                          // a per-subpage bit, as PG_arch_1 is on some arches
        Assert.That(m.Vmemmap.PfnToPage(head + 66)->TestFlag(PG.Arch1), Is.True, "the write shows on subpage 66 (page 1)");
        Assert.That(m.Vmemmap.PfnToPage(head + 450)->TestFlag(PG.Arch1), Is.True, "and on subpage 450 (page 7)");
        Assert.That(m.Vmemmap.PfnToPage(head + 2)->TestFlag(PG.Arch1), Is.False, "the head page's struct pages are their own");
        p130->ClearFlagAtomic(PG.Arch1);
    }

    [TestCase(HvoMode.KeepHead)]
    [TestCase(HvoMode.SharedTails)]
    public void A_store_into_a_read_only_tail_struct_page_faults(HvoMode mode)
    {
        using Kernel k = Boot(mode, pages2M: 1);
        Machine m = k.Machine;
        ulong head = PoolFolios(m, m.Hugetlb.Default)[0];
        Assert.That(m.Vmemmap.StructPageWritable(head + 5), Is.True, "subpage 5 lies in the head vmemmap page");
        Assert.That(m.Vmemmap.StructPageWritable(head + 130), Is.False);
        // SetPageHWPoison on the raw tail, as memory_failure did before raw error lists.
        Assert.That(() => m.Vmemmap.PfnToPageForWrite(head + 130)->SetFlagAtomic(PG.Hwpoison),
            Throws.TypeOf<KernelBugException>().With.Message.Contains("permissions violation"));
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(m.Vmemmap.StructPageWritable(head + 130), Is.True, "restored pages are writable");
    }

    [TestCase(HvoMode.KeepTwo)]
    [TestCase(HvoMode.KeepHead)]
    [TestCase(HvoMode.SharedTails)]
    public void A_failed_restore_keeps_the_page_as_surplus_and_a_later_free_succeeds(HvoMode mode)
    {
        using Kernel k = Boot(mode, pages2M: 1);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        long memmapWithPool = Memmap(k);
        m.Allocator.FailPageAlloc = _ => true; // every __GFP_RETRY_MAYFAIL allocation fails
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        m.Allocator.FailPageAlloc = null;
        Assert.That((h.NrHugepages, h.SurplusHugepages, h.FreeHugepages), Is.EqualTo((1L, 1L, 1L)), "kept in the pool as a surplus page");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.EqualTo(m.Hugetlb.OptimizableVmemmapPages(h)), "still optimized");
        Assert.That(Memmap(k), Is.EqualTo(memmapWithPool), "nothing restored");
        // return_unused_surplus_pages frees surplus pages: reserve one page and give it back.
        Assert.That(m.Hugetlb.HugetlbAcctMemory(h, 1), Is.True);
        Assert.That(m.Hugetlb.HugetlbAcctMemory(h, -1), Is.True);
        Assert.That((h.NrHugepages, h.SurplusHugepages), Is.EqualTo((0L, 0L)), "the later free restored and freed it");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.Zero);
    }

    [TestCase(HvoMode.KeepHead)]
    public void A_surplus_page_left_by_a_failed_restore_becomes_persistent_again_and_is_freed_by_nr_hugepages(HvoMode mode)
    {
        using Kernel k = Boot(mode, pages2M: 1);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        m.Allocator.FailPageAlloc = _ => true;
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        m.Allocator.FailPageAlloc = null;
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "1");
        Assert.That((h.NrHugepages, h.SurplusHugepages), Is.EqualTo((1L, 0L)), "adjust_pool_surplus(-1): the surplus page is persistent, no new allocation");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(h.NrHugepages, Is.Zero);
    }

    [TestCase(HvoMode.Off)]
    [TestCase(HvoMode.KeepTwo)]
    [TestCase(HvoMode.KeepHead)]
    [TestCase(HvoMode.SharedTails)]
    public void Hwpoison_of_a_free_pool_page_keeps_the_poisoned_frame_and_returns_every_other(HvoMode mode)
    {
        using Kernel k = Boot(mode);
        Machine m = k.Machine;
        long free0 = TestSupport.SettledFreeFrames(k), memmap0 = Memmap(k);
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "1");
        long pteTables = m.Vmemmap.SplitPmds;
        ulong head = PoolFolios(m, m.Hugetlb.Default)[0];
        ulong bad = head + 300; // in a tail vmemmap page: read-only under KeepHead and SharedTails
        using CpuScope s = m.EnterCpu();
        Assert.That(m.Hugetlb.MemoryFailure(s.Cpu.Id, bad), Is.Zero, "recovered: the free folio was dissolved");
        Assert.That(m.Hugetlb.Default.NrHugepages, Is.Zero);
        Assert.That(m.Vmemmap.PfnToPage(bad)->TestFlag(PG.Hwpoison), Is.True, "the poison moved onto the raw page");
        Assert.That(m.Vmemmap.PfnToPage(head)->TestFlag(PG.Hwpoison), Is.False, "and off the head");
        Assert.That(m.Vmemmap.PfnToPage(bad)->PageType, Is.Not.EqualTo(PageTypes.Buddy << 24), "taken off the buddy lists");
        Assert.That(Memmap(k), Is.EqualTo(memmap0));
        Assert.That(TestSupport.SettledFreeFrames(k), Is.EqualTo(free0 - 1 - pteTables), "all 511 healthy frames are free again");
        // Never handed out again: drain the allocator completely.
        var got = new List<ulong>();
        ulong p;
        while ((p = m.Allocator.AllocPages(s.Cpu.Id, 0, Gfp.None)) != 0) got.Add(p);
        Assert.That(got, Does.Not.Contain(bad));
        Assert.That(got, Does.Contain(bad - 1).And.Contain(bad + 1));
        foreach (ulong f in got) m.Allocator.FreePages(s.Cpu.Id, f, 0);
    }

    [TestCase(HvoMode.KeepHead)]
    [TestCase(HvoMode.SharedTails)]
    public void Hwpoison_of_a_folio_in_use_waits_for_its_last_put_then_dissolves_it(HvoMode mode)
    {
        using Kernel k = Boot(mode, pages2M: 1);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        using CpuScope s = m.EnterCpu();
        ulong head = m.Hugetlb.AllocHugetlbFolio(h, s.Cpu.Id, useReserve: false);
        Assert.That(m.Hugetlb.MemoryFailure(s.Cpu.Id, head + 100), Is.EqualTo(-(int)Errno.EBUSY));
        Assert.That(m.Hugetlb.MemoryFailure(s.Cpu.Id, head + 100), Is.EqualTo(-Hugetlb.EHwpoison), "the same page twice");
        Assert.That(m.Hugetlb.RawHwpPages(head), Is.EqualTo(new[] { head + 100 }));
        Assert.That(m.Vmemmap.PfnToPage(head)->TestFlag(PG.Hwpoison), Is.True, "PG_hwpoison on the folio");
        Rmap.FolioPut(s.Cpu, m, head);
        Assert.That(h.NrHugepages, Is.Zero, "dissolved on the last put, never queued again");
        Assert.That(m.Vmemmap.PfnToPage(head + 100)->TestFlag(PG.Hwpoison), Is.True);
    }

    [Test]
    public void The_sysctl_affects_only_pages_allocated_after_it_changes()
    {
        using Kernel k = Boot(HvoMode.KeepHead, pages2M: 1);
        Machine m = k.Machine;
        Assert.That(m.Hugetlb.ReadSysctl(), Is.EqualTo("1\n"));
        m.Hugetlb.WriteSysctl("0");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "2");
        List<ulong> heads = PoolFolios(m, m.Hugetlb.Default);
        Assert.That(heads.Count(m.Hugetlb.VmemmapOptimized), Is.EqualTo(1), "the boot page stays optimized; the new one is not");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.EqualTo(7));
        Assert.That(() => m.Hugetlb.WriteSysctl("2"), Throws.ArgumentException);
        m.Hugetlb.WriteSysctl("1");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.Zero);
        using Kernel off = Boot(HvoMode.Off);
        Assert.That(() => off.Machine.Hugetlb.ReadSysctl(), Throws.TypeOf<FileNotFoundException>(), "not registered without HVO");
    }

    [TestCase(HvoMode.Off, 0, 0)]
    [TestCase(HvoMode.KeepTwo, 4094, 6)]
    [TestCase(HvoMode.KeepHead, 4095, 7)]
    [TestCase(HvoMode.SharedTails, 4095, 7)]
    public void Demoting_a_1GiB_page_restores_its_vmemmap_and_optimizes_the_512_new_pages(HvoMode mode, int per1G, int per2M)
    {
        using Kernel k = Boot(mode, memoryBytes: 2UL << 30);
        Machine m = k.Machine;
        long free0 = TestSupport.SettledFreeFrames(k), memmap0 = Memmap(k);
        m.Hugetlb.Write("hugepages-1048576kB/nr_hugepages", "1");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.EqualTo(per1G));
        Assert.That(m.Hugetlb.Read("hugepages-1048576kB/demote_size"), Is.EqualTo("2048kB\n"));
        Assert.That(() => m.Hugetlb.Read("hugepages-1048576kB/demote"), Throws.TypeOf<UnauthorizedAccessException>());
        Assert.That(() => m.Hugetlb.Read("hugepages-2048kB/demote"), Throws.TypeOf<FileNotFoundException>(), "nothing smaller than 2 MiB");
        m.Hugetlb.Write("hugepages-1048576kB/demote", "1");
        Hstate g = m.Hugetlb.ForSize(1UL << 30)!, h = m.Hugetlb.Default;
        Assert.That((g.NrHugepages, h.NrHugepages, h.FreeHugepages), Is.EqualTo((0L, 512L, 512L)));
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.EqualTo(512L * per2M), "the new pages are optimized as a batch");
        long shared = mode == HvoMode.SharedTails ? 1 : 0;
        Assert.That(Memmap(k), Is.EqualTo(memmap0 - 512L * per2M + shared));
        foreach (ulong head in PoolFolios(m, h).Take(3))
            for (ulong i = 0; i < 512; i++)
                if (Folio.HeadPfn(m, head + i) != head) Assert.Fail($"compound_head of subpage {i} of the demoted {head:x}");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(Memmap(k), Is.EqualTo(memmap0));
        Assert.That(TestSupport.SettledFreeFrames(k), Is.EqualTo(free0 - m.Vmemmap.SplitPmds), "every frame back but the split PMDs' PTE tables");
    }

    [Test]
    public void A_failed_restore_before_demotion_leaves_the_1GiB_page_in_its_pool()
    {
        using Kernel k = Boot(HvoMode.KeepHead, memoryBytes: 2UL << 30, pages1G: 1);
        Machine m = k.Machine;
        m.Allocator.FailPageAlloc = _ => true;
        m.Hugetlb.Write("hugepages-1048576kB/demote", "1");
        m.Allocator.FailPageAlloc = null;
        Hstate g = m.Hugetlb.ForSize(1UL << 30)!;
        Assert.That((g.NrHugepages, g.FreeHugepages, g.SurplusHugepages, m.Hugetlb.Default.NrHugepages), Is.EqualTo((1L, 1L, 0L, 0L)));
        m.Hugetlb.Write("hugepages-1048576kB/demote", "1");
        Assert.That((g.NrHugepages, m.Hugetlb.Default.NrHugepages), Is.EqualTo((0L, 512L)));
    }

    [Test]
    public void Pool_folios_allocated_and_freed_on_two_cpus_while_a_third_resizes_the_pool_keep_their_heads()
    {
        using Kernel k = Boot(HvoMode.KeepHead, memoryBytes: 128UL << 20, pages2M: 4);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        long freeWithPool = TestSupport.SettledFreeFrames(k);
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var stop = new CancellationTokenSource();
        void Worker(int seed)
        {
            using Cpu cpu = m.AttachCpu();
            var rng = new Random(seed);
            for (int iter = 0; iter < 300; iter++)
            {
                ulong head = m.Hugetlb.AllocHugetlbFolio(h, cpu.Id, useReserve: false);
                if (head == 0) continue;
                for (int j = 0; j < 16; j++)
                {
                    ulong sub = (ulong)rng.Next(512);
                    if (Folio.HeadPfn(m, head + sub) != head) failures.Enqueue($"subpage {sub} of {head:x}");
                }
                Rmap.FolioPut(cpu, m, head + (ulong)rng.Next(512));
            }
        }
        var resizer = new Thread(() =>
        {
            using Cpu cpu = m.AttachCpu();
            for (int i = 0; !stop.IsCancellationRequested && i < 200; i++) m.Hugetlb.SetMaxHugePages(cpu.Id, h, 2 + i % 5);
        });
        var workers = new[] { new Thread(() => Worker(1)), new Thread(() => Worker(2)) };
        resizer.Start();
        foreach (Thread t in workers) t.Start();
        foreach (Thread t in workers) Assert.That(t.Join(TestSupport.HandshakeTimeout), Is.True, "worker finished");
        stop.Cancel();
        Assert.That(resizer.Join(TestSupport.HandshakeTimeout), Is.True);
        Assert.That(failures, Is.Empty);
        Assert.That((h.FreeHugepages, h.SurplusHugepages, h.ResvHugepages), Is.EqualTo((h.NrHugepages, 0L, 0L)), "every folio back in the pool");
        m.Hugetlb.Write("hugepages-2048kB/nr_hugepages", "0");
        Assert.That(m.Hugetlb.VmemmapFramesFreed, Is.Zero);
        Assert.That(m.Vmemmap.CompoundHeadKey, Is.Zero);
        Assert.That(m.Vmemmap.SplitPmds, Is.EqualTo(1), "128 MiB of struct pages: one vmemmap PMD, split at boot");
        Assert.That(TestSupport.SettledFreeFrames(k), Is.EqualTo(freeWithPool + 4 * 512 - 4 * 7),
            "the boot pool's frames are back, less the 7 vmemmap frames per page it had given back");
    }

    [TestCase(HvoMode.Off)]
    [TestCase(HvoMode.KeepTwo)]
    [TestCase(HvoMode.KeepHead)]
    [TestCase(HvoMode.SharedTails)]
    public void A_pin_taken_on_subpage_5_and_released_through_it_finds_the_head_after_the_remap(HvoMode mode)
    {
        // Matthew Wilcox's case: GUP returns head+5, and the release later runs compound_head(head+5).
        using Kernel k = Boot(mode, pages2M: 1);
        Machine m = k.Machine;
        Hstate h = m.Hugetlb.Default;
        using CpuScope s = m.EnterCpu();
        ulong head = m.Hugetlb.AllocHugetlbFolio(h, s.Cpu.Id, useReserve: false);
        Page* folio = m.Vmemmap.PfnToPage(head);
        foreach (ulong sub in new ulong[] { 5, 64, 130, 300, 511 })
        {
            Gup.Grab(m.Vmemmap.PfnToPage(Folio.HeadPfn(m, head + sub)), Foll.Pin); // try_grab_folio on page_folio(head+sub)
            Assert.That(Folio.Pincount(folio), Is.EqualTo(1), $"the pin of subpage {sub} landed on the head");
            Gup.Release(s.Cpu, m, head + sub, Foll.Pin);                             // unpin_user_page(head+sub)
            Assert.That((Folio.Pincount(folio), folio->RefCount), Is.EqualTo((0, 1)), $"and its release found the head from subpage {sub}");
        }
        Gup.Grab(folio, Foll.Get);
        Rmap.FolioPut(s.Cpu, m, head);
        Gup.Release(s.Cpu, m, head + 5, Foll.Get); // the last reference goes through subpage 5
        Assert.That(h.FreeHugepages, Is.EqualTo(1), "free_huge_folio reached from the subpage's put");
    }

    [Test]
    public void Shared_tails_tails_carry_the_orders_mask_so_every_tail_vmemmap_page_reads_the_same()
    {
        using Kernel k = Boot(HvoMode.SharedTails, pages2M: 2);
        Machine m = k.Machine;
        List<ulong> heads = PoolFolios(m, m.Hugetlb.Default);
        ulong mask = ~((64UL << 9) - 1) | 1;
        foreach (ulong head in heads)
            Assert.That(m.Vmemmap.PfnToPage(head + 7)->CompoundHead, Is.EqualTo(mask), "compound_info: the mask, not a head pointer");
        byte* a = (byte*)m.Vmemmap.PfnToPage(heads[0] + 64), b = (byte*)m.Vmemmap.PfnToPage(heads[1] + 448);
        Assert.That(new ReadOnlySpan<byte>(a, 4096).SequenceEqual(new ReadOnlySpan<byte>(b, 4096)), Is.True,
            "tail vmemmap pages of two folios are one shared page");
        Assert.That(a == b, Is.True, "mapped onto the same frame");
        using CpuScope s = m.EnterCpu();
        ulong thp = m.Allocator.AllocPages(s.Cpu.Id, 4, Gfp.Comp);
        Assert.That(m.Vmemmap.PfnToPage(thp + 3)->CompoundHead, Is.EqualTo(~((64UL << 4) - 1) | 1), "every compound page uses the encoding");
        Assert.That(Folio.HeadPfn(m, thp + 15), Is.EqualTo(thp));
        m.Allocator.FreePages(s.Cpu.Id, thp, 4);
    }
}
