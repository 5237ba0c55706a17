using NativeMmu.Sync;
using NativeMmu.Cpus;
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
    public void A_huge_pmd_without_its_deposited_table_is_reported()
    {
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(2UL << 20);
        Assert.That(p.Madvise(a, 2UL << 20, Advice.HugePage), Is.EqualTo(Errno.Success));
        cpu.Store<long>(a, 1);
        Assert.That(k.CheckInvariants(), Is.Empty);
        NativeMmu.Arch.X86.Pmd* pmd = PgTable.WalkToPmd(p.Mm, a);
        ulong table = HugeMemory.Withdraw(k.Machine, pmd);
        Assert.That(k.CheckInvariants(), Has.One.Contains("1 huge PMDs but 0 deposited page tables"));
        HugeMemory.Deposit(k.Machine, pmd, table);
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
    }

    [Test]
    public void A_walker_about_to_change_a_table_under_a_write_protected_pmd_is_stopped()
    {
        // Only a shared (copy-on-write) PTE table sits under a write-protected PMD, and none is shared yet:
        // the walk policy's break-first point says so before a walker that changes entries maps the table.
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        NativeMmu.Arch.X86.Pmd* pmd = PgTable.WalkToPmd(p.Mm, a);
        PgTable.SetWrprotect(pmd);
        var bug = Assert.Throws<KernelBugException>(() => PgTable.PteOffsetMapLock(cpu, p.Mm, pmd, a, PteAccess.Write, out _));
        Assert.That(bug!.Message, Does.Contain("write-protected PMD"), "the break-first point names what it found");
        Assert.That(PgTable.PteOffsetMapLock(cpu, p.Mm, pmd, a, PteAccess.Read, out PteMapping map), Is.True, "a walker that only reads the table needs no break");
        PgTable.PteUnmapUnlock(cpu, p.Mm, pmd, ref map, a, null);
        PgTable.Set(pmd, PgTable.Get(pmd).MkWriteNovma());
        Assert.That(p.Madvise(a, TestSupport.PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success), "the zap goes through under a writable PMD");
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
        ulong* parentPte = (ulong*)PgTable.WalkToPte(p.Mm, a), childPte = (ulong*)PgTable.WalkToPte(child.Mm, a);
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

    private const ulong Page4K = 4096, Folio64K = 64 << 10, MiB = 1 << 20;

    private static Kernel BootWith64KFolios()
    {
        Kernel k = Boot();
        k.Machine.Thp.Enabled = ThpMode.Never;
        k.Machine.Thp.SetSize(64 << 10, ThpMode.Always);
        return k;
    }

    /// <summary>1 MiB of 64 KiB-aligned anonymous memory (mapped as 1 MiB + 64 KiB).</summary>
    private static ulong MapAligned(Process p) => (p.Mmap(MiB + Folio64K) + Folio64K - 1) & ~(Folio64K - 1);

    private static void WriteEvery(Cpu cpu, ulong a, ulong length, ulong step, long value)
    {
        for (ulong off = 0; off < length; off += step) cpu.Store<long>(a + off, value);
    }

    /// <summary>Forks twice, writes in every process (COW breaks and reuse), then exits child by child.</summary>
    private static void ForkWriteExit(Kernel k, ulong a)
    {
        using var cpu = k.AttachCpu();
        Process p = k.CreateProcess();
        p.Enter(cpu);
        a = a == 0 ? MapAligned(p) : a;
        WriteEvery(cpu, a, MiB, Page4K, 1);
        Assert.That(k.CheckInvariants(), Is.Empty, "after populating");

        Process child = p.Fork();
        Process grandchild = child.Fork();
        Assert.That(k.CheckInvariants(), Is.Empty, "three mms share every page");

        child.Enter(cpu);
        WriteEvery(cpu, a, MiB / 2, Page4K, 2);               // COW in the child: half the range
        grandchild.Enter(cpu);
        WriteEvery(cpu, a + MiB / 4, MiB / 4, Page4K * 3, 3); // a scattered COW in the grandchild
        p.Enter(cpu);
        WriteEvery(cpu, a + MiB / 2, MiB / 2, Page4K, 4);     // COW in the parent: the other half
        Assert.That(k.CheckInvariants(), Is.Empty, "after the COW faults");

        cpu.SwitchMm(null);
        child.Exit();
        Assert.That(k.CheckInvariants(), Is.Empty, "after the child's exit");
        p.Enter(cpu);
        WriteEvery(cpu, a, MiB, Page4K, 5);                   // reuse of what the child no longer shares
        grandchild.Enter(cpu);
        WriteEvery(cpu, a, MiB, Page4K * 2, 6);
        Assert.That(k.CheckInvariants(), Is.Empty, "after writes with the child gone");
        cpu.SwitchMm(null);
        grandchild.Exit();
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty, "the audits at every fork and exit found nothing");
    }

    [Test]
    public void Fork_writes_and_exits_with_small_pages_leave_no_violations()
    {
        using Kernel k = Boot();
        ForkWriteExit(k, 0);
    }

    [Test]
    public void Fork_writes_and_exits_with_64k_folios_leave_no_violations()
    {
        using Kernel k = BootWith64KFolios();
        Process probe = k.CreateProcess();
        using (var cpu = k.AttachCpu())
        {
            probe.Enter(cpu);
            ulong a = MapAligned(probe);
            cpu.Store<long>(a, 1);
            ulong pfn = (TestSupport.PteOf(probe, a)!.Value & 0x000F_FFFF_FFFF_F000) >> 12;
            Assert.That(Folio.IsLarge(k.Machine.Vmemmap.PfnToPage(Folio.HeadPfn(k.Machine, pfn))), "the fault made a large folio");
            Assert.That(Folio.NrPages(k.Machine.Vmemmap.PfnToPage(Folio.HeadPfn(k.Machine, pfn))), Is.EqualTo(16));
            cpu.SwitchMm(null);
        }
        ForkWriteExit(k, 0);
        probe.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
    }

    [Test]
    public void A_partly_unmapped_64k_folio_shared_with_a_child_has_no_violations()
    {
        using Kernel k = BootWith64KFolios();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p);
        WriteEvery(cpu, a, 4 * Folio64K, Page4K, 1);
        Process child = p.Fork();
        Assert.That(p.Munmap(a + 3 * Page4K, 5 * Page4K), Is.EqualTo(Errno.Success));
        Assert.That(k.CheckInvariants(), Is.Empty, "folio mapped 16 times by the child and 11 times by the parent");
        child.Enter(cpu);
        WriteEvery(cpu, a, 2 * Folio64K, Page4K, 2);
        Assert.That(k.CheckInvariants(), Is.Empty);
        cpu.SwitchMm(null);
        child.Exit();
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
    }

    [Test]
    public void A_writable_page_whose_anon_exclusive_flag_is_clear_is_reported()
    {
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        Page* page = PageOf(k, p, a);
        Assert.That(page->TestFlag(PG.AnonExclusive), "a fresh anonymous page is exclusive");
        page->ClearFlag(PG.AnonExclusive);
        IReadOnlyList<string> found = k.CheckInvariants();
        Assert.That(found, Has.One.Contains("without PageAnonExclusive"));
        Assert.That(found, Has.None.Contains("two mms"), "only one mm maps it");
        page->SetFlag(PG.AnonExclusive);
        Assert.That(k.CheckInvariants(), Is.Empty);
        p.Exit();
    }

    [Test]
    public void A_writable_page_of_a_64k_folio_without_anon_exclusive_is_reported()
    {
        using Kernel k = BootWith64KFolios();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p);
        WriteEvery(cpu, a, Folio64K, Page4K, 1);
        Page* tail = PageOf(k, p, a + 5 * Page4K);
        tail->ClearFlag(PG.AnonExclusive);
        ulong pfn = (TestSupport.PteOf(p, a + 5 * Page4K)!.Value & 0x000F_FFFF_FFFF_F000) >> 12;
        Assert.That(k.CheckInvariants(), Has.One.Matches<string>(s => s.StartsWith($"pfn {pfn:x}:") && s.Contains("without PageAnonExclusive")));
        tail->SetFlag(PG.AnonExclusive);
        p.Exit();
    }

    [Test]
    public void A_page_mapcount_inside_a_64k_folio_that_disagrees_with_its_pte_is_reported()
    {
        using Kernel k = BootWith64KFolios();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p);
        cpu.Store<long>(a, 1);
        Page* tail = PageOf(k, p, a + 7 * Page4K);
        tail->MapCount--;
        IReadOnlyList<string> found = k.CheckInvariants();
        Assert.That(found, Has.One.Contains("mapcount 0 but 1 PTE maps it"));
        Assert.That(found, Has.None.Contains("large_mapcount"), "the folio's own count is still right");
        tail->MapCount++;
        p.Exit();
    }

    [Test]
    public void A_pinned_64k_folio_whose_refcount_is_below_mapcount_plus_pincount_is_reported()
    {
        using Kernel k = BootWith64KFolios();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAligned(p);
        cpu.Store<long>(a, 1);
        Assert.That(p.PinUserPages(a, 1, Foll.Write, out UserPages? pinned), Is.EqualTo(Errno.Success));
        using (pinned)
        {
            Page* head = PageOf(k, p, a);
            Assert.That(Folio.Pincount(head), Is.EqualTo(1));
            Assert.That(k.CheckInvariants(), Is.Empty, "16 mappings + 1 pin within a refcount of 17");
            head->RefCount--;
            Assert.That(k.CheckInvariants(), Has.One.Contains("refcount 16 below mapcount 16 + pincount 1"));
            head->RefCount++;
        }
        p.Exit();
        Assert.That(k.InvariantViolations, Is.Empty);
    }

    [Test]
    public void A_violation_seen_at_fork_is_kept_in_InvariantViolations()
    {
        using Kernel k = Boot();
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        Page* page = PageOf(k, p, a);
        page->MapCount++;
        page->RefCount++;
        Process child = p.Fork();
        page->MapCount--;
        page->RefCount--;
        Assert.That(k.InvariantViolations, Has.One.Contains("mapcount 3 but 2 PTEs map it"), "the audit after dup_mmap");
        Assert.That(k.CheckInvariants(), Is.Empty, "restored");
        child.Exit();
        p.Exit();
        Assert.That(k.InvariantViolations, Has.Count.EqualTo(1), "the exits found nothing more");
    }

    [Test]
    public void No_audit_runs_without_DebugVm()
    {
        using var k = new Kernel(new KernelConfig { MemoryBytes = 64UL << 20, Cpus = 4 });
        Process p = k.CreateProcess();
        using var cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(TestSupport.PageSize);
        cpu.Store<long>(a, 1);
        Page* page = PageOf(k, p, a);
        page->MapCount++;
        page->RefCount++;
        Process child = p.Fork();
        page->MapCount--;
        page->RefCount--;
        Assert.That(k.InvariantViolations, Is.Empty, "fork audits only in the invariant mode");
        child.Exit();
        p.Exit();
    }
}
