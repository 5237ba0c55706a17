using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Mm;

/// <summary>The invariant mode's page-table audit finds each kind of corruption it exists for.</summary>
public unsafe class PageTableCheckTests
{
    private static Kernel Boot() => new(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4, DebugVm = true });

    private static Page* PageOf(Kernel k, Process p, ulong a)
        => k.Machine.Vmemmap.PfnToPage((TestSupport.PteOf(p, a)!.Value & 0x000F_FFFF_FFFF_F000) >> 12);

    [Test]
    public void A_mapcount_that_disagrees_with_the_page_tables_is_reported()
    {
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        Assert.That(k.CheckInvariants(), Is.Empty);
        Page* page = PageOf(k, p, a);
        page->MapCount++;
        page->RefCount++;
        Assert.That(k.CheckInvariants(), Has.One.Contains("mapcount 2 but 1 PTE maps it"));
        page->MapCount--;
        page->RefCount--;
        p.Exit();
    }

    [Test]
    public void A_refcount_below_the_mapcount_is_reported()
    {
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        Process child = p.Fork();
        Page* page = PageOf(k, p, a);
        page->RefCount--;
        Assert.That(k.CheckInvariants(), Has.One.Contains("refcount 1 below mapcount 2"));
        page->RefCount++;
        child.Exit();
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty, "fork and exit audited a consistent state");
    }

    [Test]
    public void An_anonymous_page_writable_in_two_mms_or_without_anon_exclusive_is_reported()
    {
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        Process child = p.Fork();
        ulong* parentPte = PgTable.WalkToPte(p.Mm, a), childPte = PgTable.WalkToPte(child.Mm, a);
        ulong savedParent = *parentPte, savedChild = *childPte;
        *parentPte |= 2; // _PAGE_RW behind the kernel's back: a COW page writable in both
        *childPte |= 2;
        IReadOnlyList<string> found = k.CheckInvariants();
        Assert.That(found, Has.Some.Contains("writable by two mms"));
        Assert.That(found, Has.Some.Contains("without PageAnonExclusive"));
        *parentPte = savedParent;
        *childPte = savedChild;
        child.Exit();
        p.Exit();
    }

    [Test]
    public void A_large_mapcount_that_disagrees_with_the_ptes_is_reported()
    {
        using Kernel k = Boot();
        k.Machine.Thp.Enabled = ThpMode.Never;
        k.Machine.Thp.SetSize(64 << 10, ThpMode.Always);
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong raw = p.Mmap(128 << 10), a = (raw + (64 << 10) - 1) & ~((64UL << 10) - 1);
        cpu.Store<long>(a, 1);
        Assert.That(k.CheckInvariants(), Is.Empty);
        Page* head = PageOf(k, p, a);
        ref int large = ref Folio.LargeMapcount(head);
        large++;
        Assert.That(k.CheckInvariants(), Has.One.Contains("large_mapcount 17 but 16 PTEs map it"));
        large--;
        p.Exit();
    }
}
