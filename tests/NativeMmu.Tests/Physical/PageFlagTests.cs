using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Tests.Physical;

/// <summary>The struct page flag operations of include/linux/page-flags.h.</summary>
public class PageFlagTests
{
    [Test]
    public void Set_and_clear_change_only_their_bit()
    {
        var page = new Page { Flags = PG.Mask(PG.Reserved) };
        page.SetFlag(PG.Uptodate);
        page.SetFlagAtomic(PG.Locked);
        Assert.That(page.Flags, Is.EqualTo(PG.Mask(PG.Reserved, PG.Uptodate, PG.Locked)), "each set adds one bit");
        page.ClearFlag(PG.Reserved);
        page.ClearFlagAtomic(PG.Locked);
        Assert.That(page.Flags, Is.EqualTo(PG.Mask(PG.Uptodate)), "each clear removes one bit");
    }

    [Test]
    public void Test_and_set_reports_the_bit_as_it_was()
    {
        var page = new Page();
        Assert.Multiple(() =>
        {
            Assert.That(page.TestAndSetFlag(PG.Locked), Is.False, "trylock on an unlocked page succeeds");
            Assert.That(page.TestAndSetFlag(PG.Locked), Is.True, "a second trylock finds it locked");
            Assert.That(page.TestFlag(PG.Locked), Is.True);
            Assert.That(page.TestAndClearFlag(PG.Locked), Is.True, "the clear finds it set");
            Assert.That(page.TestAndClearFlag(PG.Locked), Is.False, "and then clear");
        });
    }

    [Test]
    public void Several_flags_set_and_clear_in_one_operation()
    {
        var page = new Page();
        page.SetFlags(PG.AnonExclusive, PG.Swapbacked, PG.Lru);
        Assert.That(page.Flags, Is.EqualTo(PG.Mask(PG.AnonExclusive, PG.Swapbacked, PG.Lru)));
        page.SetFlag(PG.Dirty);
        page.ClearFlags(PG.Lru, PG.Active, PG.AnonExclusive, PG.Swapbacked);
        Assert.That(page.Flags, Is.EqualTo(PG.Mask(PG.Dirty)), "PG_active was clear and stays clear; PG_dirty is untouched");
    }

    [Test]
    public void A_page_is_compound_when_it_is_a_head_or_a_tail()
    {
        var head = new Page { Flags = PG.Mask(PG.Head) };
        var tail = new Page { CompoundHead = 0xffff_ea00_0000_0041 };
        var small = new Page();
        Assert.Multiple(() =>
        {
            Assert.That(head.IsHead && head.IsCompound && !head.IsTail, Is.True, "PageHead");
            Assert.That(tail.IsTail && tail.IsCompound && !tail.IsHead, Is.True, "PageTail: compound_head bit 0");
            Assert.That(small.IsCompound, Is.False, "an order-0 page");
        });
    }
    [Test]
    public void Duplicating_a_mapped_page_raises_mapcount_and_refcount_by_one_each()
    {
        var page = new Page { MapCount = 0, RefCount = 1 };
        page.IncMapcountAndGet();
        Assert.That((page.MapCount, page.RefCount), Is.EqualTo((1, 2)));
        var busy = new Page { MapCount = 0x7fff_fffe, RefCount = -2 };
        busy.IncMapcountAndGet();
        Assert.That((busy.MapCount, busy.RefCount), Is.EqualTo((0x7fff_ffff, -1)), "neither counter carries into the other");
    }

    [Test]
    public void Duplicating_an_unmapped_page_is_a_kernel_bug()
    {
        var page = new Page { MapCount = -1, RefCount = 1 };
        Assert.That(() => page.IncMapcountAndGet(), Throws.TypeOf<KernelBugException>());
    }

    [Test, CancelAfter(30_000)]
    public unsafe void The_combined_increment_loses_no_concurrent_reference_change()
    {
        Page* page = (Page*)System.Runtime.InteropServices.NativeMemory.AlignedAlloc((nuint)sizeof(Page), 64);
        try
        {
            *page = new Page { MapCount = 0, RefCount = 1 };
            const int N = 200_000;
            var start = new Barrier(2);
            var dup = new Thread(() => { start.SignalAndWait(); for (int i = 0; i < N; i++) page->IncMapcountAndGet(); });
            var gets = new Thread(() => { start.SignalAndWait(); for (int i = 0; i < N; i++) { Interlocked.Increment(ref page->RefCount); Interlocked.Decrement(ref page->RefCount); Interlocked.Increment(ref page->RefCount); } });
            dup.Start(); gets.Start();
            dup.Join(); gets.Join();
            Assert.That((page->MapCount, page->RefCount), Is.EqualTo((N, 1 + 2 * N)));
        }
        finally
        {
            System.Runtime.InteropServices.NativeMemory.AlignedFree(page);
        }
    }
}
