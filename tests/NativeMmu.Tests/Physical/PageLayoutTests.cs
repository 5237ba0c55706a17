using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Physical;

/// <summary>struct page as include/linux/mm_types.h lays it out on x86-64 (REFERENCE §4.1, §4.2).</summary>
public class PageLayoutTests
{
    [Test]
    public unsafe void Struct_page_is_64_bytes()
    {
        Assert.Multiple(() =>
        {
            Assert.That(sizeof(Page), Is.EqualTo(64));
            Assert.That(Unsafe.SizeOf<Page>(), Is.EqualTo(64));
            Assert.That(Marshal.SizeOf<Page>(), Is.EqualTo(64));
            Assert.That(Page.Size, Is.EqualTo(64));
        });
    }

    [TestCase(nameof(Page.Flags), 0, TestName = "flags is at offset 0")]
    [TestCase(nameof(Page.LruNext), 8, TestName = "lru.next is at offset 8")]
    [TestCase(nameof(Page.CompoundHead), 8, TestName = "compound_head is at offset 8")]
    [TestCase(nameof(Page.LruPrev), 16, TestName = "lru.prev is at offset 16")]
    [TestCase(nameof(Page.PmdHugePte), 16, TestName = "ptdesc pmd_huge_pte is at offset 16")]
    [TestCase(nameof(Page.Mapping), 24, TestName = "mapping is at offset 24")]
    [TestCase(nameof(Page.Index), 32, TestName = "index is at offset 32")]
    [TestCase(nameof(Page.PtMm), 32, TestName = "ptdesc pt_mm is at offset 32")]
    [TestCase(nameof(Page.Private), 40, TestName = "private is at offset 40")]
    [TestCase(nameof(Page.Ptl), 40, TestName = "ptdesc ptl is at offset 40")]
    [TestCase(nameof(Page.MapCount), 48, TestName = "_mapcount is at offset 48")]
    [TestCase(nameof(Page.PageType), 48, TestName = "page_type is at offset 48")]
    [TestCase(nameof(Page.RefCount), 52, TestName = "_refcount is at offset 52")]
    [TestCase(nameof(Page.MemcgData), 56, TestName = "memcg_data is at offset 56")]
    public void A_field_of_struct_page_sits_at_the_kernels_offset(string field, int offset)
    {
        Assert.That((int)Marshal.OffsetOf<Page>(field), Is.EqualTo(offset), $"offsetof(struct page, {field})");
    }

    [Test]
    public void The_offsets_hold_for_the_fields_in_memory_too()
    {
        // Unsafe.ByteOffset checks the layout the JIT actually uses, not only the marshalling view.
        var page = new Page();
        ref byte b = ref Unsafe.As<Page, byte>(ref page);
        int[] actual =
        [
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.Flags)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.CompoundHead)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.LruPrev)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.Mapping)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.Index)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.Private)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<int, byte>(ref page.MapCount)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<int, byte>(ref page.RefCount)),
            (int)Unsafe.ByteOffset(ref b, ref Unsafe.As<ulong, byte>(ref page.MemcgData)),
        ];
        Assert.That(actual, Is.EqualTo(new[] { 0, 8, 16, 24, 32, 40, 48, 52, 56 }),
            "flags, compound_head, lru.prev, mapping, index, private, _mapcount, _refcount, memcg_data");
    }

    [Test]
    public void Mapcount_and_page_type_are_one_word()
    {
        // A page type lives in the top byte of the word that is _mapcount for mapped pages: an untyped
        // page has page_type == UINT_MAX exactly when _mapcount == -1.
        var page = new Page { MapCount = -1 };
        Assert.That(page.PageType, Is.EqualTo(PageTypes.NoType));
        page.PageType = PageTypes.Buddy << 24;
        Assert.That(page.MapCount, Is.Negative, "a typed page reads as a negative mapcount");
    }

    [Test]
    public void The_large_folio_fields_of_page_1_overlay_page_1s_own_words()
    {
        // folio->_flags_1, _head_1, _mapcount_1 and _refcount_1 must be page[1]'s flags, compound_head,
        // _mapcount and _refcount, and _nr_pages page[1]'s memcg_data.
        int page1 = Page.Size;
        Assert.Multiple(() =>
        {
            Assert.That(page1 + (int)Marshal.OffsetOf<Page>(nameof(Page.Flags)), Is.EqualTo(FolioLayout.Flags1));
            Assert.That(page1 + (int)Marshal.OffsetOf<Page>(nameof(Page.CompoundHead)), Is.EqualTo(FolioLayout.Head1));
            Assert.That(page1 + (int)Marshal.OffsetOf<Page>(nameof(Page.MapCount)), Is.EqualTo(FolioLayout.Mapcount1));
            Assert.That(page1 + (int)Marshal.OffsetOf<Page>(nameof(Page.RefCount)), Is.EqualTo(FolioLayout.Refcount1));
            Assert.That(page1 + (int)Marshal.OffsetOf<Page>(nameof(Page.MemcgData)), Is.EqualTo(FolioLayout.NrPages));
            Assert.That(2 * Page.Size + (int)Marshal.OffsetOf<Page>(nameof(Page.LruPrev)), Is.EqualTo(FolioLayout.DeferredList));
        });
    }

    [Test]
    public unsafe void The_folio_fields_span_the_first_three_struct_pages()
    {
        Assert.Multiple(() =>
        {
            Assert.That(sizeof(LargeFolio), Is.EqualTo(3 * 64));
            Assert.That(Marshal.SizeOf<LargeFolio>(), Is.EqualTo(3 * 64));
        });
    }

    [TestCase(nameof(LargeFolio.Head), 0, TestName = "the folio's head page is at offset 0")]
    [TestCase(nameof(LargeFolio.Page1), 64, TestName = "__page_1 is at offset 64")]
    [TestCase(nameof(LargeFolio.Page2), 128, TestName = "__page_2 is at offset 128")]
    [TestCase(nameof(LargeFolio.Flags1), 64, TestName = "_flags_1 is at offset 64")]
    [TestCase(nameof(LargeFolio.Head1), 72, TestName = "_head_1 is at offset 72")]
    [TestCase(nameof(LargeFolio.LargeMapcount), 80, TestName = "_large_mapcount is at offset 80")]
    [TestCase(nameof(LargeFolio.NrPagesMapped), 84, TestName = "_nr_pages_mapped is at offset 84")]
    [TestCase(nameof(LargeFolio.EntireMapcount), 88, TestName = "_entire_mapcount is at offset 88")]
    [TestCase(nameof(LargeFolio.Pincount), 92, TestName = "_pincount is at offset 92")]
    [TestCase(nameof(LargeFolio.MmIdMapcount), 96, TestName = "_mm_id_mapcount is at offset 96")]
    [TestCase(nameof(LargeFolio.MmIds), 104, TestName = "_mm_ids is at offset 104")]
    [TestCase(nameof(LargeFolio.Mapcount1), 112, TestName = "_mapcount_1 is at offset 112")]
    [TestCase(nameof(LargeFolio.Refcount1), 116, TestName = "_refcount_1 is at offset 116")]
    [TestCase(nameof(LargeFolio.NrPages), 120, TestName = "_nr_pages is at offset 120")]
    [TestCase(nameof(LargeFolio.Flags2), 128, TestName = "_flags_2 is at offset 128")]
    [TestCase(nameof(LargeFolio.Head2), 136, TestName = "_head_2 is at offset 136")]
    [TestCase(nameof(LargeFolio.DeferredListNext), 144, TestName = "_deferred_list.next is at offset 144")]
    [TestCase(nameof(LargeFolio.DeferredListPrev), 152, TestName = "_deferred_list.prev is at offset 152")]
    public void A_field_of_struct_folio_sits_at_the_kernels_offset(string field, int offset)
    {
        Assert.That((int)Marshal.OffsetOf<LargeFolio>(field), Is.EqualTo(offset), $"offsetof(struct folio, {field})");
    }

    [Test]
    public unsafe void The_folio_offsets_hold_in_memory_too()
    {
        LargeFolio f = default;
        byte* b = (byte*)&f;
        int[] actual =
        [
            (int)((byte*)&f.Flags1 - b),
            (int)((byte*)&f.Head1 - b),
            (int)((byte*)&f.LargeMapcount - b),
            (int)((byte*)&f.NrPagesMapped - b),
            (int)((byte*)&f.EntireMapcount - b),
            (int)((byte*)&f.Pincount - b),
            (int)((byte*)f.MmIdMapcount - b),
            (int)((byte*)&f.MmIds - b),
            (int)((byte*)&f.Mapcount1 - b),
            (int)((byte*)&f.Refcount1 - b),
            (int)((byte*)&f.NrPages - b),
            (int)((byte*)&f.Flags2 - b),
            (int)((byte*)&f.Head2 - b),
            (int)((byte*)&f.DeferredListNext - b),
        ];
        Assert.That(actual, Is.EqualTo(new[] { 64, 72, 80, 84, 88, 92, 96, 104, 112, 116, 120, 128, 136, 144 }),
            "_flags_1, _head_1, _large_mapcount, _nr_pages_mapped, _entire_mapcount, _pincount, _mm_id_mapcount, _mm_ids, _mapcount_1, _refcount_1, _nr_pages, _flags_2, _head_2, _deferred_list");
    }

    [Test]
    public unsafe void The_folio_fields_alias_the_tail_pages_own_words()
    {
        // The folio fields are not extra storage: _flags_1 is page[1].flags, _head_1 its compound_head,
        // _mapcount_1 its _mapcount, and _deferred_list starts in page[2]'s lru.prev.
        LargeFolio f = default;
        f.Page1.Flags = 0x1234;
        f.Page1.CompoundHead = 0xdead1;
        f.Page1.MapCount = -1;
        f.Page2.LruPrev = 0xbeef;
        Assert.Multiple(() =>
        {
            Assert.That(f.Flags1, Is.EqualTo(0x1234UL), "_flags_1 is page[1].flags");
            Assert.That(f.Head1, Is.EqualTo(0xdead1UL), "_head_1 is page[1].compound_head");
            Assert.That(f.Mapcount1, Is.EqualTo(-1), "_mapcount_1 is page[1]._mapcount");
            Assert.That(f.DeferredListNext, Is.EqualTo(0xbeefUL), "_deferred_list.next is page[2].lru.prev");
        });
    }
}
