using System.Text.RegularExpressions;
using NativeMmu.Arch.X86;
using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// PMD-mapped THPs (mm/huge_memory.c), in every page-table reclaim mode: the huge anonymous fault and
/// its huge-zero-page read, the deposited table in VmPTE, the write-protect fault (reuse or split),
/// fork's copy by PMD, zap whole or by split, mprotect, GUP through a huge PMD, and the counters.
/// The invariant checks run throughout and must stay silent.
/// </summary>
[TestFixture(PtReclaimMode.Off, CowPteMode.Off, HvoMode.Off)]
[TestFixture(PtReclaimMode.Sync, CowPteMode.Off, HvoMode.Off)]
[TestFixture(PtReclaimMode.Refcount, CowPteMode.Off, HvoMode.Off)]
[TestFixture(PtReclaimMode.Sync, CowPteMode.Off, HvoMode.SharedTails)] // THP tails carrying compound_info masks
[TestFixture(PtReclaimMode.Sync, CowPteMode.Lazy, HvoMode.Off)]
[TestFixture(PtReclaimMode.Sync, CowPteMode.Eager, HvoMode.Off)]
[TestFixture(PtReclaimMode.Refcount, CowPteMode.Eager, HvoMode.Off)]
public unsafe class HugePmdTests(PtReclaimMode mode, CowPteMode cowPte, HvoMode hvo)
{
    private const ulong M2 = 2UL << 20;
    private const ulong Page = TestSupport.PageSize;

    private Kernel _kernel = null!;
    private Process _p = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;
    private long _free0;
    /// <summary>A 2 MiB-aligned, MADV_HUGEPAGE'd region of two PMDs.</summary>
    private ulong _mem;

    [SetUp]
    public void SetUp()
    {
        _kernel = new Kernel(new KernelConfig
        {
            MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true, PtReclaim = mode, CowPte = cowPte, CowPteAllProcesses = cowPte != CowPteMode.Off, Hvo = hvo,
        });
        _free0 = TestSupport.SettledFreeFrames(_kernel);
        _p = _kernel.CreateProcess("thp");
        _cpu = _kernel.AttachCpu();
        _p.Enter(_cpu);
        _mem = _p.Mmap(2 * M2);
        Assert.That(_mem % M2, Is.Zero, "thp_get_unmapped_area aligns a multiple of 2 MiB");
        Assert.That(_p.Madvise(_mem, 2 * M2, Advice.HugePage), Is.EqualTo(Errno.Success));
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            if (!_p.Exited) _p.Exit();
            Assert.That(_kernel.InvariantViolations, Is.Empty, "the invariant checks reported nothing");
            Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(_free0), "every frame came back, the huge zero folio's too");
        }
        finally
        {
            _cpu.Dispose();
            _kernel.Dispose();
        }
    }

    private long Vm(string name) => _kernel.VmstatValue(name);

    private static long SmapsKb(Process p, string field)
    {
        Match m = Regex.Match(p.ProcSmapsRollup(), $@"^{field}:\s+(\d+) kB$", RegexOptions.Multiline);
        Assert.That(m.Success, Is.True, $"smaps_rollup has a {field} line");
        return long.Parse(m.Groups[1].Value);
    }

    private ulong PmdOf(Process p, ulong address)
    {
        Pmd* pmd = PgTable.WalkToPmd(p.Mm, address);
        return pmd == null ? 0 : PgTable.Get(pmd).Value;
    }

    private void AssertNoViolations() => Assert.That(_kernel.CheckInvariants(), Is.Empty, "invariant checks");

    private void FillPmd(ulong start, long seed)
    {
        for (ulong off = 0; off < M2; off += Page) _cpu.Store<long>(start + off, seed + (long)off);
    }

    private bool HoldsPmd(Process p, ulong start, long seed)
    {
        p.Enter(_cpu);
        for (ulong off = 0; off < M2; off += Page)
            if (_cpu.Load<long>(start + off) != seed + (long)off) return false;
        return true;
    }

    [Test]
    public void One_write_fault_maps_a_whole_pmd_with_a_deposited_table_counted_in_vmpte()
    {
        long faults = Vm("pgfault"), vmpte = TestSupport.StatusKb(_p, "VmPTE");
        FillPmd(_mem, 1);
        Assert.That(Vm("pgfault") - faults, Is.EqualTo(1), "512 pages, one fault");
        Assert.That(new Pmd(PmdOf(_p, _mem)).Leaf, Is.True, "a PSE leaf");
        Assert.That(Vm("thp_fault_alloc"), Is.EqualTo(1));
        Assert.That(_kernel.Machine.Thp.Stat(Thp.PmdOrder, MthpStat.AnonFaultAlloc), Is.EqualTo(1), "hugepages-2048kB/stats/anon_fault_alloc");
        Assert.That(Vm("nr_anon_transparent_hugepages"), Is.EqualTo(1));
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.EqualTo(2048));
        Assert.That(SmapsKb(_p, "AnonHugePages"), Is.EqualTo(2048));
        // The PUD and PMD tables came with the mapping's first fault, plus the table deposited under the PMD.
        Assert.That(TestSupport.StatusKb(_p, "VmPTE") - vmpte, Is.EqualTo(12), "PUD + PMD + deposited PTE table");
        Assert.That(HoldsPmd(_p, _mem, 1), Is.True);
        AssertNoViolations();
    }

    [Test]
    public void Madv_populate_write_faults_once_per_pmd()
    {
        long faults = Vm("pgfault");
        Assert.That(_p.Madvise(_mem, 2 * M2, Advice.PopulateWrite), Is.EqualTo(Errno.Success));
        Assert.That(Vm("pgfault") - faults, Is.EqualTo(2), "follow_huge_pmd finds the other 511 pages of each PMD mapped");
        Assert.That(Vm("thp_fault_alloc"), Is.EqualTo(2));
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.EqualTo(4096));
    }

    [Test]
    public void A_read_maps_the_huge_zero_page_and_a_write_replaces_it_with_a_thp_without_a_split()
    {
        Assert.That(_cpu.Load<long>(_mem + 12345 * 8), Is.Zero);
        Assert.That(Vm("thp_zero_page_alloc"), Is.EqualTo(1));
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.Zero, "the huge zero page is nobody's RSS");
        Assert.That(SmapsKb(_p, "AnonHugePages"), Is.Zero);
        var pmd = new Pmd(PmdOf(_p, _mem));
        Assert.That(pmd.Leaf && !pmd.Write && pmd.Pfn == _kernel.Machine.HugeZero.Pfn, Is.True, "read-only huge zero PMD");
        _cpu.Store<long>(_mem + 8, 5);
        Assert.That(Vm("thp_fault_alloc"), Is.EqualTo(1), "do_huge_zero_wp_pmd allocated a THP");
        Assert.That(Vm("thp_split_pmd"), Is.Zero);
        Assert.That(_cpu.Load<long>(_mem + 8), Is.EqualTo(5));
        Assert.That(_cpu.Load<long>(_mem + M2 - 8), Is.Zero);
        AssertNoViolations();
    }

    [Test]
    public void Without_use_zero_page_a_read_allocates_the_thp()
    {
        _kernel.Machine.Thp.Write("use_zero_page", "0");
        Assert.That(_cpu.Load<long>(_mem), Is.Zero);
        Assert.That(Vm("thp_zero_page_alloc"), Is.Zero);
        Assert.That(Vm("thp_fault_alloc"), Is.EqualTo(1));
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.EqualTo(2048));
    }

    [Test]
    public void Thp_off_or_a_range_the_vma_does_not_cover_falls_back_to_ptes()
    {
        _kernel.Machine.Thp.Enabled = ThpMode.Never; // hugepages-2048kB inherits "never"
        _cpu.Store<long>(_mem, 1);
        Assert.That(new Pmd(PmdOf(_p, _mem)).Leaf, Is.False);
        _kernel.Machine.Thp.Enabled = ThpMode.Always;
        Assert.That(_p.Munmap(_mem + M2 + Page, Page), Is.EqualTo(Errno.Success)); // the second PMD is no longer all one VMA
        _cpu.Store<long>(_mem + M2, 1);
        Assert.That(new Pmd(PmdOf(_p, _mem + M2)).Leaf, Is.False, "thp_vma_suitable_order");
        Assert.That(Vm("thp_fault_alloc"), Is.Zero);
    }

    [Test]
    public void Fork_shares_the_thp_by_pmd_and_the_first_write_splits_and_copies_only_one_page()
    {
        FillPmd(_mem, 1);
        Process child = _p.Fork();
        AssertNoViolations();
        Assert.That(new Pmd(PmdOf(child, _mem)).Leaf, Is.True, "copy_huge_pmd");
        Assert.That(new Pmd(PmdOf(child, _mem)).Write || new Pmd(PmdOf(_p, _mem)).Write, Is.False, "both write-protected");
        Assert.That(TestSupport.StatusKb(child, "VmPTE"), Is.EqualTo(12), "PUD + PMD + the child's deposited table");
        Assert.That(TestSupport.StatusKb(child, "RssAnon"), Is.EqualTo(2048));

        _p.Enter(_cpu);
        _cpu.Store<long>(_mem + 3 * Page, -1);
        Assert.That(Vm("thp_split_pmd"), Is.EqualTo(1), "the shared THP is split in the writer");
        Assert.That(_kernel.Machine.Counters.Sum(VmEvent.FaultWpCopy), Is.EqualTo(1), "then one subpage is copied");
        Assert.That(new Pmd(PmdOf(child, _mem)).Leaf, Is.True, "the child keeps its PMD");
        Assert.That(HoldsPmd(child, _mem, 1), Is.True, "the child does not see the write");
        AssertNoViolations();
        child.Exit();
        AssertNoViolations();
    }

    [Test]
    public void An_exclusive_thp_is_reused_by_pmd_once_the_child_has_gone()
    {
        FillPmd(_mem, 1);
        _p.Fork().Exit();
        _p.Enter(_cpu);
        long faults = Vm("pgfault");
        _cpu.Store<long>(_mem, 7);
        Assert.That(Vm("pgfault") - faults, Is.EqualTo(1));
        Assert.That(Vm("thp_split_pmd"), Is.Zero, "refcount 1: do_huge_pmd_wp_page reuses it");
        var pmd = new Pmd(PmdOf(_p, _mem));
        Assert.That(pmd.Leaf && pmd.Write && pmd.Dirty, Is.True);
        _cpu.Store<long>(_mem + M2 - 8, 8);
        Assert.That(Vm("pgfault") - faults, Is.EqualTo(1), "the whole PMD is writable");
        AssertNoViolations();
    }

    [Test]
    public void Zapping_a_whole_pmd_frees_the_thp_without_a_split()
    {
        FillPmd(_mem, 1);
        long free = _kernel.FreeFrames;
        Assert.That(_p.Madvise(_mem, M2, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(Vm("thp_split_pmd"), Is.Zero);
        Assert.That(_kernel.FreeFrames - free, Is.EqualTo(513), "the folio and its deposited table");
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.Zero);
        Assert.That(Vm("nr_anon_transparent_hugepages"), Is.Zero);
        Assert.That(_cpu.Load<long>(_mem + 8), Is.Zero, "zero after DONTNEED");
    }

    [Test]
    public void A_partial_dontneed_splits_the_pmd_and_queues_the_folio_for_deferred_split()
    {
        FillPmd(_mem, 1);
        Assert.That(_p.Madvise(_mem + 16 * Page, 16 * Page, Advice.DontNeed), Is.EqualTo(Errno.Success));
        Assert.That(Vm("thp_split_pmd"), Is.EqualTo(1));
        Assert.That(Vm("thp_deferred_split_page"), Is.EqualTo(1));
        Assert.That(_kernel.Machine.Thp.Stat(Thp.PmdOrder, MthpStat.NrAnonPartiallyMapped), Is.EqualTo(1));
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.EqualTo(2048 - 64));
        Assert.That(Vm("nr_anon_pages"), Is.EqualTo(512 - 16));
        Assert.That(_cpu.Load<long>(_mem + 20 * Page), Is.Zero);
        Assert.That(_cpu.Load<long>(_mem + 40 * Page), Is.EqualTo(1 + (long)(40 * Page)));
        AssertNoViolations();

        long free = _kernel.FreeFrames;
        Assert.That(_kernel.SplitDeferred(), Is.EqualTo(1));
        Assert.That(Vm("thp_split_page"), Is.EqualTo(1));
        Assert.That(_kernel.FreeFrames - free, Is.EqualTo(16), "the 16 unmapped pages are freed by the split");
        Assert.That(_cpu.Load<long>(_mem + 40 * Page), Is.EqualTo(1 + (long)(40 * Page)));
        AssertNoViolations();
    }

    [Test]
    public void Munmap_of_part_of_a_thp_splits_it_at_the_vma_boundary()
    {
        FillPmd(_mem, 1);
        Assert.That(_p.Munmap(_mem + M2 - 4 * Page, 4 * Page), Is.EqualTo(Errno.Success));
        Assert.That(Vm("thp_split_pmd"), Is.EqualTo(1));
        Assert.That(TestSupport.StatusKb(_p, "RssAnon"), Is.EqualTo(2048 - 16));
        Assert.That(_cpu.Load<long>(_mem + M2 - 5 * Page), Is.EqualTo(1 + (long)(M2 - 5 * Page)));
        AssertNoViolations();
    }

    [Test]
    public void Mprotect_of_the_whole_pmd_changes_it_in_place_and_of_one_page_splits_it()
    {
        FillPmd(_mem, 1);
        Assert.That(_p.Mprotect(_mem, M2, Prot.Read), Is.EqualTo(Errno.Success));
        var pmd = new Pmd(PmdOf(_p, _mem));
        Assert.That(pmd.Leaf && !pmd.Write, Is.True, "change_huge_pmd");
        Assert.That(_cpu.TryStore<long>(_mem, 1), Is.EqualTo(NativeMmu.Cpus.FaultResult.SegvAccerr));
        Assert.That(_p.Mprotect(_mem, M2, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        pmd = new Pmd(PmdOf(_p, _mem));
        Assert.That(pmd.Leaf && pmd.Write, Is.True, "an exclusive THP becomes writable at once (MM_CP_TRY_CHANGE_WRITABLE)");
        Assert.That(Vm("thp_split_pmd"), Is.Zero);

        Assert.That(_p.Mprotect(_mem + Page, Page, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(Vm("thp_split_pmd"), Is.EqualTo(1));
        Assert.That(new Pte(TestSupport.PteOf(_p, _mem + Page)!.Value).Write, Is.False);
        Assert.That(new Pte(TestSupport.PteOf(_p, _mem + 2 * Page)!.Value).Write, Is.True, "the split keeps the other pages writable");
        Assert.That(HoldsPmd(_p, _mem, 1), Is.True);
        AssertNoViolations();
    }

    [Test]
    public void Gup_follows_a_huge_pmd_and_a_read_only_longterm_pin_unshares_a_shared_thp()
    {
        FillPmd(_mem, 1);
        Assert.That(_p.GetUserPages(_mem + 5 * Page, 2, Foll.None, out UserPages? refs), Is.EqualTo(Errno.Success));
        using (refs)
        {
            Assert.That(Vm("thp_split_pmd"), Is.Zero, "follow_huge_pmd");
            Assert.That(refs!.Read<long>(1), Is.EqualTo(1 + (long)(6 * Page)));
        }

        Process child = _p.Fork();
        Assert.That(_p.PinUserPages(_mem, 4, Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            _p.Enter(_cpu);
            for (int i = 0; i < 4; i++) _cpu.Store<long>(_mem + (ulong)i * Page, -9);
            for (int i = 0; i < 4; i++) Assert.That(pin!.Read<long>(i), Is.EqualTo(-9L), $"page {i} through the pin");
            Assert.That(HoldsPmd(child, _mem, 1), Is.True, "the child is unaffected");
            AssertNoViolations();
        }
        child.Exit();
    }

    [Test]
    public void A_thp_pinned_before_fork_is_split_and_copied_for_the_child()
    {
        FillPmd(_mem, 1);
        Assert.That(_p.PinUserPages(_mem, 1, Foll.Longterm | Foll.Write, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            Process child = _p.Fork();
            Assert.That(Vm("thp_split_pmd"), Is.EqualTo(1), "maybe pinned: split in the parent, copied by PTEs");
            _p.Enter(_cpu);
            _cpu.Store<long>(_mem, -7);
            Assert.That(pin!.Read<long>(0), Is.EqualTo(-7L));
            Assert.That(HoldsPmd(child, _mem, 1), Is.True);
            AssertNoViolations();
            child.Exit();
        }
    }

    [Test]
    public void The_huge_zero_page_is_shared_across_fork_and_freed_with_its_last_mm()
    {
        Assert.That(_cpu.Load<long>(_mem), Is.Zero);
        Process child = _p.Fork();
        Assert.That(new Pmd(PmdOf(child, _mem)).Pfn, Is.EqualTo(_kernel.Machine.HugeZero.Pfn));
        child.Enter(_cpu);
        _cpu.Store<long>(_mem, 3);
        Assert.That(_cpu.Load<long>(_mem), Is.EqualTo(3));
        _p.Enter(_cpu);
        Assert.That(_cpu.Load<long>(_mem), Is.Zero, "the parent still reads the huge zero page");
        AssertNoViolations();
        child.Exit();
        Assert.That(_kernel.Machine.HugeZero.Pfn, Is.Not.Zero, "the parent still holds it");
        _p.Exit();
        Assert.That(_kernel.Machine.HugeZero.Pfn, Is.Zero, "freed with the last mm");
    }

    [Test]
    [CancelAfter(30_000)]
    public void Racing_touches_splits_and_zaps_of_one_pmd_lose_no_write()
    {
        // Three CPUs touch the same untouched 2 MiB over and over: readers race writers for the huge zero
        // page, writers race each other for the THP, and one CPU keeps splitting it with partial zaps of
        // its own pages. Every CPU owns every third page and checks what it last wrote there.
        const int cpus = 3, rounds = 200; // the fixture's own CPU is the fourth
        var errors = new System.Collections.Concurrent.ConcurrentQueue<string>();
        using var start = new Barrier(cpus);
        Action<NativeMmu.Cpus.Cpu> Body(int id) => cpu =>
        {
            var last = new long[512];
            for (int r = 0; r < rounds && errors.IsEmpty; r++)
            {
                start.SignalAndWait(TestSupport.HandshakeTimeout);
                for (int page = id; page < 512; page += cpus)
                {
                    ulong va = _mem + (ulong)page * Page;
                    long seen = cpu.Load<long>(va);
                    if (seen != last[page] && seen != 0) errors.Enqueue($"cpu {id}: page {page} read {seen}, last wrote {last[page]}");
                    if (seen == 0) last[page] = 0;
                    long v = ((long)id << 32) | (uint)(r * 512 + page + 1);
                    cpu.Store(va, v);
                    last[page] = v;
                }
                if (id == 0 && r % 4 == 3)
                {
                    // A zap of CPU 0's first page (splits a huge PMD); of the whole PMD every 16 rounds, after
                    // which every page reads zero (allowed above) and the next touch maps a new THP.
                    ulong len = r % 16 == 15 ? M2 : Page;
                    Assert.That(_p.Madvise(_mem, len, Advice.DontNeed), Is.EqualTo(Errno.Success));
                }
            }
        };
        bool finished = TestSupport.RunOnCpus(_kernel, _p, Body(0), Body(1), Body(2));
        Assert.That(finished, Is.True);
        Assert.That(errors, Is.Empty, () => string.Join("\n", errors.Take(5)));
        // Once split, the PMD keeps its table without reclaim, and later touches fault 4 KiB pages into it;
        // with reclaim the whole-PMD zap frees the table and the next touch maps a new THP.
        Assert.That(Vm("thp_fault_alloc"), mode == PtReclaimMode.Off ? Is.EqualTo(1) : Is.GreaterThan(1));
        Assert.That(Vm("thp_split_pmd"), Is.GreaterThan(0));
        Assert.That(_kernel.Machine.TlbConflicts, Is.Empty);
        AssertNoViolations();
    }

    [Test]
    public void Smaps_rollup_divides_a_thp_shared_by_fork_between_the_two_mms()
    {
        FillPmd(_mem, 1);
        _cpu.Store<long>(_mem + M2, 1); // one more THP, the parent's alone after the fork (written below)
        Process child = _p.Fork();
        _p.Enter(_cpu);
        _cpu.Store<long>(_mem + M2, 2); // do_huge_pmd_wp_page: shared, so split and copy one page
        Assert.That(SmapsKb(child, "AnonHugePages"), Is.EqualTo(4096), "the child still maps both by PMD");
        Assert.That(SmapsKb(_p, "AnonHugePages"), Is.EqualTo(2048), "the parent split its second PMD");
        Assert.That(SmapsKb(child, "Rss"), Is.EqualTo(4096));
        // Each THP page is mapped twice (PMD in the child, PMD or PTE in the parent) except the copied one.
        Assert.That(SmapsKb(child, "Pss"), Is.EqualTo(2048 + 2));
        Assert.That(SmapsKb(_p, "Pss"), Is.EqualTo(2048 - 2 + 4));
        Assert.That(SmapsKb(child, "Shared_Dirty") + SmapsKb(child, "Private_Dirty"), Is.EqualTo(4096));
        child.Exit();
        Assert.That(SmapsKb(_p, "Pss"), Is.EqualTo(4096), "alone again: Pss is Rss");
    }

    [Test]
    public void The_deposit_list_of_one_pmd_table_holds_a_table_per_huge_pmd()
    {
        FillPmd(_mem, 1);
        FillPmd(_mem + M2, 2);
        Assert.That(TestSupport.StatusKb(_p, "VmPTE"), Is.EqualTo(16), "PUD + PMD + two deposited tables");
        Assert.That(_p.Madvise(_mem, Page, Advice.DontNeed), Is.EqualTo(Errno.Success)); // withdraws one for the split
        Assert.That(_p.Madvise(_mem + M2, M2, Advice.DontNeed), Is.EqualTo(Errno.Success)); // frees the other
        Assert.That(_cpu.Load<long>(_mem), Is.Zero);
        Assert.That(_cpu.Load<long>(_mem + Page), Is.EqualTo(1 + (long)Page), "the split PMD maps the rest of its THP");
        Assert.That(TestSupport.StatusKb(_p, "VmPTE"), Is.EqualTo(12), "the split's table is the PMD's own now; the other went with its PMD");
        AssertNoViolations();
    }
}
