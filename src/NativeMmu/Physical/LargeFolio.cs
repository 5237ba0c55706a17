using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace NativeMmu.Physical;

/// <summary>
/// Offsets from a large folio's head of the folio fields in page[1] and page[2] (struct folio of
/// include/linux/mm_types.h, 6.15+, 64-bit, CONFIG_PAGE_MAPCOUNT and CONFIG_MM_ID). They place the
/// fields of <see cref="LargeFolio"/>, and serve code that computes a field's address.
/// </summary>
public static class FolioLayout
{
    public const int Flags1 = 64;
    public const int Head1 = 72;
    public const int LargeMapcount = 80;
    public const int NrPagesMapped = 84;
    public const int EntireMapcount = 88;
    public const int Pincount = 92;
    public const int MmIdMapcount = 96;
    public const int MmIds = 104;
    public const int Mapcount1 = 112;
    public const int Refcount1 = 116;
    public const int NrPages = 120;
    public const int Flags2 = 128;
    public const int Head2 = 136;
    public const int DeferredList = 144;
}

/// <summary>
/// struct folio over the first three struct pages of a large folio: the head page, then the folio's
/// own fields in the words of page[1] and page[2] that a tail page leaves free. Offsets are from the
/// head, as offsetof(struct folio, ...) gives them; page[3] (hugetlb's fields) is not modelled yet.
/// Reached as <c>(LargeFolio*)head</c>, for a head page of order 1 or more (order 1 has no page[2]).
/// </summary>
/// <remarks>
/// Who writes what: everything is set by prep_compound_page while the folio is still the allocator's.
/// Then <see cref="Flags1"/> is page[1]'s flags word (atomic bit operations only, see <see cref="Page"/>);
/// the mapcounts are atomic counters; <see cref="MmIds"/> carries its own bit spinlock (bit 31) under
/// which the MM-ID slots change; <see cref="DeferredListNext"/>/<see cref="DeferredListPrev"/> belong
/// to the deferred-split queue's lock.
/// </remarks>
[StructLayout(LayoutKind.Explicit, Size = 3 * Page.Size)]
public unsafe struct LargeFolio
{
    /// <summary>The head page itself (folio->page).</summary>
    [FieldOffset(0)] public Page Head;
    /// <summary>page[1] as a struct page (__page_1).</summary>
    [FieldOffset(Page.Size)] public Page Page1;
    /// <summary>page[2] as a struct page (__page_2); only order 2 and above have one.</summary>
    [FieldOffset(2 * Page.Size)] public Page Page2;

    /// <summary>_flags_1: page[1]'s flags. The folio order is its low byte (folio_large_order).</summary>
    [FieldOffset(FolioLayout.Flags1)] public ulong Flags1;
    /// <summary>_head_1: page[1]'s compound_head (head | 1).</summary>
    [FieldOffset(FolioLayout.Head1)] public ulong Head1;
    /// <summary>_large_mapcount: every mapping of the folio, minus one (starts at -1).</summary>
    [FieldOffset(FolioLayout.LargeMapcount)] public int LargeMapcount;
    /// <summary>_nr_pages_mapped: pages mapped by PTEs, plus ENTIRELY_MAPPED per PMD mapping.</summary>
    [FieldOffset(FolioLayout.NrPagesMapped)] public int NrPagesMapped;
    /// <summary>_entire_mapcount: PMD mappings, minus one (starts at -1).</summary>
    [FieldOffset(FolioLayout.EntireMapcount)] public int EntireMapcount;
    /// <summary>_pincount: FOLL_PIN references of a large folio.</summary>
    [FieldOffset(FolioLayout.Pincount)] public int Pincount;
    /// <summary>_mm_id_mapcount[2]: the mappings of the two tracked mms, each minus one (start at -1).</summary>
    [FieldOffset(FolioLayout.MmIdMapcount)] public fixed int MmIdMapcount[2];
    /// <summary>_mm_ids: the two 31-bit MM ids, the large-mapcount bit spinlock (bit 31) and "maybe mapped shared" (bit 63).</summary>
    [FieldOffset(FolioLayout.MmIds)] public ulong MmIds;
    /// <summary>_mapcount_1: page[1]'s own _mapcount.</summary>
    [FieldOffset(FolioLayout.Mapcount1)] public int Mapcount1;
    /// <summary>_refcount_1: page[1]'s own _refcount (always 0).</summary>
    [FieldOffset(FolioLayout.Refcount1)] public int Refcount1;
    /// <summary>_nr_pages (NR_PAGES_IN_LARGE_FOLIO): in page[1]'s memcg_data word, which it takes whole here.</summary>
    [FieldOffset(FolioLayout.NrPages)] public ulong NrPages;
    /// <summary>_flags_2: page[2]'s flags.</summary>
    [FieldOffset(FolioLayout.Flags2)] public ulong Flags2;
    /// <summary>_head_2: page[2]'s compound_head.</summary>
    [FieldOffset(FolioLayout.Head2)] public ulong Head2;
    /// <summary>_deferred_list.next: a kernel virtual address of a list_head (its own while not queued).</summary>
    [FieldOffset(FolioLayout.DeferredList)] public ulong DeferredListNext;
    /// <summary>_deferred_list.prev.</summary>
    [FieldOffset(FolioLayout.DeferredList + 8)] public ulong DeferredListPrev;

    /// <summary>The folio fields of the large folio whose head is <paramref name="head"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static LargeFolio* Of(Page* head) => (LargeFolio*)head;
}
