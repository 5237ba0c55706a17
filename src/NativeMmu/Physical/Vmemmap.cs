using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Sync;

namespace NativeMmu.Physical;

/// <summary>
/// The vmemmap: the array of struct page at VMEMMAP_START, stored in arena frames and mapped by the
/// kernel's own page table (init_mm), with 2 MiB leaves as vmemmap_populate_hugepages builds it.
/// pfn_to_page is VMEMMAP_START + pfn * 64 translated through those tables; the translations are
/// cached per vmemmap page, like the CPU's TLB caches them, and dropped by <see cref="FlushKernelRange"/>
/// (flush_tlb_kernel_range) when a vmemmap mapping changes.
/// </summary>
public sealed unsafe class Vmemmap : IDisposable
{
    public const ulong VmemmapStart4Level = 0xffff_ea00_0000_0000;
    public const ulong VmemmapStart5Level = 0xffd4_0000_0000_0000;
    /// <summary>struct pages per vmemmap page: 4096 / 64.</summary>
    public const int PagesPerVmemmapPage = (int)(Geometry.PageSize / Page.Size);

    private readonly PhysicalMemory _phys;
    private readonly PagingMode _mode;
    // Host address of each vmemmap page, filled from the kernel page table on first use. Any CPU may
    // fill a slot, without a lock: a slot only ever holds null or the host address the tables give, an
    // aligned pointer store is atomic, and the memory it points to exists before the store, so there is
    // nothing for the store to publish and two CPUs filling one slot write the same value. The vmemmap
    // remapping code clears slots (FlushKernelRange, Volatile) after changing the tables.
    private byte** _cache;
    // Whether the kernel PTE (or PMD) of each vmemmap page allows writes (_PAGE_RW), filled by the same
    // walk as _cache and read by the checked write path only; a slot is valid while its _cache slot is set.
    private byte* _writable;
    private readonly ulong _cachePages;

    /// <summary>Builds the vmemmap and the kernel page table that maps it, taking frames from <paramref name="boot"/>.</summary>
    internal Vmemmap(PhysicalMemory phys, PagingMode mode, BootAllocator boot)
    {
        _phys = phys;
        _mode = mode;
        Start = mode.L5Enabled ? VmemmapStart5Level : VmemmapStart4Level;
        ulong bytes = phys.Frames * Page.Size;
        ulong mapped = (bytes + Geometry.PmdSize - 1) & Geometry.PmdMask;
        _cachePages = mapped >> Geometry.PageShift;

        // The struct pages themselves, in 2 MiB physically contiguous blocks.
        ulong firstPfn = boot.Allocate(mapped >> Geometry.PageShift, alignFrames: Geometry.HPagePmdNr);
        FirstFramePfn = firstPfn;
        FrameCount = mapped >> Geometry.PageShift;

        // init_mm's tables: PGD (+P4D with LA57), PUD, PMD tables with PSE leaves.
        PgdPfn = boot.Allocate(1);
        ulong* pgd = (ulong*)phys.FrameAddress(PgdPfn);
        for (ulong off = 0; off < mapped; off += Geometry.PmdSize)
        {
            ulong* pmdp = WalkAlloc(pgd, new VirtAddr(Start + off), boot);
            ulong leafPfn = firstPfn + (off >> Geometry.PageShift);
            Volatile.Write(ref *pmdp, Pmd.PfnPmd(leafPfn, PgProt.PageKernelLarge).Value);
        }

        _cache = (byte**)NativeMemory.AllocZeroed((nuint)(_cachePages * (ulong)sizeof(byte*)));
        _writable = (byte*)NativeMemory.AllocZeroed((nuint)_cachePages);
        // Every struct page starts as the kernel's memmap_init leaves it: _mapcount -1, no refs.
        byte* first = phys.FrameAddress(firstPfn);
        for (ulong pfn = 0; pfn < phys.Frames; pfn++)
            ((Page*)first)[pfn].MapCount = -1;
    }

    /// <summary>VMEMMAP_START.</summary>
    public ulong Start { get; }
    /// <summary>The PGD frame of init_mm (the kernel's page table).</summary>
    public ulong PgdPfn { get; }
    public ulong FirstFramePfn { get; }
    public ulong FrameCount { get; }
    public PagingMode Mode => _mode;

    /// <summary>The kernel virtual address of struct page for pfn.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong PageVaddr(ulong pfn) => Start + pfn * Page.Size;

    /// <summary>page_to_pfn for a kernel virtual address of a struct page (or of a field inside it).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public ulong PfnOfVaddr(ulong vaddr) => (vaddr - Start) / Page.Size;

    /// <summary>pfn_to_page: the struct page of pfn, through the vmemmap mapping.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Page* PfnToPage(ulong pfn)
    {
        byte* host = _cache[pfn / PagesPerVmemmapPage];
        if (host == null) host = Translate(pfn / PagesPerVmemmapPage);
        return (Page*)(host + (pfn % PagesPerVmemmapPage) * Page.Size);
    }

    /// <summary>pfn_to_page.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Page* PfnToPage(Pfn pfn) => PfnToPage(pfn.Value);

    /// <summary>
    /// pfn_to_page for a store into the struct page: the access the MMU checks against the kernel
    /// PTE's _PAGE_RW. A store into a vmemmap page mapped read-only (a tail page under HVO) is the
    /// kernel's "unable to handle page fault ... permissions violation" oops, thrown here.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal Page* PfnToPageForWrite(ulong pfn)
    {
        Page* page = PfnToPage(pfn);
        if (_writable[pfn / PagesPerVmemmapPage] == 0) WriteFault(pfn);
        return page;
    }

    /// <summary>Whether the vmemmap page holding pfn's struct page is mapped writable (a fresh walk when not cached).</summary>
    public bool StructPageWritable(ulong pfn)
    {
        _ = PfnToPage(pfn);
        return _writable[pfn / PagesPerVmemmapPage] != 0;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void WriteFault(ulong pfn)
    {
        ulong v = pfn / PagesPerVmemmapPage;
        Translate(v); // the cached bit may predate a remap: the MMU walks again before it faults
        if (_writable[v] != 0) return;
        throw new KernelBugException($"BUG: unable to handle page fault for address: {PageVaddr(pfn):x} (#PF: error_code(0x0003) - permissions violation: write to the read-only struct page of pfn {pfn:x})");
    }

    /// <summary>flush_tlb_kernel_range over vmemmap addresses: forget cached translations.</summary>
    public void FlushKernelRange(ulong start, ulong end)
    {
        ulong first = (start - Start) >> Geometry.PageShift;
        ulong last = Math.Min((end - Start + Geometry.PageSize - 1) >> Geometry.PageShift, _cachePages);
        for (ulong i = first; i < last; i++) Volatile.Write(ref *(nint*)&_cache[i], 0);
        Interlocked.Increment(ref _kernelTlbFlushes);
    }

    // ---------------------------------------------------------------------------------------------
    // Remapping the vmemmap (mm/hugetlb_vmemmap.c's page-table half): split a 2 MiB leaf into a PTE
    // table, point PTEs at other frames, flush. The callers serialise remaps of one struct-page range
    // (the folio is theirs); PTE stores are single aligned 8-byte Volatile writes, so the lockless
    // Translate walk sees either the old or the new entry.
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// The static key of compound_head (hugetlb_optimize_vmemmap_key and the compound_info encoding):
    /// 0 while no tail needs more than the head-pointer decode; bit 0 while some folio has fake heads
    /// (KeepHead), bit 1 when tails carry a compound_info mask (SharedTails). Read on every
    /// page_folio; written by the vmemmap optimizer.
    /// </summary>
    public int CompoundHeadKey;
    public const int KeyFakeHeads = 1;
    public const int KeyTailMask = 2;
    private int _fakeHeadFolios;

    /// <summary>Tails carry compound_info = mask | 1 (the 2026 design) instead of head | 1; fixed at boot.</summary>
    public bool TailInfoIsMask => (Volatile.Read(ref CompoundHeadKey) & KeyTailMask) != 0;

    internal void SetTailInfoMask() => CompoundHeadKey |= KeyTailMask;

    /// <summary>
    /// static_branch_inc / _dec of the fake-head key: one per folio whose tails alias its head. The
    /// count and the bit change together under the key's mutex (jump_label_mutex), so a decrement
    /// racing an increment cannot leave the bit clear while a folio has fake heads. The increment is
    /// made before the folio's tails are remapped and the decrement after they are restored.
    /// </summary>
    internal void FakeHeadKey(int delta)
    {
        lock (_keyLock)
        {
            _fakeHeadFolios += delta;
            Bug.On(_fakeHeadFolios < 0, "hugetlb_optimize_vmemmap_key underflow");
            if (_fakeHeadFolios > 0) Interlocked.Or(ref CompoundHeadKey, KeyFakeHeads);
            else Interlocked.And(ref CompoundHeadKey, ~KeyFakeHeads);
        }
    }

    private readonly Lock _keyLock = new();
    /// <summary>init_mm.page_table_lock for the vmemmap: installing a PTE table under a PMD.</summary>
    private readonly Lock _pageTableLock = new();

    /// <summary>compound_info for a tail of an order-<paramref name="order"/> folio whose head is at headVaddr.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong TailInfo(ulong headVaddr, int order)
        => (CompoundHeadKey & KeyTailMask) != 0 ? ~(((ulong)Page.Size << order) - 1) | 1 : headVaddr | 1;

    /// <summary>The head's struct page address a tail's compound_info names (the tail's own address needed for a mask).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal ulong DecodeTailInfo(ulong info, ulong tailPfn)
        => (CompoundHeadKey & KeyTailMask) != 0 ? PageVaddr(tailPfn) & info : info & ~1UL;

    /// <summary>Kernel TLB flushes of vmemmap translations so far (flush_tlb_all and flush_tlb_kernel_range).</summary>
    public long KernelTlbFlushes => Volatile.Read(ref _kernelTlbFlushes);
    private long _kernelTlbFlushes;

    /// <summary>Vmemmap PMDs split into PTE tables so far (each cost one frame that stays as long as the split does).</summary>
    public long SplitPmds => Volatile.Read(ref _splitPmds);
    private long _splitPmds;

    /// <summary>flush_tlb_all for the vmemmap: forget every cached translation.</summary>
    public void FlushTlbAll()
    {
        for (ulong i = 0; i < _cachePages; i++) Volatile.Write(ref *(nint*)&_cache[i], 0);
        Interlocked.Increment(ref _kernelTlbFlushes);
    }

    /// <summary>The PMD entry that maps vmemmap page v (in init_mm's tables).</summary>
    private ulong* PmdSlot(ulong vmemmapPage)
    {
        var va = new VirtAddr(Start + (vmemmapPage << Geometry.PageShift));
        ulong* table = (ulong*)_phys.FrameAddress(PgdPfn);
        ulong entry = Volatile.Read(ref table[va.PgdIndex(_mode)]);
        if (_mode.L5Enabled)
        {
            table = (ulong*)_phys.FrameAddress(new Pgd(entry).Pfn);
            entry = Volatile.Read(ref table[va.P4dIndex]);
        }
        table = (ulong*)_phys.FrameAddress(new P4d(entry).Pfn);
        table = (ulong*)_phys.FrameAddress(new Pud(Volatile.Read(ref table[va.PudIndex])).Pfn);
        return &table[va.PmdIndex];
    }

    /// <summary>Whether vmemmap page v is mapped by a 2 MiB leaf (not split yet).</summary>
    public bool IsPmdMapped(ulong vmemmapPage) => new Pmd(Volatile.Read(ref *PmdSlot(vmemmapPage))).Leaf;

    /// <summary>
    /// split_vmemmap_huge_pmd without its flush: the 2 MiB leaf mapping vmemmap page v becomes a PTE
    /// table in <paramref name="tablePfn"/> (a zeroed frame the caller allocated) mapping the same frames
    /// PAGE_KERNEL. False, leaving the frame unused, when the PMD was split already.
    /// </summary>
    internal bool SplitVmemmapHugePmd(ulong vmemmapPage, ulong tablePfn)
    {
        ulong* pmdp = PmdSlot(vmemmapPage);
        // Two folios under one vmemmap PMD may be optimized at once: the check and the install are one
        // step under init_mm's page_table_lock, as split_vmemmap_huge_pmd does it.
        using Lock.Scope _ = _pageTableLock.EnterScope();
        var pmd = new Pmd(Volatile.Read(ref *pmdp));
        if (!pmd.Leaf) return false;
        ulong* pte = (ulong*)_phys.FrameAddress(tablePfn);
        for (int i = 0; i < Geometry.PtrsPerTable; i++)
            pte[i] = Pte.PfnPte(pmd.Pfn + (ulong)i, PgProt.PageKernel).Value;
        // Publish the filled table: a walker that sees the new PMD sees every PTE in it.
        Volatile.Write(ref *pmdp, Pmd.MkKernelTable(tablePfn).Value);
        Interlocked.Increment(ref _splitPmds);
        return true;
    }

    /// <summary>The frame the PTE of vmemmap page v points at (the PMD must be split).</summary>
    internal ulong PtePfn(ulong vmemmapPage)
    {
        var pmd = new Pmd(Volatile.Read(ref *PmdSlot(vmemmapPage)));
        if (pmd.Leaf) return pmd.Pfn + (vmemmapPage & 511UL);
        ulong* table = (ulong*)_phys.FrameAddress(pmd.Pfn);
        return new Pte(Volatile.Read(ref table[vmemmapPage & 511UL])).Pfn;
    }

    /// <summary>set_pte_at(&amp;init_mm) for vmemmap page v: map it to frame pfn, read-only or writable. No flush.</summary>
    internal void SetPte(ulong vmemmapPage, ulong pfn, bool writable)
    {
        var pmd = new Pmd(Volatile.Read(ref *PmdSlot(vmemmapPage)));
        Bug.On(pmd.Leaf, "vmemmap remap of page {0:x} under an unsplit PMD", vmemmapPage);
        ulong* table = (ulong*)_phys.FrameAddress(pmd.Pfn);
        Volatile.Write(ref table[vmemmapPage & 511UL],
            Pte.PfnPte(pfn, writable ? PgProt.PageKernel : PgProt.PageKernelRo).Value);
    }

    /// <summary>The host address of a frame, for copying vmemmap pages.</summary>
    internal byte* FrameHost(ulong pfn) => _phys.FrameAddress(pfn);

    /// <summary>Walks init_mm's tables for one vmemmap page, as the MMU would, and caches the result.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* Translate(ulong vmemmapPage)
    {
        Bug.On(vmemmapPage >= _cachePages, "pfn_to_page beyond the vmemmap (vmemmap page {0})", vmemmapPage);
        var va = new VirtAddr(Start + (vmemmapPage << Geometry.PageShift));
        ulong* table = (ulong*)_phys.FrameAddress(PgdPfn);
        ulong entry = Volatile.Read(ref table[va.PgdIndex(_mode)]);
        if (_mode.L5Enabled)
        {
            Bug.On((entry & PageTableBits.Present) == 0, "vmemmap: PGD entry not present");
            table = (ulong*)_phys.FrameAddress(new Pgd(entry).Pfn);
            entry = Volatile.Read(ref table[va.P4dIndex]);
        }
        Bug.On((entry & PageTableBits.Present) == 0, "vmemmap: P4D entry not present");
        table = (ulong*)_phys.FrameAddress(new P4d(entry).Pfn);
        var pud = new Pud(Volatile.Read(ref table[va.PudIndex]));
        Bug.On(!pud.Present || pud.Leaf, "vmemmap: PUD entry not a table");
        table = (ulong*)_phys.FrameAddress(pud.Pfn);
        var pmd = new Pmd(Volatile.Read(ref table[va.PmdIndex]));
        Bug.On((pmd.Value & PageTableBits.Present) == 0, "vmemmap: PMD entry not present");
        ulong pfn;
        bool writable;
        if (pmd.Leaf)
        {
            pfn = pmd.Pfn + (ulong)va.PteIndex;
            writable = (pmd.Value & PageTableBits.Rw) != 0;
        }
        else
        {
            table = (ulong*)_phys.FrameAddress(pmd.Pfn);
            var pte = new Pte(Volatile.Read(ref table[va.PteIndex]));
            Bug.On((pte.Value & PageTableBits.Present) == 0, "vmemmap: PTE not present");
            pfn = pte.Pfn;
            writable = (pte.Value & PageTableBits.Rw) != 0;
        }
        byte* host = _phys.FrameAddress(pfn);
        // The permission before the address: a checked writer that sees the new address also sees its bit.
        Volatile.Write(ref _writable[vmemmapPage], writable ? (byte)1 : (byte)0);
        _cache[vmemmapPage] = host;
        return host;
    }

    private ulong* WalkAlloc(ulong* pgd, VirtAddr va, BootAllocator boot)
    {
        ulong* table = pgd;
        ulong* slot = &table[va.PgdIndex(_mode)];
        if (_mode.L5Enabled)
        {
            if (*slot == 0) *slot = Pgd.MkKernelTable(boot.Allocate(1)).Value;
            table = (ulong*)_phys.FrameAddress(new Pgd(*slot).Pfn);
            slot = &table[va.P4dIndex];
        }
        if (*slot == 0) *slot = P4d.MkKernelTable(boot.Allocate(1)).Value;
        table = (ulong*)_phys.FrameAddress(new P4d(*slot).Pfn);
        slot = &table[va.PudIndex];
        if (*slot == 0) *slot = Pud.MkKernelTable(boot.Allocate(1)).Value;
        table = (ulong*)_phys.FrameAddress(new Pud(*slot).Pfn);
        return &table[va.PmdIndex];
    }

    public void Dispose()
    {
        if (_cache != null)
        {
            NativeMemory.Free(_cache);
            _cache = null;
            NativeMemory.Free(_writable);
            _writable = null;
        }
    }
}

/// <summary>memblock: the boot-time bump allocator that hands out frames before the buddy allocator exists.</summary>
internal sealed unsafe class BootAllocator(PhysicalMemory phys, ulong firstPfn)
{
    public ulong Next { get; private set; } = firstPfn;

    /// <summary>Allocates zeroed, physically contiguous frames.</summary>
    public ulong Allocate(ulong frames, ulong alignFrames = 1)
    {
        ulong pfn = (Next + alignFrames - 1) / alignFrames * alignFrames;
        if (pfn + frames > phys.Frames) throw new InvalidOperationException("the arena is too small for the boot-time allocations");
        Next = pfn + frames;
        NativeMemory.Clear(phys.FrameAddress(pfn), (nuint)(frames << Geometry.PageShift));
        return pfn;
    }
}
