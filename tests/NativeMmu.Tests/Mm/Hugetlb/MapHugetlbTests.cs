using NativeMmu.Mm;
using static NativeMmu.Tests.Mm.Hugetlb.HugetlbSupport;

namespace NativeMmu.Tests.Mm.Hugetlb;

/// <summary>
/// tools/testing/selftests/mm/map_hugetlb.c and hugepage-mmap.c: map huge pages, check the first word
/// reads zero, write the byte pattern (char)i over the whole length, read it back, and munmap with the
/// huge-page-aligned length. map_hugetlb runs with the default size (shift 0) and with MAP_HUGE_2MB /
/// MAP_HUGE_1GB (its second argument); its default 256 MiB is 16 MiB here for the 2 MiB pool and one page
/// ("if (hugepage_size > length) length = hugepage_size") for 1 GiB. hugepage-mmap maps a MAP_SHARED
/// hugetlbfs memfd, which this kernel does not have: the same 256 MiB pattern runs on a private
/// MAP_HUGETLB mapping. The invariant mode is on and must stay silent.
/// </summary>
[TestFixtureSource(nameof(Fixtures))]
public class MapHugetlbTests(ulong size, HvoMode hvo)
{
    public static IEnumerable<TestFixtureData> Fixtures()
        => from s in new[] { Size2M, Size1G } from m in Modes select new TestFixtureData(s, m);

    private Kernel _k = null!;
    private Process _p = null!;
    private NativeMmu.Cpus.Cpu _cpu = null!;
    private int _pages;

    /// <summary>One kernel per fixture: a 1 GiB pool's memory is touched once, not once per test.</summary>
    [OneTimeSetUp]
    public void BootKernel()
    {
        _pages = size == Size1G ? 1 : 8;
        _k = Boot(size, _pages, hvo);
    }

    [OneTimeTearDown]
    public void ShutDown() => _k.Dispose();

    [SetUp]
    public void SetUp()
    {
        _p = _k.CreateProcess("map_hugetlb");
        _cpu = _k.AttachCpu();
        _p.Enter(_cpu);
    }

    [TearDown]
    public void TearDown()
    {
        try
        {
            _p.Exit();
            Assert.That(_k.InvariantViolations, Is.Empty, "the invariant checks reported nothing");
            Assert.That(FreeHugepages(_k, size), Is.EqualTo(_pages), "every huge page is back in the pool");
        }
        finally
        {
            _cpu.Dispose();
        }
    }

    /// <summary>write_bytes: *(addr + i) = (char)i over the length, in 1 MiB chunks.</summary>
    private void WriteBytes(ulong addr, ulong length)
    {
        byte[] chunk = Pattern();
        for (ulong off = 0; off < length; off += (ulong)chunk.Length) _cpu.Write(addr + off, chunk);
    }

    /// <summary>read_bytes: every byte must still be (char)i; the first mismatch fails.</summary>
    private void ReadBytes(ulong addr, ulong length)
    {
        byte[] expected = Pattern(), got = new byte[expected.Length];
        for (ulong off = 0; off < length; off += (ulong)got.Length)
        {
            _cpu.Read(addr + off, got);
            int i = got.AsSpan().CommonPrefixLength(expected);
            Assert.That(i, Is.EqualTo(got.Length), $"Mismatch at {off + (ulong)i}");
        }
    }

    private static byte[] Pattern()
    {
        var b = new byte[1 << 20];
        for (int i = 0; i < b.Length; i++) b[i] = (byte)i; // (char)i, periodic in 256 and so in every chunk
        return b;
    }

    private void RunMapHugetlb(MapFlags sizeFlag)
    {
        ulong length = (ulong)_pages * size;
        Errno e = _p.Mmap(0, length, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb | sizeFlag, out ulong addr);
        Assert.That(e, Is.EqualTo(Errno.Success), "mmap");
        Assert.That(addr % size, Is.Zero, "a huge-page-aligned address");
        Assert.That(_cpu.Load<uint>(addr), Is.Zero, "First hex is 0: a new huge page is zeroed");
        WriteBytes(addr, length);
        ReadBytes(addr, length);
        Assert.That(StatusKb(_p, "HugetlbPages"), Is.EqualTo((long)(length >> 10)), "HugetlbPages counts every mapped huge page");
        Assert.That(StatusKb(_p, "VmRSS"), Is.Zero, "hugetlb is not in RSS");
        Assert.That(FreeHugepages(_k, size), Is.Zero, "the whole pool is in use");
        Assert.That(_k.CheckInvariants(), Is.Empty);
        Assert.That(_p.Munmap(addr, length), Is.EqualTo(Errno.Success), "munmap() length of MAP_HUGETLB memory must be hugepage aligned");
        Assert.That(StatusKb(_p, "HugetlbPages"), Is.Zero);
    }

    private static long StatusKb(Process p, string field) => TestSupport.StatusKb(p, field);

    [Test]
    public void Map_hugetlb_with_the_size_flag_reads_back_what_it_wrote() => RunMapHugetlb(HugeFlag(size));

    [Test]
    public void Map_hugetlb_with_the_default_size_uses_the_2_MiB_pool()
    {
        if (size == Size2M)
        {
            RunMapHugetlb(MapFlags.None);
            return;
        }
        // shift 0 is default_hstate (2 MiB), whose pool is empty here: the reservation fails.
        Errno e = _p.Mmap(0, size, Prot.ReadWrite, MapFlags.Private | MapFlags.Anonymous | MapFlags.HugeTlb, out _);
        Assert.That(e, Is.EqualTo(Errno.ENOMEM), "hugetlb_reserve_pages: no free 2 MiB page");
    }

    [Test]
    public void One_leaf_maps_the_whole_huge_page_and_one_TLB_entry_translates_it_until_the_munmap_flush()
    {
        ulong a = MapHugetlb(_p, size, size);
        _cpu.Store<long>(a, 1);
        ulong far = a + size - 4096;
        _cpu.Store<long>(far, 2);
        Assert.That(_cpu.TlbHolds(a, out ulong pfn0, out bool huge0), Is.True);
        Assert.That(huge0, Is.True, size == Size1G ? "a 1 GiB PUD leaf fills a 1 GiB TLB entry" : "a 2 MiB PMD leaf fills a 2 MiB TLB entry");
        Assert.That(_cpu.TlbHolds(far, out ulong pfnFar, out _), Is.True, "the same entry translates the last 4 KiB");
        Assert.That(pfnFar - pfn0, Is.EqualTo((size >> 12) - 1), "physically contiguous: never split into smaller leaves");
        Assert.That(LeafOf(a), Is.True, size == Size1G ? "a PUD entry with PSE maps it" : "a PMD entry with PSE maps it");
        Assert.That(_p.Munmap(a, size), Is.EqualTo(Errno.Success));
        Assert.That(_cpu.TlbHolds(far, out _, out _), Is.False, "the munmap flush dropped the huge translation");
        var ex = Assert.Throws<NativeMmu.Cpus.SegmentationFault>(() => _cpu.Load<long>(far));
        Assert.That(ex!.Code, Is.EqualTo(NativeMmu.Cpus.SegvCode.MapErr));
    }

    private unsafe bool LeafOf(ulong a)
    {
        NativeMmu.Arch.X86.Pte* slot = NativeMmu.Mm.Huge.HugetlbMapping.HugePteOffset(_p.Mm, a, size);
        return slot != null && PgTable.Get(slot) is var e && e.Present && e.Huge;
    }

    [Test]
    public void A_mapping_smaller_than_a_huge_page_is_rounded_up_to_one()
    {
        Errno e = MmapHugetlb(_p, 4096, size, out ulong addr);
        Assert.That(e, Is.EqualTo(Errno.Success));
        Assert.That(_p.ProcMaps(), Does.Contain($"{addr:x8}-{addr + size:x8} rw-p"), "ksys_mmap_pgoff: len = ALIGN(len, huge_page_size)");
        _cpu.Store<byte>(addr + size - 1, 9);
        Assert.That(_cpu.Load<byte>(addr + size - 1), Is.EqualTo(9), "the whole huge page is mapped");
    }
}

/// <summary>hugepage-mmap.c's 256 MiB write and read-back, on a private MAP_HUGETLB mapping of 128 pages of 2 MiB.</summary>
[TestFixtureSource(typeof(HugetlbSupport), nameof(Modes))]
public class HugepageMmapTests(HvoMode hvo)
{
    [Test]
    public void A_256_MiB_hugetlb_mapping_reads_back_the_pattern_written_to_it()
    {
        const ulong length = 256UL << 20;
        using var k = new Kernel(new KernelConfig { MemoryBytes = 320UL << 20, Cpus = 2, DebugVm = true, HugePages2M = 128, Hvo = hvo });
        Process p = k.CreateProcess("hugepage-mmap");
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong addr = MapHugetlb(p, length, Size2M);
        Assert.That(cpu.Load<uint>(addr), Is.Zero, "First hex is 0");
        var chunk = new byte[1 << 20];
        for (int i = 0; i < chunk.Length; i++) chunk[i] = (byte)i;
        for (ulong off = 0; off < length; off += (ulong)chunk.Length) cpu.Write(addr + off, chunk);
        var got = new byte[chunk.Length];
        for (ulong off = 0; off < length; off += (ulong)chunk.Length)
        {
            cpu.Read(addr + off, got);
            Assert.That(got.AsSpan().SequenceEqual(chunk), Is.True, $"the MiB at offset {off >> 20} MiB reads back");
        }
        Assert.That(FreeHugepages(k, Size2M), Is.Zero);
        Assert.That(p.Munmap(addr, length), Is.EqualTo(Errno.Success));
        Assert.That(FreeHugepages(k, Size2M), Is.EqualTo(128), "munmap gave every page back");
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
    }
}
