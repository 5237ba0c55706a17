using NativeMmu.Arch.X86;
using NativeMmu.Physical;
using NativeMmu.Cpus;
using NativeMmu.Sync;

namespace NativeMmu.Tests.Physical;

/// <summary>The buddy allocator with per-CPU lists (mm/page_alloc.c).</summary>
public unsafe class FrameAllocatorTests
{
    private Kernel _kernel = null!;
    private FrameAllocator _alloc = null!;
    private Vmemmap _vmemmap = null!;

    [SetUp]
    public void BootKernel()
    {
        _kernel = TestSupport.Boot(cpus: 2);
        _alloc = _kernel.Machine.Allocator;
        _vmemmap = _kernel.Machine.Vmemmap;
    }

    [TearDown]
    public void ShutDown() => _kernel.Dispose();

    /// <summary>Takes every free frame, largest blocks first; returns (pfn, order) of each block.</summary>
    private List<(ulong Pfn, int Order)> Exhaust()
    {
        var blocks = new List<(ulong, int)>();
        for (int order = FrameAllocator.MaxOrder; order >= 0; order--)
        {
            while (true)
            {
                ulong pfn = _alloc.AllocPages(0, order, Gfp.None);
                if (pfn == 0) break;
                blocks.Add((pfn, order));
            }
        }
        return blocks;
    }

    private void FreeAll(IEnumerable<(ulong Pfn, int Order)> blocks)
    {
        foreach (var (pfn, order) in blocks) _alloc.FreePages(0, pfn, order);
    }

    [Test]
    public void Alloc_and_free_of_every_order_returns_the_frames()
    {
        long free0 = _alloc.FreeFrames;
        for (int order = 0; order <= FrameAllocator.MaxOrder; order++)
        {
            ulong pfn = _alloc.AllocPages(0, order, Gfp.None);
            Assert.That(pfn, Is.Not.Zero, $"an order-{order} block is available in a fresh 32 MiB machine");
            Assert.That(pfn & ((1UL << order) - 1), Is.Zero, $"an order-{order} block is naturally aligned");
            Assert.That(pfn, Is.GreaterThanOrEqualTo(_alloc.ZoneStartPfn), "never a boot-time reservation");
            Assert.That(_alloc.FreeFrames, Is.EqualTo(free0 - (1L << order)), $"order {order} takes 2^{order} frames");
            _alloc.FreePages(0, pfn, order);
            Assert.That(_alloc.FreeFrames, Is.EqualTo(free0), $"freeing the order-{order} block gives its frames back");
        }
    }

    [Test]
    public void A_fresh_machine_has_every_managed_frame_free()
    {
        Assert.That(_alloc.FreeFrames, Is.EqualTo((long)_alloc.ManagedPages));
        Assert.That(_alloc.ManagedPages + _kernel.Machine.ReservedFrames, Is.EqualTo(_kernel.Machine.Memory.Frames));
    }

    [Test]
    public void An_allocated_page_has_one_reference_no_mappings_and_no_type()
    {
        ulong pfn = _alloc.AllocPages(0, 0, Gfp.None);
        Page* p = _vmemmap.PfnToPage(pfn);
        Assert.Multiple(() =>
        {
            Assert.That(p->RefCount, Is.EqualTo(1));
            Assert.That(p->MapCount, Is.EqualTo(-1));
            Assert.That(p->PageType, Is.EqualTo(PageTypes.NoType));
            Assert.That(p->Mapping, Is.Zero);
            Assert.That(p->Flags & PG.CheckAtPrep, Is.Zero);
        });
        _alloc.FreePages(0, pfn, 0);
    }

    [Test]
    public void A_free_block_on_the_buddy_lists_is_typed_buddy_with_its_order_in_private()
    {
        ulong pfn = _alloc.AllocPages(0, 4, Gfp.None);
        _alloc.FreePages(0, pfn, 4);
        // The block merged back with its buddies: find the free block that now contains pfn.
        bool found = false;
        for (int order = 4; order <= FrameAllocator.MaxOrder && !found; order++)
        {
            Page* head = _vmemmap.PfnToPage(pfn & ~((1UL << order) - 1));
            if (head->PageType == PageTypes.Buddy << 24 && (int)head->Private == order) found = true;
        }
        Assert.That(found, Is.True, "the freed block is the head, or inside, a PageBuddy block of its order or larger");
        Assert.That(_vmemmap.PfnToPage(pfn)->RefCount, Is.Zero);
    }

    [Test]
    public void Buddy_split_then_merge_restores_the_largest_blocks()
    {
        long free0 = _alloc.FreeFrames;
        List<(ulong Pfn, int Order)> all = Exhaust();
        Assert.That(_alloc.FreeFrames, Is.Zero, "everything is allocated");
        Assert.That(all.Sum(b => 1L << b.Order), Is.EqualTo(free0));
        int maxBlocks = all.Count(b => b.Order == FrameAllocator.MaxOrder);
        Assume.That(maxBlocks, Is.GreaterThanOrEqualTo(1), "a 32 MiB machine has whole order-10 blocks");

        // Give back one order-10 block: the only free memory. An order-3 request must split it...
        (ulong big, _) = all.First(b => b.Order == FrameAllocator.MaxOrder);
        all.Remove((big, FrameAllocator.MaxOrder));
        _alloc.FreePages(0, big, FrameAllocator.MaxOrder);
        ulong small = _alloc.AllocPages(0, 3, Gfp.None);
        Assert.That(small, Is.InRange(big, big + 1024 - 8), "the order-3 block is carved out of the only free block");
        Assert.That(_alloc.AllocPages(0, FrameAllocator.MaxOrder, Gfp.None), Is.Zero, "no order-10 block is left after the split");

        // ...and freeing it must merge all the way back up.
        _alloc.FreePages(0, small, 3);
        ulong again = _alloc.AllocPages(0, FrameAllocator.MaxOrder, Gfp.None);
        Assert.That(again, Is.EqualTo(big), "the halves merged back into the original order-10 block");
        all.Add((again, FrameAllocator.MaxOrder));

        FreeAll(all);
        Assert.That(_alloc.FreeFrames, Is.EqualTo(free0));
        _alloc.DrainPcp(0);
        Assert.That(_alloc.BuddyFreePages, Is.EqualTo(free0), "after draining the per-CPU list every page is on the buddy lists");
        var bigAgain = new List<ulong>();
        for (ulong pfn; (pfn = _alloc.AllocPages(0, FrameAllocator.MaxOrder, Gfp.None)) != 0;) bigAgain.Add(pfn);
        Assert.That(bigAgain, Has.Count.EqualTo(maxBlocks), "every order-10 block was reassembled from its pieces");
        foreach (ulong pfn in bigAgain) _alloc.FreePages(0, pfn, FrameAllocator.MaxOrder);
    }

    [Test]
    public void Exhaustion_returns_zero_and_freeing_everything_leaks_nothing()
    {
        long free0 = _alloc.FreeFrames;
        List<(ulong Pfn, int Order)> all = Exhaust();
        Assert.Multiple(() =>
        {
            for (int order = 0; order <= FrameAllocator.MaxOrder; order++)
                Assert.That(_alloc.AllocPages(0, order, Gfp.None), Is.Zero, $"order {order}: ENOMEM when memory is exhausted");
            Assert.That(_alloc.AllocPages(1, 0, Gfp.None), Is.Zero, "another CPU's list is empty too");
        });
        var frames = new HashSet<ulong>();
        foreach (var (pfn, order) in all)
            for (ulong i = 0; i < (1UL << order); i++)
                Assert.That(frames.Add(pfn + i), Is.True, $"frame {pfn + i:x} was handed out twice");
        Assert.That(frames, Has.Count.EqualTo((int)free0));
        Assert.That(frames.Min(), Is.GreaterThanOrEqualTo(_alloc.ZoneStartPfn), "boot reservations are never handed out");
        Assert.That(frames, Does.Not.Contain(_kernel.Machine.ZeroPfn));

        FreeAll(all);
        Assert.That(_alloc.FreeFrames, Is.EqualTo(free0), "every frame came back");
        foreach (ulong pfn in frames)
        {
            Page* p = _vmemmap.PfnToPage(pfn);
            if (p->RefCount != 0 || p->MapCount is not (-1 or unchecked((int)(PageTypes.Buddy << 24))))
                Assert.Fail($"frame {pfn:x} is not in the free state: refcount {p->RefCount}, mapcount {p->MapCount:x}");
        }
    }

    [Test]
    public void A_double_free_is_a_kernel_bug()
    {
        ulong pfn = _alloc.AllocPages(0, 0, Gfp.None);
        _alloc.FreePages(0, pfn, 0);
        Assert.That(() => _alloc.FreePages(0, pfn, 0), Throws.TypeOf<KernelBugException>());
    }

    [Test]
    public void A_double_free_of_a_high_order_block_is_a_kernel_bug()
    {
        ulong pfn = _alloc.AllocPages(0, 5, Gfp.None);
        _alloc.FreePages(0, pfn, 5);
        Assert.That(() => _alloc.FreePages(0, pfn, 5), Throws.TypeOf<KernelBugException>());
    }

    [Test]
    public void Gfp_zero_returns_cleared_frames()
    {
        ulong pfn = _alloc.AllocPages(0, 0, Gfp.None);
        _kernel.Machine.Memory.Frame(pfn).Fill(0xa5);
        _alloc.FreePages(0, pfn, 0);
        ulong again = _alloc.AllocPages(0, 0, Gfp.Zero);
        Assume.That(again, Is.EqualTo(pfn), "the per-CPU list is LIFO, so the dirty frame comes straight back");
        Assert.That(_kernel.Machine.Memory.Frame(again).IndexOfAnyExcept((byte)0), Is.EqualTo(-1), "__GFP_ZERO clears the frame");
        _alloc.FreePages(0, again, 0);

        ulong block = _alloc.AllocPages(0, 2, Gfp.None);
        for (ulong i = 0; i < 4; i++) _kernel.Machine.Memory.Frame(block + i).Fill(0x5a);
        _alloc.FreePages(0, block, 2);
        ulong zeroed = _alloc.AllocPages(0, 2, Gfp.Zero);
        for (ulong i = 0; i < 4; i++)
            Assert.That(_kernel.Machine.Memory.Frame(zeroed + i).IndexOfAnyExcept((byte)0), Is.EqualTo(-1), $"frame {i} of an order-2 __GFP_ZERO block");
        _alloc.FreePages(0, zeroed, 2);
    }

    /// <summary>A kernel whose pcp lists trim at 8 pages, 4 at a time, so a test sees both ends move.</summary>
    private static Kernel BootSmallPcp()
        => new(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 2, DebugVm = true, PcpHigh = 8, PcpBatch = 4 });

    [Test]
    public void Free_pcppages_bulk_returns_the_pages_freed_first_and_keeps_the_last_freed_for_reuse()
    {
        using Kernel k = BootSmallPcp();
        FrameAllocator a = k.Machine.Allocator;
        var pages = new ulong[8];
        for (int i = 0; i < pages.Length; i++) pages[i] = a.AllocPages(0, 0, Gfp.None);
        a.DrainPcp(0); // the refill's leftovers go, so the list holds only what is freed below
        Assume.That(a.PcpPages(0), Is.Zero);
        long buddy = a.BuddyFreePages;
        foreach (ulong pfn in pages) a.FreePages(0, pfn, 0);
        Assert.That(a.PcpPages(0), Is.EqualTo(4), "the eighth free reached pcp->high and a batch of 4 went back");
        Assert.That(a.BuddyFreePages, Is.EqualTo(buddy + 4));
        // What is left is pages 4..7, so pages 0..3, freed first, were the ones given back (list_last_entry).
        for (int i = 7; i >= 4; i--)
            Assert.That(a.AllocPages(0, 0, Gfp.None), Is.EqualTo(pages[i]), $"page {i} is reused from the head, last freed first");
    }

    [Test]
    public void Rmqueue_bulk_adds_behind_the_freed_pages_so_those_are_reused_first()
    {
        using Kernel k = BootSmallPcp();
        FrameAllocator a = k.Machine.Allocator;
        ulong first = a.AllocPages(0, 0, Gfp.None); // refills the empty list from the buddy lists
        int fromBuddy = a.PcpFromBuddy(0);
        Assert.That(fromBuddy, Is.EqualTo(a.PcpPages(0)), "every page of a refill is a buddy page until handed out");
        Assert.That(a.NextFromBuddy(0), Is.True);
        a.FreePages(0, first, 0);
        Assert.That(a.NextFromBuddy(0), Is.False, "a page freed just now sits at the head, in front of the refill");
        Assert.That(a.AllocPages(0, 0, Gfp.None), Is.EqualTo(first), "list_add puts the freed page first");
        ulong next = a.AllocPages(0, 0, Gfp.None);
        Assert.That(next, Is.GreaterThan(first), "then the refill, in the ascending order the buddy handed it over");
        Assert.That(a.PcpFromBuddy(0), Is.EqualTo(fromBuddy - 1), "each refilled page handed out leaves the count");
    }

    [Test]
    public void A_trim_takes_the_refilled_pages_at_the_tail_first()
    {
        using Kernel k = BootSmallPcp();
        FrameAllocator a = k.Machine.Allocator;
        var held = new ulong[6];
        for (int i = 0; i < held.Length; i++) held[i] = a.AllocPages(0, 0, Gfp.None);
        int tailFromBuddy = a.PcpFromBuddy(0); // 4 - (6 - 4) = 2 of the second refill left at the tail
        Assert.That(tailFromBuddy, Is.EqualTo(a.PcpPages(0)));
        foreach (ulong pfn in held) a.FreePages(0, pfn, 0);
        Assert.That(a.PcpFromBuddy(0), Is.EqualTo(Math.Max(0, tailFromBuddy - 4)), "the trim of 4 went from the tail, where the refill was");
        Assert.That(a.NextFromBuddy(0), Is.False);
    }

    [Test]
    public void Order_zero_frees_stay_on_the_freeing_cpus_list_until_drained()
    {
        long buddy0 = _alloc.BuddyFreePages;
        ulong pfn = _alloc.AllocPages(1, 0, Gfp.None);
        long onList = _alloc.PcpPages(1);
        Assert.That(onList, Is.GreaterThan(0), "the first order-0 allocation refills the CPU's list with a batch");
        Assert.That(_alloc.BuddyFreePages, Is.EqualTo(buddy0 - onList - 1), "nr_free_pages does not count per-CPU pages");
        _alloc.FreePages(1, pfn, 0);
        Assert.That(_alloc.PcpPages(1), Is.EqualTo(onList + 1));
        _alloc.DrainPcp(1);
        Assert.That(_alloc.PcpPages(1), Is.Zero);
        Assert.That(_alloc.BuddyFreePages, Is.EqualTo(buddy0));
    }

    [Test]
    public void A_compound_block_is_built_with_head_and_tails_and_freed_back_to_clean_struct_pages()
    {
        const int order = 3;
        ulong pfn = _alloc.AllocPages(0, order, Gfp.Comp);
        Page* head = _vmemmap.PfnToPage(pfn);
        byte* h = (byte*)head;
        Assert.Multiple(() =>
        {
            Assert.That(head->TestFlag(PG.Head), Is.True, "PG_head on the head page");
            Assert.That(*(ulong*)(h + FolioLayout.Flags1) & 0xff, Is.EqualTo((ulong)order), "the folio order in page[1]'s flags");
            Assert.That(*(ulong*)(h + FolioLayout.NrPages), Is.EqualTo(1UL << order), "folio->_nr_pages");
            for (ulong i = 1; i < (1UL << order); i++)
                Assert.That(_vmemmap.PfnToPage(pfn + i)->CompoundHead, Is.EqualTo(_vmemmap.PageVaddr(pfn) | 1), $"compound_head of tail {i}");
        });

        _alloc.FreePages(0, pfn, order);
        // free_pages_prepare undoes the compound page: no tail may keep folio state in its words, or
        // the next user of the frame inherits it (the kernel clears folio->_nr_pages for this reason).
        Assert.Multiple(() =>
        {
            for (ulong i = 1; i < (1UL << order); i++)
            {
                Page* t = _vmemmap.PfnToPage(pfn + i);
                Assert.That(t->CompoundHead & 1, Is.Zero, $"tail {i} is no longer a tail");
                Assert.That(t->Flags & PG.CheckAtPrep, Is.Zero, $"tail {i} flags");
                Assert.That(t->Mapping, Is.Zero, $"tail {i} mapping");
                Assert.That(t->RefCount, Is.Zero, $"tail {i} refcount");
                Assert.That(t->MemcgData, Is.Zero, $"tail {i} memcg_data (page[1]'s is folio->_nr_pages)");
            }
        });
    }

    [Test]
    public void The_zero_page_is_a_reserved_zero_filled_frame_outside_the_allocator()
    {
        Platform m = _kernel.Machine;
        Page* zero = m.Vmemmap.PfnToPage(m.ZeroPfn);
        Assert.Multiple(() =>
        {
            Assert.That(m.ZeroPfn, Is.Not.Zero);
            Assert.That(m.ZeroPfn, Is.LessThan(_alloc.ZoneStartPfn), "taken at boot, before the buddy allocator");
            Assert.That(zero->TestFlag(PG.Reserved), Is.True, "PG_reserved");
            Assert.That(zero->RefCount, Is.EqualTo(1), "a reserved page holds a reference and is never freed");
            Assert.That(m.Memory.Frame(m.ZeroPfn).IndexOfAnyExcept((byte)0), Is.EqualTo(-1), "empty_zero_page is all zeros");
            Assert.That(m.Vmemmap.PfnToPage(0)->TestFlag(PG.Reserved), Is.True, "PFN 0 is reserved too");
        });
    }
}
