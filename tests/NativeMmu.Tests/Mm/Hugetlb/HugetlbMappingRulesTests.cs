using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Mm.Huge;
using NativeMmu.Physical;
using static NativeMmu.Tests.Mm.Hugetlb.HugetlbSupport;

namespace NativeMmu.Tests.Mm.Hugetlb;

/// <summary>
/// The VMA and accounting rules of private MAP_HUGETLB mappings with 2 MiB pages, in every HVO mode:
/// mmap's size and reservation errors, the alignment EINVALs of munmap, mprotect and MAP_FIXED,
/// HugetlbPages and the smaps_rollup lines, the owner's COW taking the page back from a child when the
/// pool is empty, GUP on a subpage of a possibly optimized page (Wilcox's case), and the hwpoison entry
/// memory_failure leaves in a mapping.
/// </summary>
[TestFixtureSource(typeof(HugetlbSupport), nameof(Modes))]
public unsafe class HugetlbMappingRulesTests(HvoMode hvo)
{
    private const ulong H = Size2M;
    private Kernel _k = null!;
    private Process _p = null!;
    private Cpu _cpu = null!;

    [SetUp]
    public void SetUp()
    {
        _k = Boot(H, 3, hvo);
        _p = _k.CreateProcess("rules");
        _cpu = _k.AttachCpu();
        _p.Enter(_cpu);
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            if (!_p.Exited) _p.Exit();
            Assert.That(_k.InvariantViolations, Is.Empty, "the invariant checks reported nothing");
            Assert.That(HugetlbSupport.Hstate(_k, H).ResvHugepages, Is.Zero, "no reservation outlives its mapping");
        }
        finally
        {
            _cpu.Dispose();
            _k.Dispose();
        }
    }

    private long SmapsKb(string field)
    {
        var m = System.Text.RegularExpressions.Regex.Match(_p.ProcSmapsRollup(), $@"^{field}:\s+(\d+) kB$", System.Text.RegularExpressions.RegexOptions.Multiline);
        Assert.That(m.Success, Is.True, field);
        return long.Parse(m.Groups[1].Value);
    }

    [Test]
    public void A_size_without_an_hstate_is_EINVAL()
    {
        const MapFlags huge16M = (MapFlags)(24 << HugetlbMapping.MapHugeShift);
        Errno e = _p.Mmap(0, 16UL << 20, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb | huge16M, out _);
        Assert.That(e, Is.EqualTo(Errno.EINVAL), "hstate_sizelog(24) is NULL");
    }

    [Test]
    public void A_mapping_the_pool_cannot_reserve_is_ENOMEM_and_MAP_NORESERVE_defers_the_failure_to_a_SIGBUS()
    {
        Assert.That(MmapHugetlb(_p, 4 * H, H, out _), Is.EqualTo(Errno.ENOMEM), "hugetlb_reserve_pages: 4 pages from a pool of 3");
        Assert.That(HugetlbSupport.Hstate(_k, H).ResvHugepages, Is.Zero, "a failed reservation reserves nothing");
        Assert.That(MmapHugetlb(_p, 4 * H, H, out ulong a, extra: MapFlags.NoReserve), Is.EqualTo(Errno.Success));
        for (int i = 0; i < 3; i++) _cpu.Store<long>(a + (ulong)i * H, i);
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Store<long>(a + 3 * H, 3), "the fourth page has no page to fault in");
        Assert.That(ex!.Result, Is.EqualTo(FaultResult.Sigbus));
        Assert.That(ex.BusCode, Is.EqualTo(BusCode.AdrErr));
    }

    [Test]
    public void Reservations_are_taken_at_mmap_and_given_back_unconsumed_at_munmap()
    {
        ulong a = MapHugetlb(_p, 3 * H, H);
        Hstate h = HugetlbSupport.Hstate(_k, H);
        Assert.That(h.ResvHugepages, Is.EqualTo(3));
        _cpu.Store<long>(a, 1);
        Assert.That(h.ResvHugepages, Is.EqualTo(2), "the fault consumed its index's reservation");
        Assert.That(MmapHugetlb(_p, H, H, out _), Is.EqualTo(Errno.ENOMEM), "every free page is reserved");
        Assert.That(_p.Munmap(a + H, 2 * H), Is.EqualTo(Errno.Success));
        Assert.That(h.ResvHugepages, Is.Zero, "the unfaulted half gave its reservations back");
        Assert.That(h.FreeHugepages, Is.EqualTo(2));
    }

    [Test]
    public void Munmap_mprotect_and_map_fixed_inside_a_huge_page_are_EINVAL()
    {
        ulong a = MapHugetlb(_p, 2 * H, H);
        _cpu.Store<long>(a, 7);
        Assert.That(_p.Munmap(a, 4096), Is.EqualTo(Errno.EINVAL), "hugetlb_vm_op_split refuses the split at a + 4 KiB");
        Assert.That(_p.Munmap(a + 4096, H), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Mprotect(a, 4096, Prot.Read), Is.EqualTo(Errno.EINVAL));
        Assert.That(_p.Mmap(a + 2 * H + 4096, H, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb | MapFlags.Fixed, out _),
            Is.EqualTo(Errno.EINVAL), "prepare_hugepage_range: MAP_FIXED not huge-page aligned");
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(7), "the refused calls changed nothing");
        Assert.That(_p.Mprotect(a, H, Prot.Read), Is.EqualTo(Errno.Success), "a split at the boundary is allowed");
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Store<long>(a, 8));
        Assert.That(ex!.Code, Is.EqualTo(SegvCode.AccErr), "the huge entry was write-protected and flushed");
        Assert.That(_p.Munmap(a + H, H), Is.EqualTo(Errno.Success));
    }

    [Test]
    public void HugetlbPages_counts_huge_mappings_outside_RSS_and_smaps_splits_private_from_shared()
    {
        ulong a = MapHugetlb(_p, 2 * H, H);
        _cpu.Store<long>(a, 1);
        _cpu.Store<long>(a + H, 2);
        Assert.That(TestSupport.StatusKb(_p, "HugetlbPages"), Is.EqualTo(4096));
        Assert.That(TestSupport.StatusKb(_p, "VmRSS"), Is.Zero, "hugetlb is not in RSS");
        Assert.That(SmapsKb("Private_Hugetlb"), Is.EqualTo(4096));
        Assert.That(SmapsKb("Rss"), Is.Zero);
        Process child = _p.Fork();
        Assert.That(TestSupport.StatusKb(child, "HugetlbPages"), Is.EqualTo(4096), "copy_hugetlb_page_range counts the child's mappings");
        Assert.That(SmapsKb("Shared_Hugetlb"), Is.EqualTo(4096), "both pages are mapped by two mms");
        child.Enter(_cpu);
        _cpu.Store<long>(a, 3); // the child copies the first page
        _p.Enter(_cpu);
        Assert.That(SmapsKb("Private_Hugetlb"), Is.EqualTo(2048));
        Assert.That(SmapsKb("Shared_Hugetlb"), Is.EqualTo(2048));
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(1));
        Assert.That(_k.CheckInvariants(), Is.Empty);
        child.Exit();
    }

    [Test]
    public void The_owner_that_cannot_copy_takes_the_page_back_from_its_child_which_then_gets_SIGBUS()
    {
        ulong a = MapHugetlb(_p, 3 * H, H);
        for (int i = 0; i < 3; i++) _cpu.Store<long>(a + (ulong)i * H, i + 1);
        Process child = _p.Fork();
        _cpu.Store<long>(a, 10); // no free page for the owner's COW: unmap_ref_private, then reuse
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(10));
        Assert.That(FreeHugepages(_k, H), Is.Zero);
        child.Enter(_cpu);
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Load<long>(a), "HPAGE_RESV_UNMAPPED: \"killed due to inadequate hugepage pool\"");
        Assert.That(ex!.Result, Is.EqualTo(FaultResult.Sigbus));
        Assert.That(_cpu.Load<long>(a + H), Is.EqualTo(2), "the other pages are still shared");
        _p.Enter(_cpu);
        Assert.That(_k.CheckInvariants(), Is.Empty);
        child.Exit();
    }

    [Test]
    public void Gup_on_subpage_5_returns_head_plus_5_whose_compound_head_is_the_head_and_the_pin_is_released_through_it()
    {
        ulong a = MapHugetlb(_p, H, H);
        _cpu.Store<long>(a + 5 * 4096, 55);
        Machine m = _k.Machine;
        ulong headPfn = HeadPfnMapping(a);
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int ref0 = head->RefCount;
        Assert.That(_p.PinUserPages(a + 5 * 4096, 1, Foll.Write | Foll.Longterm, out UserPages? pin), Is.EqualTo(Errno.Success));
        using (pin)
        {
            Assert.That(pin!.Pfn(0), Is.EqualTo(headPfn + 5), "get_user_pages returns head+5, not head+1 (the aliased tail)");
            Assert.That(Folio.HeadPfn(m, pin.Pfn(0)), Is.EqualTo(headPfn), "compound_head(head+5) finds the head after the remap");
            Assert.That(Folio.Pincount(head), Is.EqualTo(1));
            Assert.That(head->RefCount, Is.EqualTo(ref0 + 1));
            Assert.That(pin.Read<long>(0), Is.EqualTo(55), "the DMA address of head+5 is subpage 5's frame");
            pin.Write(0, 8, 66L);
            Assert.That(_cpu.Load<long>(a + 5 * 4096 + 8), Is.EqualTo(66));
        }
        Assert.That(Folio.Pincount(head), Is.Zero, "unpin_user_page(head+5) found the folio");
        Assert.That(head->RefCount, Is.EqualTo(ref0));
        Assert.That(_k.CheckInvariants(), Is.Empty);
    }

    private ulong HeadPfnMapping(ulong a)
    {
        Assert.That(_p.GetUserPages(a, 1, Foll.None, out UserPages? r), Is.EqualTo(Errno.Success));
        using (r) return r!.Pfn(0);
    }

    [Test]
    public void An_access_to_a_poisoned_mapped_huge_page_is_SIGBUS_BUS_MCEERR_AR_and_the_page_never_comes_back()
    {
        ulong a = MapHugetlb(_p, 2 * H, H);
        _cpu.Store<long>(a, 1);
        _cpu.Store<long>(a + H, 2);
        ulong headPfn = HeadPfnMapping(a);
        Process child = _p.Fork();
        long nr0 = HugetlbSupport.Hstate(_k, H).NrHugepages;
        Assert.That(HugetlbMapping.MemoryFailure(_cpu, _k.Machine, headPfn + 3), Is.Zero, "memory_failure on subpage 3 of a mapped page");
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Load<long>(a + 4096));
        Assert.That(ex!.Result, Is.EqualTo(FaultResult.SigbusMceErrAr));
        Assert.That(ex.BusCode, Is.EqualTo(BusCode.MceErrAr));
        Assert.That(TestSupport.StatusKb(_p, "HugetlbPages"), Is.EqualTo(2048), "the poisoned page left the mapping");
        Assert.That(_cpu.Load<long>(a + H), Is.EqualTo(2), "the other page is intact");
        child.Enter(_cpu);
        Assert.Throws<SegmentationFault>(() => _cpu.Load<long>(a), "every mapping of the folio has the hwpoison entry");
        Process grandchild = child.Fork();
        grandchild.Enter(_cpu);
        Assert.Throws<SegmentationFault>(() => _cpu.Load<long>(a), "fork copies the hwpoison entry");
        _p.Enter(_cpu);
        Assert.That(_k.CheckInvariants(), Is.Empty);
        grandchild.Exit();
        child.Exit();
        Assert.That(HugetlbSupport.Hstate(_k, H).NrHugepages, Is.EqualTo(nr0 - 1), "the poisoned folio was dissolved at its last put, never handed out again");
        Assert.That(_k.Machine.Vmemmap.PfnToPage(headPfn + 3)->TestFlag(PG.Hwpoison), Is.True, "PG_hwpoison moved onto the raw page");
        Assert.That(_p.Munmap(a, 2 * H), Is.EqualTo(Errno.Success), "the hwpoison entry is cleared by the zap");
    }
}
