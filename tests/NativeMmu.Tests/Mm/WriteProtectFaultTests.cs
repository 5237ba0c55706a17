using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Physical;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// do_wp_page on an anonymous page that is not marked exclusive: the state a page is in after a fork
/// whose child has gone (REFERENCE §9.1). The tests put a page into that state through struct page.
/// </summary>
public unsafe class WriteProtectFaultTests : OneProcessFixture
{
    /// <summary>A written page whose PTE is read-only and whose PageAnonExclusive is clear.</summary>
    private (ulong Va, ulong Pfn) SharedLookingPage()
    {
        ulong a = _p.Mmap(PageSize);
        _cpu.Store<long>(a, 0x1111);
        _cpu.Store<long>(a + 8, 0x2222);
        ulong pfn = new Pte(PteOf(_p, a)!.Value).Pfn;
        Page* page = _kernel.Machine.Vmemmap.PfnToPage(pfn);
        page->ClearFlagAtomic(PG.AnonExclusive);
        Assert.That(_p.Mprotect(a, PageSize, Prot.Read), Is.EqualTo(Errno.Success));
        Assert.That(_p.Mprotect(a, PageSize, Prot.ReadWrite), Is.EqualTo(Errno.Success));
        Assert.That(new Pte(PteOf(_p, a)!.Value).Write, Is.False, "a page that may be shared is not made writable by mprotect");
        return (a, pfn);
    }

    [Test]
    public void A_write_to_a_page_only_this_mapping_references_reuses_it()
    {
        (ulong a, ulong pfn) = SharedLookingPage();
        long reuse = _kernel.VmstatValue("pgreuse"), free = TestSupport.SettledFreeFrames(_kernel);
        _cpu.Store<long>(a, 0x3333);
        var e = new Pte(PteOf(_p, a)!.Value);
        Assert.Multiple(() =>
        {
            Assert.That(e.Pfn, Is.EqualTo(pfn), "wp_page_reuse keeps the page");
            Assert.That(e.Write && e.Dirty, Is.True);
            Assert.That(_kernel.VmstatValue("pgreuse") - reuse, Is.EqualTo(1), "vmstat pgreuse");
            Assert.That(_kernel.Machine.Vmemmap.PfnToPage(pfn)->TestFlag(PG.AnonExclusive), Is.True, "exclusive again");
            Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(free), "no page was allocated");
            Assert.That(_cpu.Load<long>(a + 8), Is.EqualTo(0x2222));
        });
    }

    [Test]
    public void A_write_to_a_page_with_another_reference_copies_it_and_drops_the_mappings_reference()
    {
        (ulong a, ulong pfn) = SharedLookingPage();
        Page* old = _kernel.Machine.Vmemmap.PfnToPage(pfn);
        Interlocked.Increment(ref old->RefCount); // another holder, e.g. a pin taken through GUP
        long free0 = TestSupport.SettledFreeFrames(_kernel);

        _cpu.Store<long>(a, 0x3333);
        var e = new Pte(PteOf(_p, a)!.Value);
        Assert.Multiple(() =>
        {
            Assert.That(e.Pfn, Is.Not.EqualTo(pfn), "wp_page_copy mapped a copy");
            Assert.That(e.Write, Is.True);
            Assert.That(_cpu.Load<long>(a), Is.EqualTo(0x3333));
            Assert.That(_cpu.Load<long>(a + 8), Is.EqualTo(0x2222), "the copy carries the old contents");
            Assert.That(*(long*)_kernel.Machine.Memory.FrameAddress(pfn), Is.EqualTo(0x1111), "the old page is untouched");
            Assert.That(old->MapCount, Is.EqualTo(-1), "the old page is no longer mapped");
            Assert.That(old->RefCount, Is.EqualTo(1), "only the other holder's reference is left");
            Assert.That(_p.Mm.GetMmRss(), Is.EqualTo(1));
            Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(free0 - 1));
        });

        Rmap.FolioPut(_cpu, _kernel.Machine, pfn); // the other holder lets go (folio_put)
        Assert.That(TestSupport.SettledFreeFrames(_kernel), Is.EqualTo(free0), "the old page was freed with its last reference");
    }
}
