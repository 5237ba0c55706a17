using NativeMmu.Arch.X86;
using NativeMmu.Mm;
using NativeMmu.Physical;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>LA57: the same mm code over a PGD whose entries point at P4D tables.</summary>
public unsafe class FiveLevelPagingTests
{
    [Test]
    public void A_five_level_kernel_boots_faults_and_tears_down_with_every_frame_returned()
    {
        using Kernel kernel = Boot(cpus: 2, pagingLevels: 5);
        Assert.That(kernel.Machine.Paging.Levels, Is.EqualTo(5));
        Assert.That(kernel.Machine.Paging.PgdirShift, Is.EqualTo(48));
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using (var cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            ulong a = p.Mmap(32 * PageSize);
            for (ulong i = 0; i < 32; i++) cpu.Store<long>(a + i * PageSize, (long)i * 3);
            for (ulong i = 0; i < 32; i++)
                Assert.That(cpu.Load<long>(a + i * PageSize), Is.EqualTo((long)i * 3));
            Assert.That(cpu.Load<long>(a + 8), Is.Zero);

            ulong* pgd = (ulong*)PgTable.PgdOffset(p.Mm, a);
            Assert.Multiple(() =>
            {
                Assert.That(*pgd & PageTableBits.Present, Is.Not.Zero, "the PGD entry points at a P4D table");
                Assert.That(kernel.Machine.Vmemmap.PfnToPage(new Pgd(*pgd).Pfn)->PageType, Is.EqualTo(PageTypes.Table << 24));
                Assert.That(kernel.VmstatValue("nr_page_table_pages"), Is.EqualTo(5), "PGD, P4D, PUD, PMD and PTE tables");
                Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(12), "P4D tables are not counted in pgtables_bytes");
                Assert.That(p.Mm.GetMmRss(), Is.EqualTo(32));
            });

            Assert.That(p.Munmap(a, 32 * PageSize), Is.EqualTo(Errno.Success));
            Assert.Multiple(() =>
            {
                Assert.That(kernel.VmstatValue("nr_page_table_pages"), Is.EqualTo(1), "free_pgtables freed the P4D table too");
                Assert.That(*pgd, Is.Zero, "pgd_clear");
                Assert.That(StatusKb(p, "VmPTE"), Is.Zero);
                Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0 - 1));
            });

            ulong b = p.Mmap(64 * PageSize, Prot.ReadWrite, MapFlags.Populate);
            Assert.That(cpu.Load<long>(b + 63 * PageSize), Is.Zero);
        }
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "exit returned the populated pages and every table level");
        Assert.That(kernel.VmstatValue("nr_page_table_pages"), Is.Zero);
    }

    [TestCase(4)]
    [TestCase(5)]
    public void Mappings_on_both_sides_of_a_512GiB_boundary_work_and_free_their_tables(int levels)
    {
        using Kernel kernel = Boot(cpus: 1, pagingLevels: levels);
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using (var cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            const ulong boundary = 1UL << 39; // one PGD entry (4-level) or one P4D entry (5-level)
            ulong lo = MapAt(p, boundary - 2 * PageSize, 2 * PageSize);
            ulong hi = MapAt(p, boundary, 2 * PageSize, Prot.Read);
            cpu.Store<ulong>(boundary - 8, 0xfeed_face_cafe_beef);
            Assert.That(cpu.TryStore<long>(boundary + 8, 1), Is.EqualTo(NativeMmu.Cpus.FaultResult.SegvAccerr));
            Assert.That(cpu.Load<long>(hi), Is.Zero);
            Assert.That(cpu.Load<ulong>(boundary - 8), Is.EqualTo(0xfeed_face_cafe_beefUL));
            Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(24), "a PUD, a PMD and a PTE table on each side");
            Assert.That(p.Munmap(lo, 2 * PageSize), Is.EqualTo(Errno.Success));
            Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(12), "the lower side's tables went, the upper side's stay");
            cpu.FlushAllLocal();
            Assert.That(cpu.Load<long>(hi), Is.Zero);
        }
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0));
    }

    [Test]
    public void The_user_address_space_stays_47_bits_without_a_hint()
    {
        using Kernel kernel = Boot(cpus: 1, pagingLevels: 5);
        Process p = kernel.CreateProcess();
        Assert.That(p.Mm.TaskSize, Is.EqualTo(Geometry.DefaultMapWindow), "DEFAULT_MAP_WINDOW: 47-bit unless asked for more");
        Assert.That(p.Mmap(PageSize), Is.EqualTo(0x7fff_f7ff_f000UL - PageSize));
    }
}
