using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Sync;

namespace NativeMmu.Physical;

/// <summary>
/// struct page on x86-64 (CONFIG_MEMCG, no WANT_PAGE_VIRTUAL): 64 bytes at the offsets of
/// include/linux/mm_types.h. Overlapping fields are the kernel's unions; ptdesc (page-table pages)
/// and the folio tail fields overlay the same bytes.
/// </summary>
/// <remarks>
/// Who writes what. <see cref="Flags"/>: a bit that can change while another CPU can reach the page
/// (PG_locked; PG_anon_exclusive of a mapped page, changed under the PTL that maps it; page[1]'s
/// PG_partially_mapped, which shares its word with page[1]'s own PG_anon_exclusive) is set and cleared
/// with the atomic methods below; the plain ones are for a page nobody else can reach (not yet
/// published, refcount already zero, or every mm held still). <see cref="RefCount"/> and
/// <see cref="MapCount"/> are atomic counters. The list words belong to whoever owns the free page
/// (the zone lock for buddy lists, the owning CPU for its pcp list).
/// </remarks>
[StructLayout(LayoutKind.Explicit, Size = 64)]
public struct Page
{
    public const int Size = 64;

    /// <summary>flags: PG_* bits in the low bits (zone and node would sit in the high bits).</summary>
    [FieldOffset(0)] public ulong Flags;

    // The five-word union at offset 8.
    /// <summary>lru.next / buddy_list.next / pcp_list.next: a kernel virtual address of a list_head.</summary>
    [FieldOffset(8)] public ulong LruNext;
    /// <summary>compound_head of a tail page: the head's struct page address | 1.</summary>
    [FieldOffset(8)] public ulong CompoundHead;
    /// <summary>lru.prev.</summary>
    [FieldOffset(16)] public ulong LruPrev;
    /// <summary>ptdesc pmd_huge_pte: the PTE table deposited under a PMD-mapped THP.</summary>
    [FieldOffset(16)] public ulong PmdHugePte;
    /// <summary>mapping: the anon_vma with FOLIO_MAPPING_ANON (bit 0) set for anonymous pages.</summary>
    [FieldOffset(24)] public ulong Mapping;
    /// <summary>
    /// A PTE table shared copy-on-write, in the invariant mode: the checksum of its entries taken when it was
    /// shared (the mapping slot, unused by page tables; 0 again before the table is private or freed).
    /// Written by the holders under the table's ptl.
    /// </summary>
    [FieldOffset(24)] public ulong PtCowChecksum;
    /// <summary>index: the page offset within the mapping.</summary>
    [FieldOffset(32)] public ulong Index;
    /// <summary>ptdesc pt_mm (x86 PGD pages) / pt_frag_refcount and friends.</summary>
    [FieldOffset(32)] public ulong PtMm;
    /// <summary>pte_refcount of the 2021 "Free user PTE page table pages" series (the pt_frag_refcount slot).</summary>
    [FieldOffset(32)] public int PteRefcount;
    /// <summary>private: the buddy order while free, the swap entry in swap cache.</summary>
    [FieldOffset(40)] public ulong Private;
    /// <summary>ptdesc ptl: the split page-table lock, a 4-byte spinlock embedded in the page.</summary>
    [FieldOffset(40)] public int Ptl;
    /// <summary>_mapcount: starts at -1 (unmapped).</summary>
    [FieldOffset(48)] public int MapCount;
    /// <summary>page_type: PGTY_* in the top byte for typed pages (buddy, table, ...).</summary>
    [FieldOffset(48)] public uint PageType;
    /// <summary>_refcount.</summary>
    [FieldOffset(52)] public int RefCount;
    /// <summary>_mapcount and _refcount as one aligned 8-byte word (little-endian: _mapcount low).</summary>
    [FieldOffset(48)] private long _mapcountRefcount;
    /// <summary>memcg_data.</summary>
    [FieldOffset(56)] public ulong MemcgData;
    /// <summary>A PTE table shared copy-on-write: the mm id its RSS and pgtables_bytes are charged to (0: none). Under the table's ptl.</summary>
    [FieldOffset(56)] public uint PtCowOwner;

    // ---------------------------------------------------------------------------------------------
    // Page flags (include/linux/page-flags.h). The kernel's SetPageX / ClearPageX / TestSetPageX are
    // atomic bit operations (set_bit, clear_bit, test_and_set_bit: a locked read-modify-write of the
    // flags word); __SetPageX / __ClearPageX are plain read-modify-writes, for a page no other CPU can
    // reach. A plain read-modify-write racing with another CPU's atomic one on the same word silently
    // undoes it, whichever bit each of them meant to change: the word, not the bit, decides.
    // ---------------------------------------------------------------------------------------------

    /// <summary>PageX (test_bit): a plain read of one bit.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public readonly bool TestFlag(int bit) => (Flags & PG.Mask(bit)) != 0;

    /// <summary>__SetPageX: a plain read-modify-write; the page must be out of every other CPU's reach.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlag(int bit) => Flags |= PG.Mask(bit);

    /// <summary>__SetPageX for two flags at once (one plain read-modify-write).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlags(int a, int b) => Flags |= PG.Mask(a, b);

    /// <summary>__SetPageX for three flags at once (one plain read-modify-write).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlags(int a, int b, int c) => Flags |= PG.Mask(a, b, c);

    /// <summary>__ClearPageX: a plain read-modify-write; the page must be out of every other CPU's reach.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ClearFlag(int bit) => Flags &= ~PG.Mask(bit);

    /// <summary>__ClearPageX for three flags at once (one plain read-modify-write).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ClearFlags(int a, int b, int c) => Flags &= ~PG.Mask(a, b, c);

    /// <summary>__ClearPageX for four flags at once (one plain read-modify-write).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ClearFlags(int a, int b, int c, int d) => Flags &= ~PG.Mask(a, b, c, d);

    /// <summary>SetPageX (set_bit): a locked OR, safe against other CPUs changing other bits of the word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void SetFlagAtomic(int bit) => Interlocked.Or(ref Flags, PG.Mask(bit));

    /// <summary>ClearPageX (clear_bit): a locked AND. A full fence, so it also serves as clear_bit_unlock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ClearFlagAtomic(int bit) => Interlocked.And(ref Flags, ~PG.Mask(bit));

    /// <summary>TestSetPageX (test_and_set_bit): sets the bit, returns whether it was already set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TestAndSetFlag(int bit) => (Interlocked.Or(ref Flags, PG.Mask(bit)) & PG.Mask(bit)) != 0;

    /// <summary>TestClearPageX (test_and_clear_bit): clears the bit, returns whether it was set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool TestAndClearFlag(int bit) => (Interlocked.And(ref Flags, ~PG.Mask(bit)) & PG.Mask(bit)) != 0;

    /// <summary>
    /// atomic_inc(&amp;_mapcount) and folio_get of a mapped page, as one locked add on the two adjacent
    /// counters: a mapped page's _mapcount is at least 0, so its increment cannot carry into _refcount.
    /// Both land together, each as the kernel's own atomic would; one locked instruction instead of two.
    /// Ordering: a locked add is a full barrier on x86, as each of the two atomic_inc it replaces is, and a
    /// reader of either 4-byte counter (folio_ref_count, a racing folio_try_get's cmpxchg) sees both
    /// increments or neither: the 8-byte word is aligned, so the add is one coherent access to one line.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void IncMapcountAndGet()
    {
        long before = Interlocked.Add(ref _mapcountRefcount, 1L | (1L << 32)) - (1L | (1L << 32));
        Bug.On((int)before < 0, "page with _mapcount {0} duplicated as mapped", (int)before);
    }

    /// <summary>PageHead: the first page of a compound page (a large folio).</summary>
    public readonly bool IsHead { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => TestFlag(PG.Head); }

    /// <summary>PageTail: compound_head with bit 0 set.</summary>
    public readonly bool IsTail { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => (CompoundHead & 1) != 0; }

    /// <summary>PageCompound: the head or a tail of a compound page, i.e. a page of a large folio.</summary>
    public readonly bool IsCompound { [MethodImpl(MethodImplOptions.AggressiveInlining)] get => IsHead || IsTail; }
}

/// <summary>enum pageflags (include/linux/page-flags.h, ~6.15): the bit number is the enum value.</summary>
public static class PG
{
    public const int Locked = 0;
    public const int Writeback = 1;
    public const int Referenced = 2;
    public const int Uptodate = 3;
    public const int Dirty = 4;
    public const int Lru = 5;
    public const int Head = 6;
    public const int Waiters = 7;
    public const int Active = 8;
    public const int Workingset = 9;
    public const int OwnerPriv1 = 10;
    public const int Owner2 = 11;
    public const int Arch1 = 12;
    public const int Reserved = 13;
    public const int Private = 14;
    public const int Private2 = 15;
    public const int Reclaim = 16;
    public const int Swapbacked = 17;
    public const int Unevictable = 18;
    public const int Dropbehind = 19;
    public const int Mlocked = 20;
    public const int Hwpoison = 21;

    /// <summary>PG_swapcache = PG_owner_priv_1.</summary>
    public const int Swapcache = OwnerPriv1;
    /// <summary>PG_anon_exclusive = PG_owner_2: per page, may be set on tail pages.</summary>
    public const int AnonExclusive = Owner2;
    /// <summary>PG_vmemmap_self_hosted = PG_owner_priv_1.</summary>
    public const int VmemmapSelfHosted = OwnerPriv1;
    // Flags kept in page[1] of a large folio.
    public const int HasHwpoisoned = Active;
    public const int LargeRmappable = Workingset;
    public const int PartiallyMapped = Reclaim;

    /// <summary>The mask of one flag bit (BIT(PG_x)).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mask(int bit) => 1UL << bit;

    /// <summary>The mask of two flag bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mask(int a, int b) => (1UL << a) | (1UL << b);

    /// <summary>The mask of three flag bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mask(int a, int b, int c) => (1UL << a) | (1UL << b) | (1UL << c);

    /// <summary>The mask of four flag bits.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Mask(int a, int b, int c, int d) => (1UL << a) | (1UL << b) | (1UL << c) | (1UL << d);

    /// <summary>PAGE_FLAGS_CHECK_AT_FREE (the subset this emulator uses): must be clear when a page is freed.</summary>
    public const ulong CheckAtFree = (1UL << Locked) | (1UL << Writeback) | (1UL << Lru) | (1UL << Active)
        | (1UL << Unevictable) | (1UL << Mlocked) | (1UL << Reserved) | (1UL << Private) | (1UL << Private2);
    /// <summary>PAGE_FLAGS_CHECK_AT_PREP: everything below the zone/node fields is clear on a new page.</summary>
    public const ulong CheckAtPrep = (1UL << 24) - 1;
    /// <summary>
    /// What free_pages_prepare clears: PAGE_FLAGS_CHECK_AT_PREP without __PG_HWPOISON, which outlives the
    /// free so that a poisoned page stays recognisable (and is kept or taken off the free lists).
    /// </summary>
    public const ulong ClearAtFree = CheckAtPrep & ~(1UL << Hwpoison);
}

/// <summary>The page_type values (top byte of page_type) and the folio mapping flags.</summary>
public static class PageTypes
{
    public const uint Buddy = 0xf0;
    public const uint Offline = 0xf1;
    public const uint Table = 0xf2;
    public const uint Guard = 0xf3;
    public const uint Hugetlb = 0xf4;
    public const uint Slab = 0xf5;
    public const uint Zsmalloc = 0xf6;
    public const uint Unaccepted = 0xf7;
    public const uint LargeKmalloc = 0xf8;
    /// <summary>A page with no type: page_type == UINT_MAX (_mapcount == -1).</summary>
    public const uint NoType = uint.MaxValue;

    /// <summary>FOLIO_MAPPING_ANON.</summary>
    public const ulong MappingAnon = 1;
    public const ulong MappingKsm = 2;
    public const ulong MappingFlags = 3;
}
