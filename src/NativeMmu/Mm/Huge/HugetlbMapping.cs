using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// The anonymous hugetlbfs inode behind one MAP_HUGETLB mapping (hugetlb_file_setup(HUGETLB_ANON_FILE)):
/// its hstate, the VMAs that map it (the i_mmap tree, which unmap_ref_private walks), and the fault
/// mutexes that serialise the instantiation of one huge page (hugetlb_fault_mutex_table, hashed by
/// mapping and index; a table per inode hashes the same keys apart).
/// </summary>
internal sealed class HugetlbFile(Hstate h)
{
    public readonly Hstate H = h;
    /// <summary>i_mmap_rwsem: guards <see cref="IMmap"/>; taken by VMA creation and removal and by unmap_ref_private.</summary>
    public readonly Lock IMmapLock = new();
    /// <summary>The VMAs of every mm mapping this inode (the parent's and its fork children's).</summary>
    public readonly List<Vma> IMmap = [];
    private const int FaultMutexes = 16;
    private readonly Lock[] _faultMutex = CreateMutexes();

    private static Lock[] CreateMutexes()
    {
        var locks = new Lock[FaultMutexes];
        for (int i = 0; i < locks.Length; i++) locks[i] = new Lock();
        return locks;
    }

    /// <summary>hugetlb_fault_mutex_hash: the mutex for huge-page index idx.</summary>
    public Lock FaultMutex(ulong idx) => _faultMutex[(int)(idx * 0x9E3779B97F4A7C15UL >> 60) & (FaultMutexes - 1)];
}

/// <summary>
/// struct resv_map of a private hugetlb mapping. For a private mapping the map has the opposite meaning
/// of a shared one (mm/hugetlb.c, __vma_reservation_common): an index that is in it has consumed its
/// reservation; one that is not still has it. Here a bitmap over the mapping's huge pages, sized at
/// mmap, so that recording a consumed reservation in the fault never allocates.
/// </summary>
internal sealed class ResvMap(ulong pages)
{
    private readonly ulong[] _consumed = new ulong[(pages + 63) / 64];
    public readonly ulong Pages = pages;
    /// <summary>kref: the split halves of the owner's VMA share the map.</summary>
    public int Refs = 1;

    /// <summary>Whether idx's reservation was consumed. Under the fault mutex of idx (writers) or mmap_lock for write (readers at close).</summary>
    public bool Consumed(ulong idx) => idx < Pages && (Volatile.Read(ref _consumed[idx >> 6]) & (1UL << (int)(idx & 63))) != 0;

    /// <summary>vma_commit_reservation: idx consumed its reservation. Atomic, as indices sharing a word have different fault mutexes.</summary>
    public void Consume(ulong idx)
    {
        if (idx < Pages) Interlocked.Or(ref _consumed[idx >> 6], 1UL << (int)(idx & 63));
    }

    /// <summary>vma_add_reservation (restore_reserve_on_error): idx has its reservation again.</summary>
    public void Restore(ulong idx)
    {
        if (idx < Pages) Interlocked.And(ref _consumed[idx >> 6], ~(1UL << (int)(idx & 63)));
    }

    /// <summary>region_count: consumed reservations in [from, to).</summary>
    public long RegionCount(ulong from, ulong to)
    {
        long n = 0;
        for (ulong i = from; i < to && i < Pages; i++) if (Consumed(i)) n++;
        return n;
    }
}

/// <summary>The hugetlb state of a VMA: vm_file's inode, and vm_private_data (the reservation map and HPAGE_RESV_* flags).</summary>
internal struct HugetlbVma
{
    /// <summary>HPAGE_RESV_OWNER: this VMA made the reservation (the mmap, and its split halves; not a fork child).</summary>
    public const int ResvOwner = 1;
    /// <summary>HPAGE_RESV_UNMAPPED: the owner took a page back from this VMA (unmap_ref_private); a fault here is fatal.</summary>
    public const int ResvUnmapped = 2;

    public HugetlbFile? File;
    public ResvMap? Resv;
    public int ResvFlags;
}

/// <summary>
/// MAP_HUGETLB mappings on the VMA side (mm/hugetlb.c, fs/hugetlbfs/inode.c): the hstate of a mapping,
/// the reservation at mmap, the VMA operations (open, close, may_split), huge_pte_offset / huge_pte_alloc
/// over the x86 paging structures (a PMD leaf for 2 MiB, a PUD leaf for 1 GiB), the zap, fork's copy,
/// mprotect's change_protection, GUP's follow and smaps' walk. Huge entries are handled as the kernel
/// handles them: as pte_t values at the PMD or PUD slot, with PSE set.
/// </summary>
internal static unsafe class HugetlbMapping
{
    /// <summary>MAP_HUGE_SHIFT: the log2 of the huge page size sits in mmap's flag bits 26..31.</summary>
    public const int MapHugeShift = 26;
    /// <summary>MAP_HUGE_MASK.</summary>
    public const int MapHugeMask = 0x3f;

    public static bool IsVmHugetlbPage(Vma vma) => (vma.VmFlags & VmFlags.HugeTlb) != 0;

    /// <summary>hstate_vma: the hstate of the VMA's hugetlbfs inode.</summary>
    public static Hstate HstateVma(Vma vma) => vma.Hugetlb.File!.H;

    public static ulong HugePageSize(Hstate h) => Geometry.PageSize << h.Order;
    public static ulong HugePageMask(Hstate h) => ~(HugePageSize(h) - 1);
    public static int PagesPerHugePage(Hstate h) => 1 << h.Order;
    public static int HugePageShift(Hstate h) => Geometry.PageShift + h.Order;

    /// <summary>vma_hugecache_offset: the huge-page index of address in the VMA's file.</summary>
    public static ulong VmaHugecacheOffset(Hstate h, Vma vma, ulong address)
        => ((address - vma.VmStart) >> HugePageShift(h)) + (vma.VmPgoff >> h.Order);

    /// <summary>
    /// hstate_sizelog: the hstate for MAP_HUGE_* (log2 of the size); 0 means default_hstate (2 MiB, x86's
    /// HPAGE_SIZE). Null when no hstate has that size: mmap fails with EINVAL.
    /// </summary>
    public static Hstate? HstateSizelog(Machine m, int pageSizeLog)
    {
        if (pageSizeLog == 0) return m.Hugetlb.Default;
        if (pageSizeLog >= 64) return null;
        return m.Hugetlb.ForSize(1UL << pageSizeLog);
    }

    // ---------------------------------------------------------------------------------------------
    // mmap: the inode, the reservation, the VMA operations
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// hugetlbfs_file_mmap for an anonymous private mapping, mmap_lock held for write: VM_HUGETLB and
    /// VM_DONTEXPAND are already in the flags; the VMA joins the inode's i_mmap and reserves its pages
    /// (hugetlb_reserve_pages). False: the pool could not reserve them (mmap fails with ENOMEM).
    /// </summary>
    public static bool HugetlbfsFileMmap(Vma vma, HugetlbFile file)
    {
        vma.Hugetlb.File = file;
        lock (file.IMmapLock) file.IMmap.Add(vma);
        Hstate h = file.H;
        ulong from = vma.VmPgoff >> h.Order, to = from + (vma.Size >> HugePageShift(h));
        return HugetlbReservePages(vma, from, to);
    }

    /// <summary>
    /// hugetlb_reserve_pages for a private mapping: VM_NORESERVE reserves nothing (faults then allocate
    /// without reserves); otherwise the whole range is reserved in the pool (hugetlb_acct_memory, which
    /// fails when the free pages and the allowed surplus cannot cover it) and the VMA becomes the owner
    /// of a new reservation map.
    /// </summary>
    private static bool HugetlbReservePages(Vma vma, ulong from, ulong to)
    {
        if ((vma.VmFlags & VmFlags.NoReserve) != 0) return true;
        Hstate h = HstateVma(vma);
        long chg = (long)(to - from);
        if (!vma.Mm.Machine.Hugetlb.HugetlbAcctMemory(h, chg)) return false;
        vma.Hugetlb.Resv = new ResvMap(to);
        vma.Hugetlb.ResvFlags = HugetlbVma.ResvOwner;
        return true;
    }

    /// <summary>hugetlb_vm_op_split: a hugetlb VMA splits only at a huge-page boundary (EINVAL otherwise). mmap_lock held for write.</summary>
    public static Errno HugetlbVmOpSplit(Vma vma, ulong addr)
        => (addr & ~HugePageMask(HstateVma(vma))) != 0 ? Errno.EINVAL : Errno.Success;

    /// <summary>
    /// hugetlb_vm_op_open for the new half of a split: it shares the owner's reservation map (kref_get) and
    /// joins the inode's i_mmap. mmap_lock held for write.
    /// </summary>
    public static void HugetlbVmOpOpen(Vma vma)
    {
        if (vma.Hugetlb.Resv is { } resv && (vma.Hugetlb.ResvFlags & HugetlbVma.ResvOwner) != 0) Interlocked.Increment(ref resv.Refs);
        HugetlbFile file = vma.Hugetlb.File!;
        lock (file.IMmapLock) file.IMmap.Add(vma);
    }

    /// <summary>
    /// dup_mmap's hugetlb_dup_vma_private then vm_ops->open for a fork child's VMA: a private mapping's
    /// child has no reservation map of its own and is not the owner; it maps the same inode.
    /// </summary>
    public static void HugetlbDupVma(Vma child, Vma parent)
    {
        child.Hugetlb = new HugetlbVma { File = parent.Hugetlb.File };
        HugetlbFile file = child.Hugetlb.File!;
        lock (file.IMmapLock) file.IMmap.Add(child);
    }

    /// <summary>
    /// hugetlb_vm_op_close (remove_vma), after the VMA's pages are unmapped: the owner gives back the
    /// reservations of its range that no fault consumed (hugetlb_acct_memory(h, -reserve)) and drops its
    /// reference on the map; the VMA leaves the inode's i_mmap. mmap_lock held for write.
    /// </summary>
    public static void HugetlbVmOpClose(Vma vma)
    {
        HugetlbFile? file = vma.Hugetlb.File;
        if (file is null) return;
        lock (file.IMmapLock) file.IMmap.Remove(vma);
        if (vma.Hugetlb.Resv is { } resv && (vma.Hugetlb.ResvFlags & HugetlbVma.ResvOwner) != 0)
        {
            Hstate h = file.H;
            ulong start = VmaHugecacheOffset(h, vma, vma.VmStart), end = VmaHugecacheOffset(h, vma, vma.VmEnd);
            long reserve = (long)(end - start) - resv.RegionCount(start, end);
            if (reserve != 0) vma.Mm.Machine.Hugetlb.HugetlbAcctMemory(h, -reserve);
            Interlocked.Decrement(ref resv.Refs); // kref_put(resv_map_release): the map itself is the GC's
        }
        vma.Hugetlb = default;
    }

    // ---------------------------------------------------------------------------------------------
    // huge_pte_offset / huge_pte_alloc / huge_pte_lockptr (mm/hugetlb.c's generic versions, x86)
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// huge_pte_offset: the PUD slot (1 GiB) or the PMD slot (2 MiB) mapping addr, as a pte_t pointer;
    /// null when an upper level is missing. mmap_lock held (page tables of a hugetlb VMA are freed only
    /// under it for write).
    /// </summary>
    public static Pte* HugePteOffset(MmStruct mm, ulong addr, ulong sz)
    {
        PhysicalMemory mem = mm.Machine.Memory;
        Pgd* pgd = PgTable.PgdOffset(mm, addr);
        if (PgTable.Get(pgd).IsNone(mm.Paging)) return null;
        P4d* p4d = PgTable.P4dOffset(mm, pgd, addr);
        P4d p4dval = PgTable.Get(p4d);
        if (!p4dval.Present) return null;
        Pud* pud = PgTable.PudOffset(mem, p4dval, addr);
        if (sz == Geometry.PudSize) return (Pte*)pud;
        Pud pudval = PgTable.Get(pud);
        if (!pudval.Present) return null;
        return (Pte*)PgTable.PmdOffset(mem, pudval, addr);
    }

    /// <summary>huge_pte_alloc: as huge_pte_offset, allocating the upper tables (no PMD sharing: private mappings never share). Null: out of memory.</summary>
    public static Pte* HugePteAlloc(Cpu cpu, MmStruct mm, ulong addr, ulong sz)
    {
        Pgd* pgd = PgTable.PgdOffset(mm, addr);
        P4d* p4d = PgTable.P4dAllocOffset(cpu, mm, pgd, addr);
        if (p4d == null) return null;
        Pud* pud = PgTable.PudAllocOffset(cpu, mm, p4d, addr);
        if (pud == null) return null;
        if (sz == Geometry.PudSize) return (Pte*)pud;
        return (Pte*)PgTable.PmdAllocOffset(cpu, mm, pud, addr);
    }

    /// <summary>huge_pte_lockptr: the split PMD lock for a 2 MiB entry, mm->page_table_lock for a 1 GiB one.</summary>
    public static int* HugePteLockptr(Hstate h, MmStruct mm, Pte* ptep)
        => h.Order == Geometry.PmdShift - Geometry.PageShift ? PgTable.PmdLockptr(mm.Machine, (Pmd*)ptep) : mm.PageTableLock;

    /// <summary>huge_pte_lock.</summary>
    public static int* HugePteLock(Hstate h, MmStruct mm, Pte* ptep)
    {
        int* ptl = HugePteLockptr(h, mm, ptep);
        Spin.Lock(ptl);
        return ptl;
    }

    /// <summary>hugetlb_mask_last_page: the bits to set to skip to the last huge page of a missing table.</summary>
    private static ulong HugetlbMaskLastPage(Hstate h)
        => h.Order == Geometry.PudShift - Geometry.PageShift ? Geometry.P4dSize - Geometry.PudSize : Geometry.PudSize - Geometry.PmdSize;

    /// <summary>make_huge_pte: young, huge, writable and dirty when asked, read-only otherwise.</summary>
    public static Pte MakeHugePte(Vma vma, ulong headPfn, bool writable)
    {
        Pte entry = Pte.PfnPte(headPfn, vma.VmPageProt);
        entry = writable ? entry.MkDirty().MkWrite() : entry.Wrprotect();
        return entry.MkYoung().MkHuge(); // arch_make_huge_pte: pte_mkhuge
    }

    /// <summary>is_hugetlb_entry_hwpoisoned: a non-present huge entry holding a hwpoison swap entry.</summary>
    public static bool IsHugetlbEntryHwpoisoned(Pte pte)
        => !pte.None && !pte.Present && SwpEntry.FromPte(pte).IsHwpoison;

    // ---------------------------------------------------------------------------------------------
    // rmap of a hugetlb folio (include/linux/rmap.h): _entire_mapcount and _large_mapcount, no MM IDs
    // ---------------------------------------------------------------------------------------------

    /// <summary>hugetlb_add_new_anon_rmap: one mapping, exclusive (PageAnonExclusive on the head). The PTL held; the folio is new.</summary>
    public static void HugetlbAddNewAnonRmap(Machine m, ulong headPfn, Vma vma, AnonVma anonVma, ulong haddr)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        Folio.EntireMapcount(head) = 0;
        Folio.LargeMapcount(head) = 0;
        head->Mapping = Rmap.AnonMapping(anonVma);
        head->Index = vma.LinearPageIndex(haddr);
        head->SetFlagAtomic(PG.AnonExclusive);
        m.Hugetlb.ClearRestoreReserve(headPfn); // the consumed reservation is the mapping's now
    }

    /// <summary>hugetlb_try_dup_anon_rmap: fork maps the folio once more; -EBUSY (false) when it is exclusive and may be pinned. Both PTLs held.</summary>
    public static bool HugetlbTryDupAnonRmap(Machine m, Page* head, MmStruct src)
    {
        if (head->TestFlag(PG.AnonExclusive))
        {
            if (src.HasPinned && Folio.MaybeDmaPinned(head)) return false; // folio_needs_cow_for_dma
            head->ClearFlagAtomic(PG.AnonExclusive);
        }
        Interlocked.Increment(ref Folio.EntireMapcount(head));
        Interlocked.Increment(ref Folio.LargeMapcount(head));
        return true;
    }

    /// <summary>hugetlb_remove_rmap. The PTL of the cleared entry held.</summary>
    public static void HugetlbRemoveRmap(Page* head)
    {
        Interlocked.Decrement(ref Folio.EntireMapcount(head));
        int after = Interlocked.Decrement(ref Folio.LargeMapcount(head));
        Bug.On(after < -1, "hugetlb folio: mapcount underflow ({0})", after);
    }

    /// <summary>folio_mapcount of a hugetlb folio.</summary>
    public static int HugetlbMapcount(Page* head) => Volatile.Read(ref Folio.LargeMapcount(head)) + 1;

    /// <summary>hugetlb_count_add / hugetlb_count_sub: mm->hugetlb_usage in base pages.</summary>
    public static void HugetlbCountAdd(MmStruct mm, long pages) => Interlocked.Add(ref mm.HugetlbUsage, pages);

    // ---------------------------------------------------------------------------------------------
    // Zap
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// __unmap_hugepage_range: each huge entry in [start, end) (huge-page aligned) cleared under its lock,
    /// its rmap and hugetlb_usage dropped, the folio handed to the gather; a hwpoison entry is just
    /// cleared. With refPage, only the entries mapping that folio go, and the VMA is marked
    /// HPAGE_RESV_UNMAPPED (unmap_ref_private). mmap_lock held (for read by MADV_DONTNEED); no PTL on entry or exit.
    /// </summary>
    public static void UnmapHugepageRange(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, ulong refPage = 0)
    {
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        Hstate h = HstateVma(vma);
        ulong sz = HugePageSize(h);
        Bug.On((start & ~HugePageMask(h)) != 0 || (end & ~HugePageMask(h)) != 0, "__unmap_hugepage_range: [{0:x}, {1:x}) is not huge-page aligned", start, end);
        ulong lastAddrMask = HugetlbMaskLastPage(h);
        for (ulong address = start; address < end; address += sz)
        {
            cpu.ServiceInterrupts();
            Pte* ptep = HugePteOffset(mm, address, sz);
            if (ptep == null)
            {
                address |= lastAddrMask;
                continue;
            }
            int* ptl = HugePteLock(h, mm, ptep);
            Pte pte = PgTable.Get(ptep);
            if (pte.None)
            {
                Spin.Unlock(ptl);
                continue;
            }
            if (!pte.Present)
            {
                // A hwpoison entry: the folio was unmapped and its reference dropped by memory_failure.
                PgTable.Set(ptep, default); // huge_pte_clear
                Spin.Unlock(ptl);
                continue;
            }
            ulong headPfn = pte.Pfn;
            if (refPage != 0)
            {
                if (headPfn != refPage)
                {
                    Spin.Unlock(ptl);
                    continue;
                }
                vma.Hugetlb.ResvFlags |= HugetlbVma.ResvUnmapped; // set_vma_resv_flags
            }
            if (tlb.FullMm) PgTable.Set(ptep, default);
            else PgTable.GetAndClear(ptep); // huge_ptep_get_and_clear
            tlb.AdjustRange(address, sz); // tlb_remove_huge_tlb_entry
            HugetlbCountAdd(mm, -PagesPerHugePage(h));
            HugetlbRemoveRmap(m.Vmemmap.PfnToPage(headPfn));
            Spin.Unlock(ptl);
            if (tlb.RemovePage(headPfn)) tlb.FlushMmu(); // tlb_remove_page_size
            if (refPage != 0) break;
        }
    }

    /// <summary>unmap_hugepage_range: __unmap_hugepage_range with a gather of its own. mmap_lock held.</summary>
    public static void UnmapHugepageRangeOwnGather(Cpu cpu, Vma vma, ulong start, ulong end, ulong refPage)
    {
        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(vma.Mm, fullmm: false);
        UnmapHugepageRange(cpu, tlb, vma, start, end, refPage);
        tlb.Finish();
    }

    // ---------------------------------------------------------------------------------------------
    // fork
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// copy_hugetlb_page_range: every huge entry of the parent's VMA is shared with the child
    /// (hugetlb_try_dup_anon_rmap, a reference, both write-protected), a hwpoison entry copied as it is;
    /// a folio that may be pinned is copied for the child instead, without the parent's reserve. Both
    /// mms' mmap_lock held for write; no PTL on entry or exit. ENOMEM when a table or the copy cannot be had.
    /// </summary>
    public static Errno CopyHugetlbPageRange(Cpu cpu, Vma dstVma, Vma srcVma)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        Machine m = src.Machine;
        bool cow = (srcVma.VmFlags & (VmFlags.Shared | VmFlags.MayWrite)) == VmFlags.MayWrite;
        Hstate h = HstateVma(srcVma);
        ulong sz = HugePageSize(h);
        int npages = PagesPerHugePage(h);
        ulong lastAddrMask = HugetlbMaskLastPage(h);
        for (ulong addr = srcVma.VmStart; addr < srcVma.VmEnd; addr += sz)
        {
            Pte* srcPte = HugePteOffset(src, addr, sz);
            if (srcPte == null)
            {
                addr |= lastAddrMask;
                continue;
            }
            Pte* dstPte = HugePteAlloc(cpu, dst, addr, sz);
            if (dstPte == null) return Errno.ENOMEM;
            int* dstPtl = HugePteLock(h, dst, dstPte);
            int* srcPtl = HugePteLockptr(h, src, srcPte);
            Spin.Lock(srcPtl); // spin_lock_nested
            Pte entry = PgTable.Get(srcPte);
            if (entry.None)
            {
            }
            else if (IsHugetlbEntryHwpoisoned(entry))
            {
                PgTable.Set(dstPte, entry);
            }
            else
            {
                ulong headPfn = entry.Pfn;
                Page* head = m.Vmemmap.PfnToPage(headPfn);
                Interlocked.Increment(ref head->RefCount); // folio_get
                if (!HugetlbTryDupAnonRmap(m, head, src))
                {
                    // Maybe pinned: the child gets its own copy now (do not use the parent's reserve).
                    Spin.Unlock(srcPtl);
                    Spin.Unlock(dstPtl);
                    ulong copy = HugetlbFault.AllocHugetlbFolioVma(cpu, dstVma, addr, avoidReserve: true);
                    if (copy == 0)
                    {
                        Folio.PutRefs(cpu, m, headPfn, 1);
                        return Errno.ENOMEM;
                    }
                    HugetlbFault.CopyUserHugePage(m, copy, headPfn, npages);
                    Folio.PutRefs(cpu, m, headPfn, 1);
                    dstPtl = HugePteLock(h, dst, dstPte);
                    Spin.Lock(srcPtl);
                    // Nothing else can change the parent's entry: both mms are held for write.
                    Bug.On(PgTable.Get(srcPte) != entry, "copy_hugetlb_page_range: the parent's entry at {0:x} changed under mmap_lock", addr);
                    HugetlbInstallFolio(m, dstVma, dstPte, addr, copy);
                    Spin.Unlock(srcPtl);
                    Spin.Unlock(dstPtl);
                    continue;
                }
                if (cow)
                {
                    PgTable.SetWrprotect(srcPte); // huge_ptep_set_wrprotect
                    entry = entry.Wrprotect();
                }
                PgTable.Set(dstPte, entry);
                HugetlbCountAdd(dst, npages);
            }
            Spin.Unlock(srcPtl);
            Spin.Unlock(dstPtl);
        }
        return Errno.Success;
    }

    /// <summary>hugetlb_install_folio: a fresh copy for the child, exclusive and writable. Both PTLs held.</summary>
    private static void HugetlbInstallFolio(Machine m, Vma vma, Pte* ptep, ulong addr, ulong headPfn)
    {
        m.Vmemmap.PfnToPage(headPfn)->SetFlag(PG.Uptodate);
        HugetlbAddNewAnonRmap(m, headPfn, vma, vma.AnonVma!, addr);
        PgTable.Set(ptep, MakeHugePte(vma, headPfn, writable: true));
        HugetlbCountAdd(vma.Mm, PagesPerHugePage(HstateVma(vma)));
    }

    // ---------------------------------------------------------------------------------------------
    // mprotect
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// hugetlb_change_protection: each present huge entry rewritten with huge_pte_modify between
    /// huge_ptep_modify_prot_start and _commit (never made writable here: a write fault decides), a
    /// hwpoison entry left alone; then flush_hugetlb_tlb_range. mmap_lock held for write.
    /// </summary>
    public static long HugetlbChangeProtection(Cpu cpu, Vma vma, ulong start, ulong end, ulong newprot)
    {
        MmStruct mm = vma.Mm;
        Hstate h = HstateVma(vma);
        ulong sz = HugePageSize(h);
        ulong lastAddrMask = HugetlbMaskLastPage(h);
        long pages = 0;
        for (ulong address = start; address < end; address += sz)
        {
            Pte* ptep = HugePteOffset(mm, address, sz);
            if (ptep == null)
            {
                address |= lastAddrMask;
                continue;
            }
            int* ptl = HugePteLock(h, mm, ptep);
            Pte pte = PgTable.Get(ptep);
            if (pte.Present)
            {
                Pte old = PgTable.GetAndClear(ptep);
                PgTable.Set(ptep, old.Modify(newprot).MkHuge());
                pages++;
            }
            Spin.Unlock(ptl);
        }
        if (pages != 0) TlbFlush.FlushMmRange(cpu, mm, start, end, HugePageShift(h), false);
        return pages << h.Order;
    }

    // ---------------------------------------------------------------------------------------------
    // GUP
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// hugetlb_follow_page_mask: under the entry's lock, the subpage for address with a reference on the
    /// folio grabbed (try_grab_folio: a reference, and a _pincount for FOLL_PIN), or 0 with the fault that
    /// makes it followable: a write fault for FOLL_WRITE on a read-only entry, an unshare for a read-only
    /// pin of a page that is not PageAnonExclusive (kept on the head for hugetlb), any fault for a missing
    /// or hwpoison entry. mmap_lock held for read.
    /// </summary>
    public static ulong HugetlbFollowPageMask(Vma vma, ulong address, Foll flags, out FaultFlags need)
    {
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        Hstate h = HstateVma(vma);
        need = (flags & Foll.Write) != 0 ? FaultFlags.Write : FaultFlags.None;
        Pte* ptep = HugePteOffset(mm, address & HugePageMask(h), HugePageSize(h));
        if (ptep == null) return 0;
        int* ptl = HugePteLock(h, mm, ptep);
        try
        {
            Pte entry = PgTable.Get(ptep);
            if (!entry.Present) return 0;
            ulong headPfn = entry.Pfn;
            Page* head = m.Vmemmap.PfnToPage(headPfn);
            if (!entry.Write)
            {
                if ((flags & Foll.Write) != 0) return 0;
                if (Gup.MustUnshare(vma, flags, zero: false, head, head))
                {
                    need = FaultFlags.Unshare;
                    return 0;
                }
            }
            Gup.Grab(head, flags);
            return headPfn + ((address & ~HugePageMask(h)) >> Geometry.PageShift);
        }
        finally
        {
            Spin.Unlock(ptl);
        }
    }

    /// <summary>The populate look for a hugetlb VMA (GUP's follow without a reference): present, and writable for a write.</summary>
    public static bool Populated(Vma vma, ulong address, bool write)
    {
        Hstate h = HstateVma(vma);
        Pte* ptep = HugePteOffset(vma.Mm, address & HugePageMask(h), HugePageSize(h));
        if (ptep == null) return false;
        Pte e = PgTable.Get(ptep);
        return e.Present && (!write || e.Write);
    }

    // ---------------------------------------------------------------------------------------------
    // memory_failure on a mapped hugetlb folio
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// memory_failure for a page of a hugetlb folio: the pool's part (PG_hwpoison on the folio, the raw
    /// page recorded; a free folio dissolved), then, for a folio in use, hwpoison_user_mappings: every
    /// mapping of it is replaced by a hwpoison entry, so that an access is SIGBUS with BUS_MCEERR_AR.
    /// The folio is freed by its last put, never handed out again. Returns 0 when handled, or the pool's
    /// error (-EHWPOISON: already poisoned; -EINVAL: not hugetlb; -ENOMEM: a free folio not dissolved).
    /// No lock held.
    /// </summary>
    public static int MemoryFailure(Cpu cpu, Machine m, ulong pfn)
    {
        int rc = m.Hugetlb.MemoryFailure(cpu.Id, pfn);
        if (rc != -(int)Errno.EBUSY) return rc;
        HwpoisonUserMappings(cpu, m, Folio.HeadPfn(m, pfn), pfn);
        return 0;
    }

    /// <summary>
    /// hwpoison_user_mappings → try_to_unmap for a hugetlb folio: the rmap walk finds each VMA of every
    /// live mm that maps the folio at the address its index gives (vma_address), under that mm's
    /// mmap_lock for read; the entry is cleared and flushed, the hwpoison entry of the raw page set in
    /// its place (set_huge_pte_at(make_hwpoison_entry)), hugetlb_usage and the rmap dropped, and the
    /// mapping's reference put.
    /// </summary>
    private static void HwpoisonUserMappings(Cpu cpu, Machine m, ulong headPfn, ulong pfn)
    {
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int order = Folio.Order(head);
        ulong index = head->Index;
        IReadOnlyList<MmStruct> mms = m.SplitQueue.LiveMms?.Invoke() ?? [];
        foreach (MmStruct mm in mms)
        {
            mm.MmapLock.ReadLock(cpu.Id);
            try
            {
                foreach (Vma vma in mm.Vmas)
                {
                    if (!IsVmHugetlbPage(vma) || HstateVma(vma).Order != order) continue;
                    if (index < vma.VmPgoff || index >= vma.VmPgoff + vma.Pages) continue;
                    ulong address = vma.VmStart + ((index - vma.VmPgoff) << Geometry.PageShift);
                    Hstate h = HstateVma(vma);
                    Pte* ptep = HugePteOffset(mm, address, HugePageSize(h));
                    if (ptep == null) continue;
                    int* ptl = HugePteLock(h, mm, ptep);
                    Pte e = PgTable.Get(ptep);
                    bool unmapped = false;
                    if (e.Present && e.Pfn == headPfn)
                    {
                        PgTable.GetAndClear(ptep); // ptep_clear_flush
                        TlbFlush.FlushMmRange(cpu, mm, address, address + HugePageSize(h), HugePageShift(h), false);
                        PgTable.Set(ptep, SwpEntry.ArchEncode(SwpEntry.SwpHwpoison, pfn));
                        HugetlbCountAdd(mm, -PagesPerHugePage(h));
                        HugetlbRemoveRmap(head);
                        unmapped = true;
                    }
                    Spin.Unlock(ptl);
                    if (unmapped) Folio.PutRefs(cpu, m, headPfn, 1);
                }
            }
            finally
            {
                mm.MmapLock.ReadUnlock(cpu.Id);
            }
        }
    }

    // ---------------------------------------------------------------------------------------------
    // smaps
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// smaps_hugetlb_range over the VMA: each mapped huge page counts in Shared_Hugetlb when its folio may
    /// be mapped shared (folio_maybe_mapped_shared: _entire_mapcount above one) or the entry is not
    /// present (a hwpoison entry: "maybe shared"), in Private_Hugetlb otherwise. Nothing counts in Rss.
    /// mmap_lock held for read.
    /// </summary>
    public static void SmapsHugetlbRange(Vma vma, ref long privateHugetlb, ref long sharedHugetlb)
    {
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        Hstate h = HstateVma(vma);
        ulong sz = HugePageSize(h);
        for (ulong address = vma.VmStart; address < vma.VmEnd; address += sz)
        {
            Pte* ptep = HugePteOffset(mm, address, sz);
            if (ptep == null) continue;
            int* ptl = HugePteLock(h, mm, ptep);
            Pte e = PgTable.Get(ptep);
            if (e.Present)
            {
                Page* head = m.Vmemmap.PfnToPage(e.Pfn);
                if (Folio.EntireMapcount(head) + 1 > 1) sharedHugetlb += (long)sz;
                else privateHugetlb += (long)sz;
            }
            else if (IsHugetlbEntryHwpoisoned(e))
            {
                sharedHugetlb += (long)sz;
            }
            Spin.Unlock(ptl);
        }
    }
}
