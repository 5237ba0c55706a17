using NativeMmu.Arch.X86;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>Unmapping and teardown: zap, mmu_gather, free_pgtables and exit_mmap (REFERENCE §9.2).</summary>
public class ZapExitTests
{
    private const ulong X = 0x2000_0000; // 512 MiB: inside the first 1 GiB
    private const ulong GiB = 1UL << 30;

    private static long PageTablePages(Kernel k) => k.VmstatValue("nr_page_table_pages");

    [Test]
    public void Munmap_of_everything_returns_every_frame_and_every_page_table_but_the_pgd()
    {
        using Kernel kernel = Boot(cpus: 2);
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using (var cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            Assert.That(PageTablePages(kernel), Is.EqualTo(1), "a new mm has its PGD");
            ulong a = p.Mmap(64 * PageSize);
            ulong b = MapAt(p, X + PmdSize - 4 * PageSize, 8 * PageSize); // spans two PTE tables
            ulong c = MapAt(p, 3 * GiB, 2 * PageSize, Prot.Read);
            for (ulong i = 0; i < 64; i++) cpu.Store<long>(a + i * PageSize, 1);
            for (ulong i = 0; i < 8; i++) cpu.Store<long>(b + i * PageSize, 1);
            _ = cpu.Load<long>(c);
            Assert.That(StatusKb(p, "VmPTE"), Is.GreaterThan(0));

            Assert.That(p.Munmap(b, 8 * PageSize), Is.EqualTo(Errno.Success));
            Assert.That(p.Munmap(a, 64 * PageSize), Is.EqualTo(Errno.Success));
            Assert.That(p.Munmap(c, 2 * PageSize), Is.EqualTo(Errno.Success));
            Assert.Multiple(() =>
            {
                Assert.That(p.Mm.Vmas.Count, Is.Zero);
                Assert.That(StatusKb(p, "VmPTE"), Is.Zero, "free_pgtables freed every user table");
                Assert.That(p.Mm.PgtablesBytes, Is.Zero);
                Assert.That(PageTablePages(kernel), Is.EqualTo(1), "nr_page_table_pages is back to just the PGD");
                Assert.That(p.Mm.GetMmRss(), Is.Zero);
                Assert.That(kernel.VmstatValue("nr_anon_pages"), Is.Zero);
                Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0 - 1), "everything but the PGD is free");
            });
            p.Exit();
        }
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "exit freed the PGD");
        Assert.That(PageTablePages(kernel), Is.Zero);
    }

    [Test]
    public void Exit_returns_every_frame_even_with_populated_memory()
    {
        using Kernel kernel = Boot(cpus: 2);
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using (var cpu = kernel.AttachCpu())
        {
            p.Enter(cpu);
            ulong a = p.Mmap(4 << 20, Prot.ReadWrite, MapFlags.Populate);
            ulong r = MapAt(p, X, 16 * PageSize, Prot.Read);
            ulong n = MapAt(p, 2 * GiB, 4 * PageSize);
            ulong m = MapAt(p, 5 * GiB + PmdSize, 4 * PageSize);
            for (ulong i = 0; i < 16; i++) _ = cpu.Load<long>(r + i * PageSize);
            for (ulong i = 0; i < 4; i++) cpu.Store<long>(n + i * PageSize, 1);
            for (ulong i = 0; i < 4; i++) cpu.Store<long>(m + i * PageSize, 1);
            Assert.That(p.Mprotect(n, 4 * PageSize, Prot.None), Is.EqualTo(Errno.Success), "PROT_NONE PTEs still hold pages");
            Assert.That(p.Mm.GetMmRss(), Is.EqualTo(1024 + 8));
            Assert.That(TestSupport.SettledFreeFrames(kernel), Is.LessThan(free0 - 1032));
            _ = a;
        }
        p.Exit();
        Assert.Multiple(() =>
        {
            Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0), "pages, page tables and the PGD all came back");
            Assert.That(PageTablePages(kernel), Is.Zero);
            Assert.That(kernel.VmstatValue("nr_anon_pages"), Is.Zero);
            Assert.That(p.Mm.IsDead, Is.True);
        });
    }

    [Test]
    public void Unmapping_more_pages_than_one_gather_batch_holds_frees_them_all()
    {
        // 40 MiB is more pages than an mmu_gather holds (MAX_GATHER_BATCH * MAX_GATHER_BATCH_COUNT):
        // zap_pte_range must flush and free part-way and carry on.
        using Kernel kernel = Boot(cpus: 2, memoryBytes: 64UL << 20);
        const ulong len = 40UL << 20;
        Assume.That(len / PageSize, Is.GreaterThan((ulong)MmuGather.MaxPages));
        long free0 = TestSupport.SettledFreeFrames(kernel);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(len, Prot.ReadWrite, MapFlags.Populate);
        Assert.That(p.Mm.GetMmRss(), Is.EqualTo((long)(len / PageSize)));
        cpu.Store<long>(a + len - 8, 42);
        Assert.That(p.Munmap(a, len), Is.EqualTo(Errno.Success));
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0 - 1));
        Assert.That(cpu.TryLoad<long>(a + len - 8, out _), Is.EqualTo(NativeMmu.Cpus.FaultResult.SegvMaperr));

        a = p.Mmap(len, Prot.ReadWrite, MapFlags.Populate);
        Assert.That(p.Madvise(a, len, Advice.DontNeed), Is.EqualTo(Errno.Success), "the same through zap_page_range_single");
        Assert.That(p.Mm.GetMmRss(), Is.Zero);
        p.Exit();
        Assert.That(TestSupport.SettledFreeFrames(kernel), Is.EqualTo(free0));
    }

    [Test]
    public void Free_pgtables_keeps_a_pte_table_still_used_by_a_neighbouring_vma()
    {
        using Kernel kernel = Boot(cpus: 1);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        // Two VMAs in the same 2 MiB: one PTE table serves both.
        ulong a = MapAt(p, X, 8 * PageSize);
        ulong b = MapAt(p, X + 16 * PageSize, 8 * PageSize);
        for (ulong i = 0; i < 8; i++)
        {
            cpu.Store<long>(a + i * PageSize, 100 + (long)i);
            cpu.Store<long>(b + i * PageSize, 200 + (long)i);
        }
        long pte = StatusKb(p, "VmPTE");
        Assert.That(p.Munmap(a, 8 * PageSize), Is.EqualTo(Errno.Success));
        Assert.Multiple(() =>
        {
            Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(pte), "the table is still needed by the other VMA");
            for (ulong i = 0; i < 8; i++)
                Assert.That(cpu.Load<long>(b + i * PageSize), Is.EqualTo(200 + (long)i), $"the neighbour's page {i}");
        });
        cpu.FlushAllLocal();
        Assert.That(cpu.Load<long>(b + 7 * PageSize), Is.EqualTo(207), "also through a fresh walk");
    }

    [Test]
    public void Free_pgtables_frees_only_the_half_of_a_2MiB_spanning_pair_that_nothing_else_uses()
    {
        using Kernel kernel = Boot(cpus: 1);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        // Lower VMA ends a page short of the 2 MiB boundary, upper VMA starts on it: separate PTE
        // tables, shared PMD table.
        ulong lo = MapAt(p, X + PmdSize - 9 * PageSize, 8 * PageSize);
        ulong hi = MapAt(p, X + PmdSize, 8 * PageSize);
        for (ulong i = 0; i < 8; i++)
        {
            cpu.Store<long>(lo + i * PageSize, 1);
            cpu.Store<long>(hi + i * PageSize, 300 + (long)i);
        }
        Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(16), "two PTE tables, one PMD and one PUD table");

        Assert.That(p.Munmap(lo, 8 * PageSize), Is.EqualTo(Errno.Success));
        Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(12), "the lower PTE table went; the PMD table stays for the upper VMA");
        cpu.FlushAllLocal();
        for (ulong i = 0; i < 8; i++)
            Assert.That(cpu.Load<long>(hi + i * PageSize), Is.EqualTo(300 + (long)i));
        Assert.That(cpu.TryLoad<long>(lo, out _), Is.EqualTo(NativeMmu.Cpus.FaultResult.SegvMaperr));
    }

    [Test]
    public void Free_pgtables_frees_a_pmd_table_no_other_vma_needs()
    {
        using Kernel kernel = Boot(cpus: 1);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        // One VMA just below 1 GiB, one just above: separate PMD tables, shared PUD table.
        ulong lo = MapAt(p, GiB - 4 * PageSize, 4 * PageSize);
        ulong hi = MapAt(p, GiB + PmdSize, 4 * PageSize);
        cpu.Store<long>(lo, 1);
        cpu.Store<long>(hi, 2);
        Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(4 * 5), "two PTE, two PMD and one PUD table");
        Assert.That(p.Munmap(lo, 4 * PageSize), Is.EqualTo(Errno.Success));
        Assert.That(StatusKb(p, "VmPTE"), Is.EqualTo(4 * 3), "the lower PTE and PMD tables are gone, the PUD table stays");
        cpu.FlushAllLocal();
        Assert.That(cpu.Load<long>(hi), Is.EqualTo(2));
        Assert.That(p.Munmap(hi, 4 * PageSize), Is.EqualTo(Errno.Success));
        Assert.That(StatusKb(p, "VmPTE"), Is.Zero);
    }

    [Test]
    public void A_munmapped_range_can_be_mapped_and_faulted_again()
    {
        using Kernel kernel = Boot(cpus: 1);
        Process p = kernel.CreateProcess();
        using var cpu = kernel.AttachCpu();
        p.Enter(cpu);
        for (int round = 0; round < 3; round++)
        {
            ulong a = MapAt(p, X, 4 * PageSize);
            Assert.That(cpu.Load<long>(a), Is.Zero, $"round {round}: fresh memory");
            cpu.Store<long>(a, round + 1);
            Assert.That(cpu.Load<long>(a), Is.EqualTo(round + 1));
            Assert.That(p.Munmap(a, 4 * PageSize), Is.EqualTo(Errno.Success));
        }
        Assert.That(StatusKb(p, "VmPTE"), Is.Zero);
    }
}
