using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Physical;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>do_anonymous_page, do_wp_page and the paths around them (REFERENCE §9.1).</summary>
public unsafe class AnonymousFaultTests
{
    private KernelLease _lease = null!;
    private Kernel _kernel = null!;
    private Process _p = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;

    [SetUp]
    public void Boot()
    {
        _lease = new KernelLease(TestSupport.Boot());
        _kernel = _lease.Kernel;
        _p = _kernel.CreateProcess();
        _cpu = _kernel.AttachCpu();
        _p.Enter(_cpu);
    }

    [TearDown]
    public void ShutDown()
    {
        _cpu.Dispose();
        _lease.Dispose();
    }

    private long PageTablePages => _kernel.VmstatValue("nr_page_table_pages");

    [Test]
    public void Without_a_zero_page_a_read_fault_gets_a_zeroed_page_of_its_own()
    {
        using var k = new Kernel(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 2, DebugVm = true, ForbidZeroPage = true });
        Process p = k.CreateProcess();
        using Cpu cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(4 * PageSize);

        Assert.That(cpu.Load<long>(a + 8), Is.Zero);

        var e = new Pte(PteOf(p, a)!.Value);
        Assert.Multiple(() =>
        {
            Assert.That(e.Pfn, Is.Not.EqualTo(k.Machine.ZeroPfn), "no shared zero page: do_anonymous_page allocates");
            Assert.That(e.Special, Is.False);
            Assert.That(e.Write && e.Dirty, Is.True, "mapped as a write fault maps it, the VMA being writable");
            Assert.That(p.Mm.GetMmRss(), Is.EqualTo(1), "the page is counted in RSS");
        });
        cpu.Store<long>(a + 8, 7);
        Assert.That(new Pte(PteOf(p, a)!.Value).Pfn, Is.EqualTo(e.Pfn), "the write needs no copy: the page is the mm's own");
    }

    [Test]
    public void Untouched_memory_reads_zero_through_the_zero_page()
    {
        ulong a = _p.Mmap(4 * PageSize);
        long free0 = TestSupport.SettledFreeFrames(_kernel), tables0 = PageTablePages;

        Assert.That(_cpu.Load<long>(a + 8), Is.Zero);

        ulong? pte = PteOf(_p, a);
        Assert.That(pte, Is.Not.Null, "the read fault installed a PTE table");
        var e = new Pte(pte!.Value);
        Assert.Multiple(() =>
        {
            Assert.That(e.Present, Is.True);
            Assert.That(e.Pfn, Is.EqualTo(_kernel.Machine.ZeroPfn), "a read fault maps the shared zero page");
            Assert.That(e.Special, Is.True, "the zero-page PTE is pte_special");
            Assert.That(e.Write, Is.False, "the zero page is never writable");
            Assert.That(e.User, Is.True);
            Assert.That(_p.Mm.GetMmRss(), Is.Zero, "the zero page is not counted in RSS");
            long tables = PageTablePages - tables0;
            Assert.That(tables, Is.EqualTo(3), "PUD, PMD and PTE tables for the first fault of an mm");
            Assert.That(free0 - TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(tables), "no data frame was allocated, only the page tables");
            Assert.That(new Pte(PteOf(_p, a + PageSize)!.Value).None, Is.True, "only the faulting page is mapped");
        });
    }

    [Test]
    public void A_write_after_a_read_replaces_the_zero_page_with_a_fresh_zeroed_frame()
    {
        ulong a = _p.Mmap(PageSize);
        _ = _cpu.Load<long>(a);
        _cpu.Store<long>(a + 16, 0x1234_5678);

        var e = new Pte(PteOf(_p, a)!.Value);
        Assert.Multiple(() =>
        {
            Assert.That(e.Pfn, Is.Not.EqualTo(_kernel.Machine.ZeroPfn), "the copy-on-write of the zero page gave a frame of its own");
            Assert.That(e.Write, Is.True, "writable");
            Assert.That(e.Dirty, Is.True, "dirty");
            Assert.That(e.Special, Is.False, "a normal page");
            Assert.That(_p.Mm.GetMmCounter(MmCounter.AnonPages), Is.EqualTo(1));
            Assert.That(_cpu.Load<long>(a + 16), Is.EqualTo(0x1234_5678));
            Assert.That(_cpu.Load<long>(a + 8), Is.Zero, "the rest of the new frame is zero");
            Assert.That(_kernel.Machine.Memory.Frame(_kernel.Machine.ZeroPfn).IndexOfAnyExcept((byte)0), Is.EqualTo(-1),
                "the write did not land in the zero page");
        });
    }

    [Test]
    public void A_first_write_maps_an_exclusive_anonymous_page()
    {
        ulong a = _p.Mmap(PageSize);
        _cpu.Store<int>(a, 7);
        var e = new Pte(PteOf(_p, a)!.Value);
        Page* page = _kernel.Machine.Vmemmap.PfnToPage(e.Pfn);
        Assert.Multiple(() =>
        {
            Assert.That(e.Write && e.Dirty && e.Young, Is.True, "pte_mkwrite(pte_mkdirty(mk_pte)), young");
            Assert.That(page->RefCount, Is.EqualTo(1), "one reference: the mapping");
            Assert.That(page->MapCount, Is.Zero, "mapped once (_mapcount starts at -1)");
            Assert.That(page->Mapping & PageTypes.MappingAnon, Is.EqualTo(PageTypes.MappingAnon), "FOLIO_MAPPING_ANON");
            Assert.That(page->TestFlag(PG.AnonExclusive), Is.True, "PageAnonExclusive");
            Assert.That(page->Index, Is.EqualTo(a >> Geometry.PageShift), "linear_page_index of an anonymous VMA");
            Assert.That(_kernel.VmstatValue("nr_anon_pages"), Is.EqualTo(1));
        });
    }

    [Test]
    public void What_one_cpu_writes_another_cpu_reads()
    {
        ulong a = _p.Mmap(4 * PageSize);
        _cpu.Store<long>(a + PageSize, 0x0bad_cafe);
        long seen = 0, zero = -1;
        _lease.RunOnCpus(_p, other =>
        {
            Assert.That(other.Id, Is.Not.EqualTo(_cpu.Id));
            seen = other.Load<long>(a + PageSize);
            zero = other.Load<long>(a + 2 * PageSize);
            other.Store<long>(a + 3 * PageSize, 99);
        });
        Assert.Multiple(() =>
        {
            Assert.That(seen, Is.EqualTo(0x0bad_cafe));
            Assert.That(zero, Is.Zero);
            Assert.That(_cpu.Load<long>(a + 3 * PageSize), Is.EqualTo(99), "and the other way round");
        });
    }

    [Test]
    public void Two_cpus_faulting_the_same_pages_at_once_map_exactly_one_frame_each()
    {
        const int pages = 256;
        ulong a = _p.Mmap(pages * PageSize);
        long free0 = TestSupport.SettledFreeFrames(_kernel), tables0 = PageTablePages;
        var pfns = new ulong[2, pages];
        using var barrier = new Barrier(2);
        Action<NativeMmu.Cpus.Cpu> Body(int who) => cpu =>
        {
            for (int i = 0; i < pages; i++)
            {
                if (!barrier.SignalAndWait(HandshakeTimeout)) throw new TimeoutException("the other CPU did not arrive");
                ulong va = a + (ulong)i * PageSize;
                cpu.Store<long>(va + (ulong)who * 8, who + 1);
                Assert.That(cpu.TlbHolds(va, out pfns[who, i], out _), Is.True, "the store left a translation behind");
            }
        };
        _lease.RunOnCpus(_p, Body(0), Body(1));

        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(pages), "one page per address, however the faults raced");
        long tables = PageTablePages - tables0;
        Assert.That(free0 - TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(pages + tables), "the loser of each race freed its frame");
        for (int i = 0; i < pages; i++)
        {
            ulong va = a + (ulong)i * PageSize;
            ulong mapped = new Pte(PteOf(_p, va)!.Value).Pfn;
            if (pfns[0, i] != mapped || pfns[1, i] != mapped)
                Assert.Fail($"page {i}: CPUs used frames {pfns[0, i]:x} and {pfns[1, i]:x}, the PTE maps {mapped:x}");
            if (_cpu.Load<long>(va) != 1 || _cpu.Load<long>(va + 8) != 2)
                Assert.Fail($"page {i}: a store was lost ({_cpu.Load<long>(va)}, {_cpu.Load<long>(va + 8)})");
        }
    }

    [Test]
    public void A_store_to_a_read_only_mapping_is_sigsegv_accerr()
    {
        ulong a = _p.Mmap(PageSize, Prot.Read);
        Assert.That(_cpu.Load<long>(a), Is.Zero, "reads are allowed");
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Store<long>(a + 8, 1));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.Code, Is.EqualTo(SegvCode.AccErr));
            Assert.That(ex.Address, Is.EqualTo(a + 8));
            Assert.That(_cpu.TryStore<long>(a, 1), Is.EqualTo(FaultResult.SegvAccerr));
        });
    }

    [Test]
    public void A_store_to_a_read_only_mapping_that_was_never_read_is_sigsegv_accerr()
    {
        ulong a = _p.Mmap(PageSize, Prot.Read);
        Assert.That(_cpu.TryStore<long>(a, 1), Is.EqualTo(FaultResult.SegvAccerr), "not-present write on a VMA without VM_WRITE");
        Assert.That(_p.Mm.GetMmRss(), Is.Zero, "nothing was allocated for the refused store");
    }

    [Test]
    public void An_access_to_an_unmapped_address_is_sigsegv_maperr()
    {
        ulong a = _p.Mmap(PageSize);
        Assert.That(_p.Munmap(a, PageSize), Is.EqualTo(Errno.Success));
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Load<long>(a));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.Code, Is.EqualTo(SegvCode.MapErr));
            Assert.That(ex.Address, Is.EqualTo(a));
            Assert.That(_cpu.TryStore<long>(a, 1), Is.EqualTo(FaultResult.SegvMaperr));
            Assert.That(_cpu.TryLoad<long>(0, out _), Is.EqualTo(FaultResult.SegvMaperr), "the NULL page");
            Assert.That(_cpu.TryLoad<long>(0xffff_8880_0000_0000, out _), Is.EqualTo(FaultResult.SegvMaperr), "a kernel address");
        });
    }

    [Test]
    public void Prot_none_is_sigsegv_accerr_for_loads_and_stores()
    {
        ulong a = _p.Mmap(PageSize, Prot.None);
        Assert.Multiple(() =>
        {
            Assert.That(_cpu.TryLoad<long>(a, out _), Is.EqualTo(FaultResult.SegvAccerr));
            Assert.That(_cpu.TryStore<long>(a, 1), Is.EqualTo(FaultResult.SegvAccerr));
            Assert.That(PteOf(_p, a), Is.Null, "no fault path ran: not even a table was allocated");
        });
    }

    [Test]
    public void A_store_crossing_a_page_boundary_writes_both_pages()
    {
        ulong a = _p.Mmap(2 * PageSize);
        _cpu.Store<ulong>(a + PageSize - 4, 0x1122_3344_5566_7788);
        Assert.Multiple(() =>
        {
            Assert.That(_cpu.Load<uint>(a + PageSize - 4), Is.EqualTo(0x5566_7788u), "the low half on the first page");
            Assert.That(_cpu.Load<uint>(a + PageSize), Is.EqualTo(0x1122_3344u), "the high half on the second page");
            Assert.That(_cpu.Load<ulong>(a + PageSize - 4), Is.EqualTo(0x1122_3344_5566_7788UL), "a crossing load reads it back");
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(2));
        });
    }

    [Test]
    public void A_crossing_store_that_faults_on_the_second_page_writes_nothing_and_reports_that_page()
    {
        ulong a = MapAt(_p, 0x4000_0000, PageSize);
        MapAt(_p, 0x4000_0000 + PageSize, PageSize, Prot.Read);
        _cpu.Store<uint>(a + PageSize - 4, 0xdead_beef);

        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Store<ulong>(a + PageSize - 4, ulong.MaxValue));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.Code, Is.EqualTo(SegvCode.AccErr));
            Assert.That(ex.Address, Is.EqualTo(a + PageSize), "CR2 (si_addr) is the first byte of the access on the faulting page");
            Assert.That(_cpu.Load<uint>(a + PageSize - 4), Is.EqualTo(0xdead_beefu), "both translations are checked before any byte moves");
        });

        Assert.That(_p.Munmap(a + PageSize, PageSize), Is.EqualTo(Errno.Success));
        ex = Assert.Throws<SegmentationFault>(() => _cpu.Store<ulong>(a + PageSize - 2, ulong.MaxValue));
        Assert.Multiple(() =>
        {
            Assert.That(ex!.Code, Is.EqualTo(SegvCode.MapErr));
            Assert.That(ex.Address, Is.EqualTo(a + PageSize));
            Assert.That(_cpu.Load<uint>(a + PageSize - 4), Is.EqualTo(0xdead_beefu));
        });
    }

    [Test]
    public void A_crossing_access_that_faults_on_the_first_page_reports_its_own_address()
    {
        MapAt(_p, 0x4000_0000 + PageSize, PageSize);
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Load<ulong>(0x4000_0000 + PageSize - 4));
        Assert.That(ex!.Address, Is.EqualTo(0x4000_0000 + PageSize - 4));
        Assert.That(ex.Code, Is.EqualTo(SegvCode.MapErr));
    }

    [Test]
    public void Proc_status_reports_rss_and_page_table_bytes_after_faulting_pages()
    {
        const int n = 37;
        ulong a = _p.Mmap(64 * PageSize);
        Assert.Multiple(() =>
        {
            Assert.That(StatusKb(_p, "VmRSS"), Is.Zero);
            Assert.That(StatusKb(_p, "VmPTE"), Is.Zero, "no user page table yet (the PGD is not counted)");
            Assert.That(StatusKb(_p, "VmSize"), Is.EqualTo(64 * 4));
        });
        for (int i = 0; i < n; i++) _cpu.Store<byte>(a + (ulong)i * PageSize + 100, 1);
        for (int i = n; i < n + 5; i++) _ = _cpu.Load<byte>(a + (ulong)i * PageSize); // zero page: not RSS
        Assert.Multiple(() =>
        {
            Assert.That(StatusKb(_p, "VmRSS"), Is.EqualTo(n * 4));
            Assert.That(StatusKb(_p, "RssAnon"), Is.EqualTo(n * 4));
            Assert.That(StatusKb(_p, "RssFile"), Is.Zero);
            Assert.That(StatusKb(_p, "VmHWM"), Is.EqualTo(n * 4));
            Assert.That(StatusKb(_p, "VmPTE"), Is.EqualTo(12), "one PTE, one PMD and one PUD table of 4 kB");
        });
    }

    [Test]
    public void Page_tables_are_added_per_2MiB_and_per_1GiB_region()
    {
        ulong a = MapAt(_p, 0x4000_0000 - PmdSize, 3 * PmdSize); // crosses a 1 GiB boundary after the first 2 MiB
        _cpu.Store<byte>(a, 1);
        Assert.That(StatusKb(_p, "VmPTE"), Is.EqualTo(12));
        _cpu.Store<byte>(a + PmdSize, 1); // next PMD entry, next PUD entry: new PMD table and PTE table
        Assert.That(StatusKb(_p, "VmPTE"), Is.EqualTo(20));
        _cpu.Store<byte>(a + 2 * PmdSize, 1); // same PMD table, new PTE table
        Assert.That(StatusKb(_p, "VmPTE"), Is.EqualTo(24));
    }

    [Test]
    public void Vmstat_pgfault_counts_every_handled_fault()
    {
        ulong a = _p.Mmap(16 * PageSize);
        long f0 = _kernel.VmstatValue("pgfault");
        for (int i = 0; i < 10; i++) _cpu.Store<int>(a + (ulong)i * PageSize, i);
        Assert.That(_kernel.VmstatValue("pgfault") - f0, Is.EqualTo(10), "one write fault per fresh page");

        for (int i = 0; i < 10; i++) _cpu.Store<int>(a + (ulong)i * PageSize + 4, i);
        Assert.That(_kernel.VmstatValue("pgfault") - f0, Is.EqualTo(10), "stores to mapped writable pages do not fault");

        _ = _cpu.Load<int>(a + 12 * PageSize);
        _cpu.Store<int>(a + 12 * PageSize, 1);
        Assert.That(_kernel.VmstatValue("pgfault") - f0, Is.EqualTo(12), "a read (zero page) and then a write (copy) are two faults");

        Assert.That(_cpu.TryLoad<int>(a + 32 * PageSize, out _), Is.EqualTo(FaultResult.SegvMaperr));
        Assert.That(_kernel.VmstatValue("pgfault") - f0, Is.EqualTo(12), "bad_area never reaches handle_mm_fault");
    }

    [Test]
    public void Mprotect_read_only_makes_a_later_store_fault_and_read_write_restores_the_same_page()
    {
        ulong a = _p.Mmap(4 * PageSize);
        for (int i = 0; i < 4; i++) _cpu.Store<long>(a + (ulong)i * PageSize, 100 + i);
        ulong pfn = new Pte(PteOf(_p, a)!.Value).Pfn;
        Assert.That(_cpu.TlbHolds(a, out _, out _), Is.True, "the store cached a writable translation");

        Assert.That(_p.Mprotect(a, 4 * PageSize, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(new Pte(PteOf(_p, a)!.Value).Write, Is.False, "change_protection write-protected the PTE");
        Assert.That(_cpu.TryStore<long>(a, 1), Is.EqualTo(FaultResult.SegvAccerr), "the stale writable TLB entry was flushed");
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(100), "reads still work and see the data");

        long faults = _kernel.VmstatValue("pgfault");
        Assert.That(_p.Mprotect(a, 4 * PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        var e = new Pte(PteOf(_p, a)!.Value);
        Assert.That(e.Write, Is.True, "an exclusive anonymous page is made writable at once (MM_CP_TRY_CHANGE_WRITABLE)");
        _cpu.Store<long>(a, 200);
        Assert.Multiple(() =>
        {
            Assert.That(_kernel.VmstatValue("pgfault"), Is.EqualTo(faults), "the store needed no fault");
            Assert.That(new Pte(PteOf(_p, a)!.Value).Pfn, Is.EqualTo(pfn), "the same frame, no copy");
            Assert.That(_cpu.Load<long>(a), Is.EqualTo(200));
            Assert.That(_cpu.Load<long>(a + 3 * PageSize), Is.EqualTo(103));
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(4));
        });
    }

    [Test]
    public void Mprotect_none_hides_the_data_and_read_write_brings_it_back()
    {
        ulong a = _p.Mmap(2 * PageSize);
        _cpu.Store<long>(a, 0x5eed);
        _ = _cpu.Load<long>(a + PageSize); // a zero-page PTE
        Assert.That(_p.Mprotect(a, 2 * PageSize, Prot.None), Is.EqualTo(Errno.Success));
        var e = new Pte(PteOf(_p, a)!.Value);
        Assert.Multiple(() =>
        {
            Assert.That(e.Value & PageTableBits.Present, Is.Zero, "a PROT_NONE PTE is not present to the MMU");
            Assert.That(e.Protnone, Is.True);
            Assert.That(_cpu.TryLoad<long>(a, out _), Is.EqualTo(FaultResult.SegvAccerr));
            Assert.That(_cpu.TryLoad<long>(a + PageSize, out _), Is.EqualTo(FaultResult.SegvAccerr));
        });
        Assert.That(_p.Mprotect(a, 2 * PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Assert.Multiple(() =>
        {
            Assert.That(_cpu.Load<long>(a), Is.EqualTo(0x5eed), "the PFN survived the L1TF inversion both ways");
            Assert.That(_cpu.Load<long>(a + PageSize), Is.Zero);
            Assert.That(new Pte(PteOf(_p, a + PageSize)!.Value).Pfn, Is.EqualTo(_kernel.Machine.ZeroPfn));
        });
        _cpu.Store<long>(a + PageSize, 1);
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(2));
    }

    [Test]
    public void A_fault_with_no_memory_left_is_out_of_memory_and_leaks_nothing()
    {
        ulong a = _p.Mmap(8 * PageSize);
        _cpu.Store<long>(a, 1); // page tables exist; the next faults need only data pages
        FrameAllocator alloc = _kernel.Machine.Allocator;
        var taken = new List<(ulong Pfn, int Order)>();
        for (int order = FrameAllocator.MaxOrder; order >= 0; order--)
            for (ulong pfn; (pfn = alloc.AllocPages(_cpu.Id, order, Gfp.None)) != 0;) taken.Add((pfn, order));
        Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.Zero);
        long rss = _p.Mm.GetMmRss();

        Assert.That(_cpu.TryStore<long>(a + PageSize, 2), Is.EqualTo(FaultResult.Oom), "VM_FAULT_OOM");
        var ex = Assert.Throws<SegmentationFault>(() => _cpu.Store<long>(a + 2 * PageSize, 2));
        Assert.That(ex!.Result, Is.EqualTo(FaultResult.Oom));
        Assert.That(_cpu.Load<long>(a + 3 * PageSize), Is.Zero, "a read still maps the zero page: it needs no memory");
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(rss));

        foreach (var (pfn, order) in taken) alloc.FreePages(_cpu.Id, pfn, order);
        _cpu.Store<long>(a + PageSize, 2);
        Assert.That(_cpu.Load<long>(a + PageSize), Is.EqualTo(2), "with memory back the same store succeeds");
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(1));
    }

    [Test]
    public void Read_and_write_of_spans_go_page_by_page()
    {
        ulong a = _p.Mmap(3 * PageSize);
        byte[] data = new byte[2 * (int)PageSize + 100];
        new Random(7).NextBytes(data);
        _cpu.Write(a + 50, data);
        byte[] back = new byte[data.Length];
        _cpu.Read(a + 50, back);
        Assert.That(back, Is.EqualTo(data));
        Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(3));
    }
}
