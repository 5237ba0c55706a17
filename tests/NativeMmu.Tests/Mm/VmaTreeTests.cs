using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

public class VmaTreeTests
{
    private const ulong Page = 0x1000;
    private Kernel _kernel = null!;
    private MmStruct _mm = null!;

    [OneTimeSetUp]
    public void BootKernel()
    {
        _kernel = new Kernel(new KernelConfig { MemoryBytes = 32UL << 20, Cpus = 1 });
        _mm = _kernel.CreateProcess().Mm;
    }

    [OneTimeTearDown]
    public void ShutDownKernel() => _kernel.Dispose();

    private Vma NewVma(ulong startPage, ulong endPage) =>
        new(_mm, startPage * Page, endPage * Page, VmFlags.Read | VmFlags.Write);

    private VmaTree TreeOf(params (ulong Start, ulong End)[] pages)
    {
        var tree = new VmaTree();
        foreach (var (s, e) in pages) tree.Insert(NewVma(s, e));
        tree.Validate();
        return tree;
    }

    private static List<Vma> ToList(VmaTree tree)
    {
        var list = new List<Vma>();
        foreach (var v in tree) list.Add(v);
        return list;
    }

    [Test]
    public void An_empty_tree_has_no_vmas_and_every_lookup_misses()
    {
        var tree = new VmaTree();
        tree.Validate();
        Assert.Multiple(() =>
        {
            Assert.That(tree.Count, Is.Zero);
            Assert.That(tree.First, Is.Null);
            Assert.That(tree.Last, Is.Null);
            Assert.That(tree.FindVma(0), Is.Null);
            Assert.That(tree.FindVmaPrev(0, out var prev), Is.Null);
            Assert.That(prev, Is.Null);
            Assert.That(tree.FindVmaIntersection(0, ulong.MaxValue), Is.Null);
            Assert.That(tree.VmaLookup(0x1234), Is.Null);
            Assert.That(ToList(tree), Is.Empty);
        });
    }

    [Test]
    public void Insert_links_vmas_in_address_order_whatever_the_insertion_order()
    {
        var tree = TreeOf((50, 60), (10, 20), (30, 40), (0, 5), (70, 80));
        var list = ToList(tree);
        Assert.Multiple(() =>
        {
            Assert.That(tree.Count, Is.EqualTo(5));
            Assert.That(list.Select(v => v.VmStart / Page), Is.EqualTo(new ulong[] { 0, 10, 30, 50, 70 }));
            Assert.That(tree.First, Is.SameAs(list[0]));
            Assert.That(tree.Last, Is.SameAs(list[^1]));
            Assert.That(list[0].Prev, Is.Null);
            Assert.That(list[2].Prev, Is.SameAs(list[1]));
            Assert.That(list[2].Next, Is.SameAs(list[3]));
            Assert.That(list[^1].Next, Is.Null);
        });
    }

    [Test]
    public void Insert_accepts_vmas_that_touch_their_neighbours()
    {
        var tree = TreeOf((10, 20), (30, 40));
        tree.Insert(NewVma(20, 30));
        tree.Validate();
        Assert.That(ToList(tree).Select(v => v.VmStart / Page), Is.EqualTo(new ulong[] { 10, 20, 30 }));
    }

    [TestCase(15ul, 25ul)]
    [TestCase(5ul, 11ul)]
    [TestCase(19ul, 31ul)]
    [TestCase(12ul, 18ul)]
    [TestCase(0ul, 100ul)]
    [TestCase(10ul, 20ul)]
    public void Insert_throws_naming_both_ranges_when_the_vma_overlaps_an_existing_one(ulong start, ulong end)
    {
        var tree = TreeOf((10, 20), (30, 40));
        var vma = NewVma(start, end);
        var ex = Assert.Throws<InvalidOperationException>(() => tree.Insert(vma));
        Assert.That(ex!.Message, Does.Contain($"{vma.VmStart:x12}-{vma.VmEnd:x12}"));
        Assert.That(ex.Message, Does.Contain("00000000a000-000000014000").Or.Contain("00000001e000-000000028000"));
        tree.Validate();
        Assert.That(tree.Count, Is.EqualTo(2));
        Assert.That(vma.Prev, Is.Null);
        Assert.That(vma.Next, Is.Null);
    }

    [Test]
    public void Insert_rejects_an_empty_or_inverted_vma()
    {
        var tree = new VmaTree();
        Assert.Throws<ArgumentException>(() => tree.Insert(NewVma(10, 10)));
        Assert.Throws<ArgumentException>(() => tree.Insert(new Vma(_mm, 0x5000, 0x4000, VmFlags.Read)));
        tree.Validate();
    }

    [Test]
    public void Insert_rejects_a_vma_that_is_already_linked()
    {
        var tree = TreeOf((10, 20), (30, 40));
        var other = new VmaTree();
        var first = tree.First!;
        Assert.Throws<InvalidOperationException>(() => other.Insert(first));
        Assert.Throws<InvalidOperationException>(() => tree.Insert(first));
        tree.Validate();
        other.Validate();
    }

    [Test]
    public void FindVma_returns_the_first_vma_ending_above_the_address()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        var list = ToList(tree);
        Assert.Multiple(() =>
        {
            Assert.That(tree.FindVma(0), Is.SameAs(list[0]), "below everything");
            Assert.That(tree.FindVma(10 * Page), Is.SameAs(list[0]), "at a start");
            Assert.That(tree.FindVma(20 * Page - 1), Is.SameAs(list[0]), "last byte");
            Assert.That(tree.FindVma(20 * Page), Is.SameAs(list[1]), "at an end, in a gap");
            Assert.That(tree.FindVma(35 * Page), Is.SameAs(list[1]), "inside");
            Assert.That(tree.FindVma(45 * Page), Is.SameAs(list[2]), "in a gap");
            Assert.That(tree.FindVma(60 * Page), Is.Null, "at the last end");
            Assert.That(tree.FindVma(ulong.MaxValue), Is.Null, "top of the address space");
        });
    }

    [Test]
    public void FindVmaPrev_also_returns_the_vma_before_the_result_or_the_last_vma_when_there_is_none()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        var list = ToList(tree);
        Assert.Multiple(() =>
        {
            Assert.That(tree.FindVmaPrev(5 * Page, out var p0), Is.SameAs(list[0]));
            Assert.That(p0, Is.Null);
            Assert.That(tree.FindVmaPrev(25 * Page, out var p1), Is.SameAs(list[1]));
            Assert.That(p1, Is.SameAs(list[0]));
            Assert.That(tree.FindVmaPrev(55 * Page, out var p2), Is.SameAs(list[2]));
            Assert.That(p2, Is.SameAs(list[1]));
            Assert.That(tree.FindVmaPrev(70 * Page, out var p3), Is.Null);
            Assert.That(p3, Is.SameAs(list[2]));
        });
    }

    [Test]
    public void FindVmaIntersection_returns_the_first_vma_overlapping_the_range()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        var list = ToList(tree);
        Assert.Multiple(() =>
        {
            Assert.That(tree.FindVmaIntersection(0, 10 * Page), Is.Null, "ends where a vma starts");
            Assert.That(tree.FindVmaIntersection(0, 10 * Page + 1), Is.SameAs(list[0]));
            Assert.That(tree.FindVmaIntersection(20 * Page, 30 * Page), Is.Null, "exactly a gap");
            Assert.That(tree.FindVmaIntersection(15 * Page, 55 * Page), Is.SameAs(list[0]), "the first of several");
            Assert.That(tree.FindVmaIntersection(25 * Page, 100 * Page), Is.SameAs(list[1]));
            Assert.That(tree.FindVmaIntersection(32 * Page, 33 * Page), Is.SameAs(list[1]), "inside one");
            Assert.That(tree.FindVmaIntersection(60 * Page, ulong.MaxValue), Is.Null);
            Assert.That(tree.FindVmaIntersection(35 * Page, 35 * Page), Is.Null, "empty range");
            Assert.That(tree.FindVmaIntersection(35 * Page, 5 * Page), Is.Null, "inverted range");
        });
    }

    [Test]
    public void VmaLookup_returns_only_the_vma_containing_the_address()
    {
        var tree = TreeOf((10, 20), (20, 30), (50, 60));
        var list = ToList(tree);
        Assert.Multiple(() =>
        {
            Assert.That(tree.VmaLookup(10 * Page - 1), Is.Null);
            Assert.That(tree.VmaLookup(10 * Page), Is.SameAs(list[0]));
            Assert.That(tree.VmaLookup(20 * Page - 1), Is.SameAs(list[0]));
            Assert.That(tree.VmaLookup(20 * Page), Is.SameAs(list[1]));
            Assert.That(tree.VmaLookup(30 * Page), Is.Null);
            Assert.That(tree.VmaLookup(59 * Page + 0xfff), Is.SameAs(list[2]));
            Assert.That(tree.VmaLookup(60 * Page), Is.Null);
        });
    }

    [Test]
    public void Remove_unlinks_the_vma_from_tree_and_list_and_clears_its_links()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60), (70, 80), (90, 100));
        var list = ToList(tree);
        var middle = list[2];
        tree.Remove(middle);
        tree.Validate();
        Assert.Multiple(() =>
        {
            Assert.That(tree.Count, Is.EqualTo(4));
            Assert.That(ToList(tree), Is.EqualTo(new[] { list[0], list[1], list[3], list[4] }));
            Assert.That(list[1].Next, Is.SameAs(list[3]));
            Assert.That(list[3].Prev, Is.SameAs(list[1]));
            Assert.That(tree.VmaLookup(55 * Page), Is.Null);
            Assert.That(middle.Prev, Is.Null);
            Assert.That(middle.Next, Is.Null);
            Assert.That(middle.TreeLeft, Is.Null);
            Assert.That(middle.TreeRight, Is.Null);
            Assert.That(middle.TreeParent, Is.Null);
            Assert.That(middle.TreeHeight, Is.Zero);
        });

        tree.Remove(list[0]);
        tree.Remove(list[4]);
        tree.Validate();
        Assert.That(tree.First, Is.SameAs(list[1]));
        Assert.That(tree.Last, Is.SameAs(list[3]));

        tree.Insert(middle);
        tree.Validate();
        Assert.That(tree.VmaLookup(55 * Page), Is.SameAs(middle));
    }

    [Test]
    public void Remove_of_the_only_vma_leaves_an_empty_tree()
    {
        var tree = TreeOf((10, 20));
        tree.Remove(tree.First!);
        tree.Validate();
        Assert.That(tree.Count, Is.Zero);
        Assert.That(tree.First, Is.Null);
        Assert.That(tree.Last, Is.Null);
    }

    [Test]
    public void Remove_throws_for_a_vma_that_is_not_in_this_tree()
    {
        var tree = TreeOf((10, 20), (30, 40));
        var other = TreeOf((50, 60), (70, 80));
        Assert.Throws<InvalidOperationException>(() => tree.Remove(NewVma(10, 20)));
        Assert.Throws<InvalidOperationException>(() => tree.Remove(other.First!));
        tree.Validate();
        other.Validate();
    }

    [Test]
    public void Enumeration_survives_removing_the_current_vma()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60), (70, 80));
        int visited = 0;
        foreach (var v in tree)
        {
            visited++;
            if (v.VmStart / Page is 10 or 50) tree.Remove(v);
        }
        tree.Validate();
        Assert.That(visited, Is.EqualTo(4));
        Assert.That(ToList(tree).Select(v => v.VmStart / Page), Is.EqualTo(new ulong[] { 30, 70 }));
    }

    [Test]
    public void Clear_empties_the_tree_and_leaves_every_vma_reinsertable()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        var list = ToList(tree);
        tree.Clear();
        tree.Validate();
        Assert.That(tree.Count, Is.Zero);
        Assert.That(tree.First, Is.Null);
        Assert.That(tree.FindVma(0), Is.Null);

        var again = new VmaTree();
        foreach (var v in list) again.Insert(v);
        again.Validate();
        Assert.That(ToList(again), Is.EqualTo(list));
    }

    [Test]
    public void Bounds_changed_in_place_without_reordering_keep_the_tree_valid()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        var list = ToList(tree);
        // A split shrinks one VMA and inserts the tail; a merge grows a neighbour into the gap.
        list[1].VmEnd = 35 * Page;
        tree.Insert(NewVma(35, 40));
        list[0].VmEnd = 30 * Page;
        list[2].VmStart = 45 * Page;
        tree.Validate();
        Assert.Multiple(() =>
        {
            Assert.That(tree.VmaLookup(25 * Page), Is.SameAs(list[0]));
            Assert.That(tree.VmaLookup(37 * Page)!.VmStart, Is.EqualTo(35 * Page));
            Assert.That(tree.FindVma(40 * Page), Is.SameAs(list[2]));
        });
    }

    [Test]
    public void Validate_reports_bounds_changed_in_place_that_break_the_ordering()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        ToList(tree)[0].VmEnd = 35 * Page;
        var ex = Assert.Throws<InvalidOperationException>(tree.Validate);
        Assert.That(ex!.Message, Does.Contain("overlap"));
    }

    [Test]
    public void Validate_reports_a_wrong_stored_height()
    {
        var tree = TreeOf((10, 20), (30, 40), (50, 60));
        tree.First!.TreeHeight = 7;
        var ex = Assert.Throws<InvalidOperationException>(tree.Validate);
        Assert.That(ex!.Message, Does.Contain("height"));
    }

    [Test]
    public void Validate_reports_an_unbalanced_tree()
    {
        var tree = TreeOf((10, 20));
        // Hang a chain of two off the root by hand: heights are consistent but the balance is not.
        var root = tree.First!;
        var a = NewVma(30, 40);
        var b = NewVma(50, 60);
        root.TreeRight = a; a.TreeParent = root; a.TreeRight = b; b.TreeParent = a;
        b.TreeHeight = 1; a.TreeHeight = 2; root.TreeHeight = 3;
        root.Next = a; a.Prev = root; a.Next = b; b.Prev = a;
        var ex = Assert.Throws<InvalidOperationException>(tree.Validate);
        Assert.That(ex!.Message, Does.Contain("balance").Or.Contain("Count"));
    }

    [Test]
    public void Ascending_and_descending_inserts_keep_the_tree_logarithmically_shallow()
    {
        foreach (bool ascending in new[] { true, false })
        {
            var tree = new VmaTree();
            const int n = 4096;
            for (int i = 0; i < n; i++)
            {
                ulong p = ascending ? (ulong)i * 2 : (ulong)(n - i) * 2;
                tree.Insert(NewVma(p, p + 1));
            }
            tree.Validate();
            var root = tree.First!;
            while (root.TreeParent != null) root = root.TreeParent;
            // AVL height bound: h < 1.4405 log2(n + 2).
            Assert.That(root.TreeHeight, Is.LessThan(1.4405 * Math.Log2(n + 2)));
        }
    }

    [Test]
    public void Lookups_and_iteration_do_not_allocate()
    {
        var tree = new VmaTree();
        for (ulong i = 0; i < 256; i++) tree.Insert(NewVma(i * 4, i * 4 + 3));

        ulong sink = 0;
        void Run()
        {
            for (ulong a = 0; a < 1024 * Page; a += 0x800)
            {
                sink += tree.FindVma(a)?.VmStart ?? 0;
                sink += tree.FindVmaPrev(a, out var prev)?.VmEnd ?? 0;
                sink += prev?.VmStart ?? 0;
                sink += tree.FindVmaIntersection(a, a + Page)?.VmStart ?? 0;
                sink += tree.VmaLookup(a)?.VmEnd ?? 0;
            }
            foreach (var v in tree) sink += v.VmStart;
        }

        for (int i = 0; i < 50; i++) Run();
        long before = GC.GetAllocatedBytesForCurrentThread();
        Run();
        long after = GC.GetAllocatedBytesForCurrentThread();
        Assert.That(after - before, Is.Zero);
        Assert.That(sink, Is.Not.Zero);
    }

    [Test]
    public void Randomized_operations_agree_with_a_sorted_list_model()
    {
        var rng = new Random(1234);
        var tree = new VmaTree();
        var model = new List<Vma>(); // sorted by VmStart
        const ulong spacePages = 16384;
        int maxCount = 0;

        int ModelIndexOfFirstEndingAbove(ulong addr)
        {
            for (int i = 0; i < model.Count; i++)
                if (model[i].VmEnd > addr) return i;
            return -1;
        }

        for (int step = 0; step < 20000; step++)
        {
            // Alternating growth and shrink phases take the tree through deep shapes and back to small ones,
            // so rebalancing on removal has to climb several levels.
            bool growing = step / 5000 % 2 == 0;
            int op = rng.Next(100);
            if (op < (growing ? 55 : 20) || model.Count == 0)
            {
                ulong start = (ulong)rng.NextInt64(0, (long)spacePages);
                ulong len = (ulong)rng.NextInt64(1, 24);
                var vma = NewVma(start, start + len);
                bool overlaps = model.Exists(m => m.VmStart < vma.VmEnd && vma.VmStart < m.VmEnd);
                if (overlaps)
                {
                    Assert.Throws<InvalidOperationException>(() => tree.Insert(vma));
                }
                else
                {
                    tree.Insert(vma);
                    int at = model.FindIndex(m => m.VmStart > vma.VmStart);
                    model.Insert(at < 0 ? model.Count : at, vma);
                }
            }
            else if (op < 75)
            {
                int i = rng.Next(model.Count);
                tree.Remove(model[i]);
                model.RemoveAt(i);
            }
            else if (op < 80)
            {
                MoveBoundsInPlace(model, rng, (spacePages + 24) * Page);
            }
            else
            {
                ulong addr = (ulong)rng.NextInt64(0, (long)((spacePages + 32) * Page));
                ulong end = addr + (ulong)rng.NextInt64(0, (long)(64 * Page));

                int idx = ModelIndexOfFirstEndingAbove(addr);
                Vma? expected = idx < 0 ? null : model[idx];
                Vma? expectedPrev = idx < 0 ? (model.Count > 0 ? model[^1] : null) : (idx > 0 ? model[idx - 1] : null);
                Vma? expectedContaining = expected != null && expected.VmStart <= addr ? expected : null;
                Vma? expectedIntersection = expected != null && addr < end && expected.VmStart < end ? expected : null;

                Assert.That(tree.FindVma(addr), Is.SameAs(expected), $"find_vma({addr:x}) at step {step}");
                Assert.That(tree.FindVmaPrev(addr, out var prev), Is.SameAs(expected), $"find_vma_prev({addr:x}) at step {step}");
                Assert.That(prev, Is.SameAs(expectedPrev), $"find_vma_prev({addr:x}) prev at step {step}");
                Assert.That(tree.VmaLookup(addr), Is.SameAs(expectedContaining), $"vma_lookup({addr:x}) at step {step}");
                Assert.That(tree.FindVmaIntersection(addr, end), Is.SameAs(expectedIntersection),
                    $"find_vma_intersection({addr:x}, {end:x}) at step {step}");
            }

            Assert.That(tree.Count, Is.EqualTo(model.Count));
            maxCount = Math.Max(maxCount, model.Count);
            if (step % 97 == 0)
            {
                tree.Validate();
                Assert.That(ToList(tree), Is.EqualTo(model), $"iteration order at step {step}");
            }
        }

        Assert.That(maxCount, Is.GreaterThan(400), "the run never grew a deep tree");
        tree.Validate();
        Assert.That(ToList(tree), Is.EqualTo(model));
        while (model.Count > 0)
        {
            int i = rng.Next(model.Count);
            tree.Remove(model[i]);
            model.RemoveAt(i);
            if (model.Count % 16 == 0) tree.Validate();
        }
        tree.Validate();
        Assert.That(tree.Count, Is.Zero);
    }

    /// <summary>unmapped_area_topdown as the walk down the list from high: the reference the gap search must match.</summary>
    private static bool LinearGapTopdown(List<Vma> sorted, ulong low, ulong high, ulong len, out ulong start)
    {
        start = 0;
        if (high < low + len) return false;
        int i = sorted.FindIndex(v => v.VmEnd > high - 1);
        Vma? next = i >= 0 ? sorted[i] : null;
        int p = i >= 0 ? i - 1 : sorted.Count - 1;
        ulong gapEnd = next is not null ? Math.Min(high, next.VmStart) : high;
        while (true)
        {
            ulong gapStart = Math.Max(p >= 0 ? sorted[p].VmEnd : low, low);
            if (gapEnd >= gapStart && gapEnd - gapStart >= len)
            {
                start = gapEnd - len;
                return true;
            }
            if (p < 0 || sorted[p].VmStart <= low) return false;
            gapEnd = sorted[p].VmStart;
            p--;
        }
    }

    [Test]
    public void The_topdown_gap_search_finds_what_a_walk_down_the_list_finds_through_inserts_removes_and_bound_changes()
    {
        var rng = new Random(4321);
        var tree = new VmaTree();
        var model = new List<Vma>();
        const ulong spacePages = 4096;
        int found = 0, missed = 0;
        for (int step = 0; step < 6000; step++)
        {
            int op = rng.Next(100);
            if (op < 45 || model.Count == 0)
            {
                ulong start = (ulong)rng.NextInt64(1, (long)spacePages);
                ulong len = (ulong)rng.NextInt64(1, 8);
                var vma = NewVma(start, start + len);
                if (!model.Exists(m => m.VmStart < vma.VmEnd && vma.VmStart < m.VmEnd))
                {
                    tree.Insert(vma);
                    int at = model.FindIndex(m => m.VmStart > vma.VmStart);
                    model.Insert(at < 0 ? model.Count : at, vma);
                }
            }
            else if (op < 70)
            {
                int i = rng.Next(model.Count);
                tree.Remove(model[i]);
                model.RemoveAt(i);
            }
            else if (op < 80)
            {
                MoveBoundsInPlace(model, rng, (spacePages + 8) * Page);
            }
            for (int q = 0; q < 4; q++)
            {
                ulong low = (ulong)rng.NextInt64(0, (long)spacePages) * Page;
                ulong high = low + (ulong)rng.NextInt64(0, (long)spacePages) * Page;
                ulong len = (ulong)rng.NextInt64(1, 48) * Page;
                bool expected = LinearGapTopdown(model, low, high, len, out ulong expectedStart);
                Assert.That(tree.FindGapTopdown(low, high, len, out ulong start), Is.EqualTo(expected), $"gap of {len:x} in [{low:x}, {high:x}) at step {step}");
                if (expected) Assert.That(start, Is.EqualTo(expectedStart), $"gap of {len:x} in [{low:x}, {high:x}) at step {step}");
                if (expected) found++; else missed++;
            }
            if (step % 53 == 0) tree.Validate();
        }
        Assert.That(found, Is.GreaterThan(1000));
        Assert.That(missed, Is.GreaterThan(200), "the searches nearly always succeeded");
        tree.Validate();
    }

    /// <summary>
    /// Split, merge, expand and shrink move a linked VMA's bounds in place: a random VMA of the sorted model
    /// gets new bounds that keep it between its neighbours (and below <paramref name="top"/>).
    /// </summary>
    private static void MoveBoundsInPlace(List<Vma> model, Random rng, ulong top)
    {
        int i = rng.Next(model.Count);
        var v = model[i];
        ulong lo = i > 0 ? model[i - 1].VmEnd : 0;
        ulong hi = i + 1 < model.Count ? model[i + 1].VmStart : top;
        ulong newStart = (ulong)rng.NextInt64((long)(lo / Page), (long)(v.VmEnd / Page)) * Page;
        ulong newEnd = (ulong)rng.NextInt64((long)(newStart / Page) + 1, (long)(hi / Page) + 1) * Page;
        v.VmStart = newStart;
        v.VmEnd = newEnd;
    }
}
