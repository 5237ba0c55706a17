using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Page-table pages: allocation and constructor (pagetable_alloc, pagetable_*_ctor), installation
/// (pmd_install and the upper levels' __pud_alloc/__p4d_alloc, written once), and the bookkeeping of a
/// table that leaves the tree (pagetable_dtor, pte_free_tlb, mm_dec_nr_ptes, the RCU free).
/// </summary>
internal static unsafe partial class PgTable
{
    /// <summary>pagetable_alloc + pagetable_*_ctor: a zeroed frame typed PGTY_table with its ptl initialised.</summary>
    public static ulong AllocTable(Cpu cpu, Machine m)
    {
        if (m.PageTableAllocFailurePending && m.ShouldFailPageTableAlloc()) return 0;
        ulong pfn = m.Allocator.AllocPages(cpu.Id, 0, Gfp.Zero);
        if (pfn == 0) return 0;
        Page* p = m.Vmemmap.PfnToPage(pfn);
        p->PageType = PageTypes.Table << 24;
        p->Ptl = 0;
        p->PmdHugePte = 0;
        m.Counters.Add(cpu.Id, VmStat.NrPageTablePages, 1);
        m.Counters.Add(cpu.Id, VmEvent.PgtableAlloc);
        return pfn;
    }

    /// <summary>
    /// pagetable_dtor: the page stops being a page table (NR_PAGETABLE drops) when it is removed from the
    /// tree; its frame may still be read by lockless walkers until RCU frees it. The ptl is not checked
    /// here: a walker may hold it for the moment it takes to see that the PMD changed.
    /// </summary>
    public static void TableDtor(Cpu cpu, Machine m, ulong pfn)
    {
        Page* p = m.Vmemmap.PfnToPage(pfn);
        Bug.On(p->PageType != PageTypes.Table << 24, "freeing page {0:x} as a page table, but it is not one", pfn);
        p->PageType = PageTypes.NoType;
        p->PtMm = 0;
        Bug.On(p->PtCowChecksum != 0, "page table {0:x} freed while it is shared copy-on-write", pfn);
        p->PtCowChecksum = 0;
        p->PtCowOwner = 0;
        m.Counters.Add(cpu.Id, VmStat.NrPageTablePages, -1);
        m.Counters.Add(cpu.Id, VmEvent.PgtableFree);
    }

    /// <summary>
    /// The RCU callback for a table removed from a live tree: in the invariant mode the frame is poisoned
    /// first, so a walker that still reaches it trips over an entry no user table can hold.
    /// </summary>
    public static void FreeTableRcu(Cpu cpu, Machine m, ulong pfn)
    {
        Page* p = m.Vmemmap.PfnToPage(pfn);
        Bug.On(p->Ptl != 0, "page table {0:x} freed after its grace period with its lock held", pfn);
        if (m.Config.DebugVm)
        {
            ulong* t = (ulong*)m.Memory.FrameAddress(pfn);
            for (int i = 0; i < Geometry.PtrsPerTable; i++) t[i] = Cpu.FreedTablePoison;
        }
        m.Allocator.FreePages(cpu.Id, pfn, 0);
    }

    /// <summary>pagetable_dtor + pagetable_free, for a table no walker can have seen (never published, or the PGD of a dead mm).</summary>
    public static void FreeTable(Cpu cpu, Machine m, ulong pfn)
    {
        Bug.On(m.Vmemmap.PfnToPage(pfn)->Ptl != 0, "freeing page table {0:x} while its lock is held", pfn);
        TableDtor(cpu, m, pfn);
        m.Allocator.FreePages(cpu.Id, pfn, 0);
    }

    /// <summary>pgd_alloc: a table frame whose kernel half is cloned from init_mm (pgd_ctor).</summary>
    public static ulong PgdAlloc(Cpu cpu, Machine m)
    {
        ulong pfn = AllocTable(cpu, m);
        if (pfn == 0) return 0;
        ulong* dst = (ulong*)m.Memory.FrameAddress(pfn);
        ulong* src = (ulong*)m.Memory.FrameAddress(m.Vmemmap.PgdPfn);
        for (int i = KernelPgdBoundary; i < Geometry.PtrsPerTable; i++) dst[i] = src[i]; // not yet visible to anyone
        return pfn;
    }

    // ---- Installing tables --------------------------------------------------------------------------

    /// <summary>The level of the table an entry points to, for <see cref="Install"/>.</summary>
    private enum TableLevel
    {
        /// <summary>A PTE table in a PMD entry: the split PMD lock, mm_inc_nr_ptes, the pre-install flush.</summary>
        Pte,
        /// <summary>A PMD table in a PUD entry (mm_inc_nr_pmds).</summary>
        Pmd,
        /// <summary>A PUD table in a P4D entry (mm_inc_nr_puds).</summary>
        Pud,
        /// <summary>A P4D table in a PGD entry (5-level only): not counted in pgtables_bytes.</summary>
        P4d,
    }

    /// <summary>
    /// pmd_install, and for the upper levels the same under mm->page_table_lock (they have no split lock):
    /// publish the freshly allocated, zeroed table in *slot unless another CPU got there first. True when
    /// ours went in; otherwise the caller still owns it. Every level points at its table with the same
    /// _PAGE_TABLE bits.
    /// </summary>
    private static bool Install(Cpu cpu, MmStruct mm, ulong* slot, ulong table, TableLevel level, ulong address)
    {
        int* tableLock = level == TableLevel.Pte ? PmdLockptr(mm.Machine, (Pmd*)slot) : mm.PageTableLock;
        Spin.Lock(tableLock);
        ulong now = Volatile.Read(ref *slot);
        // pmd_none for a PTE table; the upper levels test !pXd_present, as __pud_alloc and __p4d_alloc do.
        bool empty = level == TableLevel.Pte ? new Pmd(now).None : (now & PageTableBits.Present) == 0;
        if (empty)
        {
            if (level == TableLevel.Pte) ArchFlushTlbBeforeSetPtePage(cpu, mm, address);
            if (level != TableLevel.P4d) mm.AddPgtablesBytes(TableBytes); // mm_inc_nr_ptes / _pmds / _puds
            // smp_wmb() + pXd_populate: the release store orders the zeroed table (and, with pte_refcount,
            // its count) before the entry that lets lockless walkers and the MMU reach it.
            Volatile.Write(ref *slot, (table << Geometry.PageShift) | PageTableBits.PageTable);
        }
        Spin.Unlock(tableLock);
        return empty;
    }

    /// <summary>__pte_alloc: allocate a PTE table outside the lock and install it, or free it if another CPU won. False: out of memory.</summary>
    public static bool PteAlloc(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address) => AllocInstall(cpu, mm, (ulong*)pmd, TableLevel.Pte, address);

    /// <summary>__pte_alloc, __pmd_alloc, __pud_alloc, __p4d_alloc: allocate outside the lock, install, or free ours if another CPU won.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool AllocInstall(Cpu cpu, MmStruct mm, ulong* slot, TableLevel level, ulong address)
    {
        ulong table = AllocTable(cpu, mm.Machine);
        if (table == 0) return false;
        if (!Install(cpu, mm, slot, table, level, address)) FreeTable(cpu, mm.Machine, table);
        return true;
    }

    /// <summary>p4d_alloc: the P4D slot for address, allocating the P4D table with 5-level paging.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static P4d* P4dAllocOffset(Cpu cpu, MmStruct mm, Pgd* pgd, ulong address)
    {
        if (mm.Paging.L5Enabled && Get(pgd).Value == 0 && !AllocInstall(cpu, mm, (ulong*)pgd, TableLevel.P4d, address)) return null;
        return P4dOffset(mm, pgd, address);
    }

    /// <summary>pud_alloc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pud* PudAllocOffset(Cpu cpu, MmStruct mm, P4d* p4d, ulong address)
    {
        if (Get(p4d).None && !AllocInstall(cpu, mm, (ulong*)p4d, TableLevel.Pud, address)) return null;
        return PudOffset(mm.Machine.Memory, Get(p4d), address);
    }

    /// <summary>pmd_alloc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd* PmdAllocOffset(Cpu cpu, MmStruct mm, Pud* pud, ulong address)
    {
        if (Get(pud).None && !AllocInstall(cpu, mm, (ulong*)pud, TableLevel.Pmd, address)) return null;
        return PmdOffset(mm.Machine.Memory, Get(pud), address);
    }

    /// <summary>pgd_offset + p4d_alloc + pud_alloc + pmd_alloc: the PMD slot for address, allocating the levels above it. Null: out of memory.</summary>
    public static Pmd* PmdAllocFromPgd(Cpu cpu, MmStruct mm, ulong address)
    {
        P4d* p4d = P4dAllocOffset(cpu, mm, PgdOffset(mm, address), address);
        if (p4d == null) return null;
        Pud* pud = PudAllocOffset(cpu, mm, p4d, address);
        return pud == null ? null : PmdAllocOffset(cpu, mm, pud, address);
    }

    /// <summary>
    /// arch_flush_tlb_before_set_pte_page (x86, from the 2024 synchronous PT-reclaim series): a PMD cleared by a reclaim whose batched flush
    /// is still pending may leave other CPUs holding translations through the old table; installing a new
    /// table then would let one address translate through two tables. Flush the 2 MiB first. The RFC tests
    /// the mm's tlb_flush_pending, which any zap in flight sets; here only a pending reclaim of this very
    /// range counts, so a fault does not wait on another thread's unrelated MADV_DONTNEED. PMD lock held.
    /// </summary>
    public static void ArchFlushTlbBeforeSetPtePage(Cpu cpu, MmStruct mm, ulong address) => ArchFlushTlbBeforeSetHugePage(cpu, mm, address);

    /// <summary>arch_flush_tlb_before_set_huge_page: the same flush before a huge PMD is installed.</summary>
    public static void ArchFlushTlbBeforeSetHugePage(Cpu cpu, MmStruct mm, ulong address)
    {
        if (mm.Machine.Config.FlushTlbBeforeSetPmd && mm.ReclaimFlushPending(address & Geometry.PmdMask))
            TlbFlush.FlushMmRange(cpu, mm, address & Geometry.PmdMask, (address & Geometry.PmdMask) + Geometry.PmdSize, Geometry.PageShift, false);
    }

    // ---- Tables leaving the tree ---------------------------------------------------------------------

    /// <summary>
    /// pte_free_tlb + mm_dec_nr_ptes: a PTE table whose PMD entry was just cleared goes through the
    /// gather, whose flush makes it unreachable before RCU frees it. Every PTE table taken out of a live
    /// tree leaves through here or <see cref="PteFreeNow"/>.
    /// </summary>
    public static void PteFreeTlb(MmuGather tlb, ulong table, ulong address)
    {
        tlb.RemoveTable(table, address);
        tlb.Mm.AddPgtablesBytes(-TableBytes);
    }

    /// <summary>
    /// The same without a gather on this mm (pte_refcount's last put outside a zap): pagetable_dtor, the
    /// flush of the 2 MiB with freed_tables (which also retires the pending-reclaim note of the range),
    /// then call_rcu.
    /// </summary>
    public static void PteFreeNow(Cpu cpu, MmStruct mm, ulong table, ulong start)
    {
        mm.AddPgtablesBytes(-TableBytes);
        TableDtor(cpu, mm.Machine, table);
        TlbFlush.FlushMmRange(cpu, mm, start, start + Geometry.PmdSize, Geometry.PageShift, freedTables: true);
        mm.ReclaimedPmdFlushed(start);
        mm.Machine.Rcu.CallRcuFreeTable(cpu, table);
    }

    /// <summary>zap_deposited_table's pte_free + mm_dec_nr_ptes: a withdrawn table no walker could reach.</summary>
    public static void PteFreeDeposited(Cpu cpu, MmStruct mm, ulong table)
    {
        FreeTable(cpu, mm.Machine, table);
        mm.AddPgtablesBytes(-TableBytes);
    }

    // ---- The VmPTE cross-check --------------------------------------------------------------------

    /// <summary>
    /// Counts the page-table pages of the user half by walking them, as a cross-check of
    /// mm_pgtables_bytes (PTE, PMD and PUD tables count, a huge PMD's deposited table too; PGD and P4D
    /// do not). mmap_lock held for write.
    /// </summary>
    public static long RecountPgtablesBytes(MmStruct mm)
    {
        var recount = new RecountWalk();
        PageWalk.WalkRange(null, mm, 0, KernelPgdBoundary * mm.Paging.PgdirSize, ref recount);
        return recount.Tables * (long)Geometry.PageSize;
    }

    /// <summary>The recount as walk callbacks: every non-none entry above the PTE level points to a counted table (or, for a huge PMD, has one deposited).</summary>
    private struct RecountWalk : IPageWalkOps
    {
        public long Tables;

        public readonly PteWalk PteWalk => PteWalk.None;
        public readonly MmuGather? Tlb => null;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>The PUD table.</summary>
        public WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next)
        {
            Tables++;
            return WalkAction.Subtree;
        }

        /// <summary>The PMD table.</summary>
        public WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next)
        {
            Tables++;
            return WalkAction.Subtree;
        }

        /// <summary>A PTE table, or the one deposited under a huge PMD.</summary>
        public WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            Tables++;
            return WalkAction.Continue;
        }

        public readonly int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end) => 1;
        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }
    }
}
