using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Processor;

/// <summary>The emulated MMU: the TLB and the hardware walk with its Accessed/Dirty updates.</summary>
public unsafe class WalkerTests : OneProcessFixture
{
    /// <summary>Clears bits in the PTE of va, as the kernel's ptep_test_and_clear_young would.</summary>
    private void ClearPteBits(ulong va, ulong bits)
    {
        ulong* pte = (ulong*)PgTable.WalkToPte(_p.Mm, va); // the bits poked as the hardware would
        Assert.That(pte != null, Is.True, "a PTE table maps the address");
        Interlocked.And(ref *pte, ~bits);
    }

    private Pte PteAt(ulong va) => new(PteOf(_p, va)!.Value);

    [Test]
    public void The_walker_sets_accessed_on_a_read_and_dirty_only_on_a_write()
    {
        ulong a = _p.Mmap(PageSize);
        _cpu.Store<long>(a, 5);
        ClearPteBits(a, PageTableBits.Accessed | PageTableBits.Dirty);
        _cpu.FlushAllLocal();
        Assert.That(PteAt(a).Young || PteAt(a).Dirty, Is.False, "precondition: A and D clear, RW kept");
        Assert.That(PteAt(a).Write, Is.True);

        long faults = _kernel.VmstatValue("pgfault");
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(5));
        Assert.Multiple(() =>
        {
            Assert.That(PteAt(a).Young, Is.True, "the walk of a read sets Accessed");
            Assert.That(PteAt(a).Value & PageTableBits.Dirty, Is.Zero, "a read leaves Dirty clear");
        });

        _cpu.Store<long>(a, 6);
        Assert.Multiple(() =>
        {
            Assert.That(PteAt(a).Value & PageTableBits.Dirty, Is.Not.Zero, "a write through a clean TLB entry re-walks and sets Dirty");
            Assert.That(_kernel.VmstatValue("pgfault"), Is.EqualTo(faults), "the MMU did this itself: no page fault");
            Assert.That(_cpu.Load<long>(a), Is.EqualTo(6));
        });
    }

    [Test]
    public void The_walker_sets_accessed_on_every_level_it_uses()
    {
        ulong a = _p.Mmap(PageSize);
        _cpu.Store<long>(a, 1);
        // Clear A in the PGD entry and the PTE; the walk must set both again.
        ulong* pgd = (ulong*)PgTable.PgdOffset(_p.Mm, a);
        Interlocked.And(ref *pgd, ~PageTableBits.Accessed);
        ClearPteBits(a, PageTableBits.Accessed);
        _cpu.FlushAllLocal();
        _ = _cpu.Load<long>(a);
        Assert.That(*pgd & PageTableBits.Accessed, Is.Not.Zero, "PGD entry");
        Assert.That(PteAt(a).Young, Is.True, "PTE");
    }

    [Test]
    public void A_cached_translation_is_used_until_the_tlb_is_flushed()
    {
        ulong a = _p.Mmap(2 * PageSize);
        _cpu.Store<long>(a, 1);
        Assert.That(_cpu.TlbHolds(a, out ulong pfn, out bool huge), Is.True);
        Assert.That(pfn, Is.EqualTo(PteAt(a).Pfn));
        Assert.That(huge, Is.False);

        // Clear A behind the TLB's back: a TLB hit does not walk, so A stays clear...
        ClearPteBits(a, PageTableBits.Accessed);
        _ = _cpu.Load<long>(a);
        Assert.That(PteAt(a).Young, Is.False, "a TLB hit does not touch the page table");
        // ...until INVLPG drops the entry and the next access walks again.
        _cpu.FlushOneLocal(a);
        Assert.That(_cpu.TlbHolds(a, out _, out _), Is.False);
        _ = _cpu.Load<long>(a);
        Assert.That(PteAt(a).Young, Is.True);

        _cpu.Store<long>(a + PageSize, 1);
        _cpu.FlushAllLocal();
        Assert.That(_cpu.TlbHolds(a, out _, out _) || _cpu.TlbHolds(a + PageSize, out _, out _), Is.False, "a full flush drops everything");
    }

    [Test]
    public void A_range_flush_drops_only_the_pages_in_the_range()
    {
        ulong a = _p.Mmap(4 * PageSize);
        for (ulong i = 0; i < 4; i++) _cpu.Store<long>(a + i * PageSize, 1);
        _cpu.FlushRangeLocal(a + PageSize, a + 3 * PageSize, Geometry.PageShift);
        Assert.Multiple(() =>
        {
            Assert.That(_cpu.TlbHolds(a, out _, out _), Is.True);
            Assert.That(_cpu.TlbHolds(a + PageSize, out _, out _), Is.False);
            Assert.That(_cpu.TlbHolds(a + 2 * PageSize, out _, out _), Is.False);
            Assert.That(_cpu.TlbHolds(a + 3 * PageSize, out _, out _), Is.True);
        });
    }

    [Test]
    public void Switching_mm_drops_the_previous_translations()
    {
        ulong a = _p.Mmap(PageSize);
        _cpu.Store<long>(a, 1);
        Process q = _kernel.CreateProcess();
        q.Enter(_cpu);
        Assert.That(_cpu.TlbHolds(a, out _, out _), Is.False, "CR3 reload without PCID flushes the TLB");
        Assert.That(_cpu.TryLoad<long>(a, out _), Is.EqualTo(FaultResult.SegvMaperr), "the other mm has nothing at that address");
        Assert.That(_p.Mm.CpuMask & (1UL << _cpu.Id), Is.Zero, "left the old mm's cpumask");
        Assert.That(q.Mm.CpuMask & (1UL << _cpu.Id), Is.Not.Zero, "joined the new mm's cpumask");
        _p.Enter(_cpu);
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(1));
        q.Exit();
    }

    [Test]
    public void A_read_only_translation_does_not_let_a_store_through()
    {
        // The TLB caches read permission only for the zero page; a store must walk and fault.
        ulong a = _p.Mmap(PageSize);
        _ = _cpu.Load<long>(a);
        Assert.That(_cpu.TlbHolds(a, out ulong pfn, out _), Is.True);
        Assert.That(pfn, Is.EqualTo(_kernel.Machine.ZeroPfn));
        _cpu.Store<long>(a, 3);
        Assert.That(_cpu.TlbHolds(a, out pfn, out _), Is.True);
        Assert.That(pfn, Is.Not.EqualTo(_kernel.Machine.ZeroPfn), "the copy-on-write flushed the zero-page entry");
        Assert.That(_cpu.Load<long>(a), Is.EqualTo(3));
    }
}
