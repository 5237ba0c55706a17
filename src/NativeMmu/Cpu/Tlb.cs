using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Physical;

namespace NativeMmu.Cpus;

/// <summary>
/// The TLB and the paging-structure cache of one CPU: direct-mapped arrays in native memory, touched
/// only by the owning thread (other CPUs reach them only through the flush mailbox, Ipi.cs).
/// </summary>
/// <remarks>
/// Every entry is tagged with the page number it translates above a 16-bit generation (<see cref="Tag"/>).
/// A full flush is one generation step, so a CR3 reload costs nothing per entry; the arrays are cleared
/// only when the generation wraps. Tag 0 never matches, as no generation is 0.
/// </remarks>
public sealed unsafe partial class Cpu
{
    private const int TagGenerationBits = 16;
    /// <summary>The largest generation a tag can carry; the next flush wraps to 1 and clears the array.</summary>
    private const ulong TagValidGens = (1UL << TagGenerationBits) - 1;
    private const uint TlbRead = 1;          // translation valid for reads
    private const uint TlbWrite = 2;         // writable at every level and Dirty already set

    // 4 KiB, 2 MiB and 1 GiB translations.
    private TlbEntry* _tlb;
    private readonly ulong _tlbMask;
    private TlbEntry* _tlbHuge;
    private readonly ulong _tlbHugeMask;
    /// <summary>1 GiB entries, direct-mapped by the 1 GiB page number (the four of an L1 DTLB's 1 GiB array).</summary>
    private TlbEntry* _tlbGiga;
    private const int TlbGigaEntries = 4;
    // Paging-structure cache: PMD-level translations (2 MiB region → PTE table), as the PDE cache of
    // x86 keeps them. Its own generation, because INVLPG drops it whole while the TLB loses one page.
    private PscEntry* _psc;
    private const int PscEntries = 32;

    [StructLayout(LayoutKind.Sequential)]
    private struct TlbEntry
    {
        public ulong Tag;      // Tag(vpn or hpn, TLB generation); 0 never matches
        public byte* Host;     // host address of the 4 KiB (or 2 MiB) frame
        public uint Perm;      // TlbRead | TlbWrite
        public uint TablePfn;  // the PTE table the 4 KiB translation came through (for the checker)
        public ulong Pfn;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PscEntry
    {
        public ulong Tag;       // Tag(va >> 21, paging-structure-cache generation)
        public ulong TablePfn;  // the PTE table the PMD entry pointed to
        public uint Writable;   // R/W ANDed over the upper levels
        public uint Pad;
    }

    /// <summary>The tag formula of every TLB and paging-structure-cache entry: the page number above the generation.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Tag(ulong pageNumber, ulong generation) => (pageNumber << TagGenerationBits) | generation;

    /// <summary>The page number a tag was made for, whatever its generation.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong TagPage(ulong tag) => tag >> TagGenerationBits;

    /// <summary>The live TLB tag of a 4 KiB page number (vpn) or a 2 MiB one (hpn).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong TlbTag(ulong pageNumber) => Tag(pageNumber, _local[LocalTlbGen]);

    /// <summary>The live paging-structure-cache tag of a 2 MiB page number.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private ulong PscTag(ulong hpn) => Tag(hpn, _local[LocalPscGen]);

    /// <summary>The 4 KiB TLB entry a virtual page number maps to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TlbEntry* TlbSlot(ulong vpn) => _tlb + (vpn & _tlbMask);

    /// <summary>The 2 MiB TLB entry a 2 MiB page number maps to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TlbEntry* HugeTlbSlot(ulong hpn) => _tlbHuge + (hpn & _tlbHugeMask);

    /// <summary>The 1 GiB TLB entry a 1 GiB page number (gpn) maps to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private TlbEntry* GigaTlbSlot(ulong gpn) => _tlbGiga + (gpn & (TlbGigaEntries - 1));

    /// <summary>The paging-structure-cache entry a 2 MiB page number maps to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private PscEntry* PscSlot(ulong hpn) => _psc + (hpn & (PscEntries - 1));

    /// <summary>TLB permission bits for a leaf: write only when every level allows it and Dirty is already set.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static uint TlbPerm(ulong leaf, bool writable)
        => TlbRead | (writable && (leaf & PageTableBits.Rw) != 0 && (leaf & PageTableBits.Dirty) != 0 ? TlbWrite : 0);

    /// <summary>Translates a user address for a read or write; null with the #PF error code when the walk fails.</summary>
    private byte* Translate(ulong va, bool write, out X86PfError error)
    {
        ulong vpn = va >> Geometry.PageShift;
        error = X86PfError.None;
        uint need = write ? TlbWrite : TlbRead;
        TlbEntry* e = TlbSlot(vpn);
        if (e->Tag == TlbTag(vpn) && (e->Perm & need) != 0)
            return e->Host + (va & (Geometry.PageSize - 1));
        ulong hpn = va >> Geometry.PmdShift;
        TlbEntry* h = HugeTlbSlot(hpn);
        if (h->Tag == TlbTag(hpn) && (h->Perm & need) != 0)
            return h->Host + (va & (Geometry.PmdSize - 1));
        ulong gpn = va >> Geometry.PudShift;
        TlbEntry* g = GigaTlbSlot(gpn);
        if (g->Tag == TlbTag(gpn) && (g->Perm & need) != 0)
            return g->Host + (va & (Geometry.PudSize - 1));
        return Walk(va, write, out error);
    }

    /// <summary>Fills the 4 KiB TLB entry of va from a walk that ended at the PTE in table <paramref name="tablePfn"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FillTlb4K(ulong va, byte* host, ulong pfn, uint tablePfn, uint perm)
    {
        ulong vpn = va >> Geometry.PageShift;
        TlbEntry* e = TlbSlot(vpn);
        e->Tag = TlbTag(vpn);
        e->Host = host;
        e->Pfn = pfn;
        e->TablePfn = tablePfn;
        e->Perm = perm;
    }

    /// <summary>Fills the 2 MiB TLB entry of va from a walk that ended at a PMD leaf.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FillTlb2M(ulong va, byte* host, ulong pfn, uint perm)
    {
        ulong hpn = va >> Geometry.PmdShift;
        TlbEntry* h = HugeTlbSlot(hpn);
        h->Tag = TlbTag(hpn);
        h->Host = host;
        h->Pfn = pfn;
        h->Perm = perm;
    }

    /// <summary>Fills the 1 GiB TLB entry of va from a walk that ended at a PUD leaf.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void FillTlb1G(ulong va, byte* host, ulong pfn, uint perm)
    {
        ulong gpn = va >> Geometry.PudShift;
        TlbEntry* g = GigaTlbSlot(gpn);
        g->Tag = TlbTag(gpn);
        g->Host = host;
        g->Pfn = pfn;
        g->Perm = perm;
    }

    /// <summary>tlb_single_page_flush_ceiling: above this many pages a range flush becomes a full flush.</summary>
    public const int TlbSinglePageFlushCeiling = 33;

    /// <summary>The local half of flush_tlb_mm_range: INVLPG per page, or a full flush past the ceiling.</summary>
    public void FlushRangeLocal(ulong start, ulong end, int strideShift)
    {
        if (end == ulong.MaxValue || ((end - start) >> strideShift) > TlbSinglePageFlushCeiling)
        {
            FlushAllLocal();
            return;
        }
        ulong stride = 1UL << strideShift;
        for (ulong a = start; a < end; a += stride) FlushOneLocal(a);
        FlushPagingStructureCache();
        _counters.Add(Id, VmEvent.NrTlbLocalFlushOne, (long)((end - start) >> strideShift));
    }

    /// <summary>INVLPG also drops every paging-structure-cache entry (SDM 4.10.4.1); one generation step.</summary>
    public void FlushPagingStructureCache()
    {
        if (++_local[LocalPscGen] > TagValidGens)
        {
            _local[LocalPscGen] = 1;
            NativeMemory.Clear(_psc, (nuint)(PscEntries * sizeof(PscEntry)));
        }
    }

    /// <summary>INVLPG: drops the 4 KiB, 2 MiB and 1 GiB translations of one address (SDM 4.10.4.1: whatever page size maps it).</summary>
    public void FlushOneLocal(ulong va)
    {
        ulong vpn = va >> Geometry.PageShift;
        TlbEntry* e = TlbSlot(vpn);
        if (TagPage(e->Tag) == vpn) e->Tag = 0;
        ulong hpn = va >> Geometry.PmdShift;
        TlbEntry* h = HugeTlbSlot(hpn);
        if (TagPage(h->Tag) == hpn) h->Tag = 0;
        ulong gpn = va >> Geometry.PudShift;
        TlbEntry* g = GigaTlbSlot(gpn);
        if (TagPage(g->Tag) == gpn) g->Tag = 0;
    }

    /// <summary>Drops the paging-structure-cache entry of va's 2 MiB region, whatever its generation.</summary>
    private void FlushPscOne(ulong va)
    {
        ulong hpn = va >> Geometry.PmdShift;
        PscEntry* psc = PscSlot(hpn);
        if (TagPage(psc->Tag) == hpn) psc->Tag = 0;
    }

    /// <summary>A CR3 reload: every translation goes. One generation step; a real clear when the tag wraps.</summary>
    public void FlushAllLocal()
    {
        _counters.Add(Id, VmEvent.NrTlbLocalFlushAll);
        FlushPagingStructureCache();
        if (++_local[LocalTlbGen] > TagValidGens)
        {
            _local[LocalTlbGen] = 1;
            NativeMemory.Clear(_tlb, (nuint)((_tlbMask + 1) * (ulong)sizeof(TlbEntry)));
            NativeMemory.Clear(_tlbHuge, (nuint)((_tlbHugeMask + 1) * (ulong)sizeof(TlbEntry)));
            NativeMemory.Clear(_tlbGiga, (nuint)(TlbGigaEntries * sizeof(TlbEntry)));
        }
    }

    /// <summary>Whether this CPU's TLB holds a translation for va (4 KiB, 2 MiB or 1 GiB); for tests and checkers.</summary>
    public bool TlbHolds(ulong va, out ulong pfn, out bool huge)
    {
        ulong vpn = va >> Geometry.PageShift;
        TlbEntry* e = TlbSlot(vpn);
        if (e->Tag == TlbTag(vpn)) { pfn = e->Pfn; huge = false; return true; }
        ulong hpn = va >> Geometry.PmdShift;
        TlbEntry* h = HugeTlbSlot(hpn);
        if (h->Tag == TlbTag(hpn)) { pfn = h->Pfn + (ulong)Geometry.PteIndex(va); huge = true; return true; }
        ulong gpn = va >> Geometry.PudShift;
        TlbEntry* g = GigaTlbSlot(gpn);
        if (g->Tag == TlbTag(gpn)) { pfn = g->Pfn + ((va & (Geometry.PudSize - 1)) >> Geometry.PageShift); huge = true; return true; }
        pfn = 0; huge = false;
        return false;
    }
}
