using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// The ptep_* side: the one place that reads and writes entries inside table frames, finds the
/// split page-table locks, and allocates and frees page-table pages (pgtable-generic.c, memory.c's
/// __pte_alloc/__pmd_alloc/__pud_alloc, x86's pgtable.c).
/// </summary>
/// <remarks>
/// Entries are 8-byte aligned words read by lockless walkers (the MMU, the fault path before it takes
/// the PTL), so every store is a single Volatile.Write (WRITE_ONCE/set_pte) and every read-modify-write
/// that can race with the MMU's A/D update is Interlocked (ptep_get_and_clear's xchg, cmpxchg loops).
/// </remarks>
internal static unsafe class PgTable
{
    /// <summary>The PGD index where the kernel half starts (KERNEL_PGD_BOUNDARY for PAGE_OFFSET's half).</summary>
    public const int KernelPgdBoundary = 256;

    // ---- Offsets: pgd_offset, p4d_offset, pud_offset, pmd_offset, pte_offset_kernel ------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* PgdOffset(MmStruct mm, ulong address)
        => (ulong*)mm.Machine.Memory.FrameAddress(mm.PgdPfn) + mm.Paging.PgdIndex(address);

    /// <summary>p4d_offset: with a folded P4D, the PGD slot itself.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* P4dOffset(MmStruct mm, ulong* pgd, ulong address)
        => mm.Paging.L5Enabled ? (ulong*)mm.Machine.Memory.FrameAddress(new Pgd(Volatile.Read(ref *pgd)).Pfn) + Geometry.P4dIndex(address) : pgd;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* PudOffset(PhysicalMemory mem, ulong p4dval, ulong address)
        => (ulong*)mem.FrameAddress(new P4d(p4dval).Pfn) + Geometry.PudIndex(address);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* PmdOffset(PhysicalMemory mem, ulong pudval, ulong address)
        => (ulong*)mem.FrameAddress(new Pud(pudval).Pfn) + Geometry.PmdIndex(address);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* PteOffset(PhysicalMemory mem, ulong pmdval, ulong address)
        => (ulong*)mem.FrameAddress(new Pmd(pmdval).Pfn) + Geometry.PteIndex(address);

    /// <summary>The frame that holds an entry (virt_to_page of a table pointer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TablePfnOf(PhysicalMemory mem, ulong* entry) => (ulong)((byte*)entry - mem.Base) >> Geometry.PageShift;

    // ---- Entry access ----------------------------------------------------------------------------

    /// <summary>ptep_get / pmdp_get / READ_ONCE of any entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong Get(ulong* entry)
    {
        ulong v = Volatile.Read(ref *entry);
#if DEBUG
        // KASAN's part for page tables, in debug builds: the invariant mode poisons a table when RCU frees
        // it, so a software walker that reads the poison read a table it did not hold (no lock, no RCU).
        if (v == Cpu.FreedTablePoison) ReadAfterFree(entry);
#endif
        return v;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void ReadAfterFree(ulong* entry)
        => Bug.Throw($"page-table read after free: a software walker read the poison of a freed table at {(ulong)entry:x}");

    /// <summary>set_pte / set_pmd / WRITE_ONCE: a single store that publishes the entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(ulong* entry, ulong value) => Volatile.Write(ref *entry, value);

    /// <summary>ptep_get_and_clear: xchg, because the MMU may set A/D concurrently.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong GetAndClear(ulong* entry) => Interlocked.Exchange(ref *entry, 0);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong CmpXchg(ulong* entry, ulong newValue, ulong expected) => Interlocked.CompareExchange(ref *entry, newValue, expected);

    /// <summary>ptep_set_wrprotect: clear RW with a cmpxchg loop so a concurrent hardware Dirty is not lost.</summary>
    public static void SetWrprotect(ulong* entry)
    {
        ulong old = Get(entry);
        while (true)
        {
            ulong want = new Pte(old).Wrprotect().Value;
            ulong seen = CmpXchg(entry, want, old);
            if (seen == old) return;
            old = seen;
        }
    }

    // ---- Split page-table locks ------------------------------------------------------------------

    /// <summary>pte_lockptr: the ptl in the struct page of the PTE table *pmd points to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int* PteLockptr(Machine m, ulong pmdval) => &m.Vmemmap.PfnToPage(new Pmd(pmdval).Pfn)->Ptl;

    /// <summary>pmd_lockptr: the split PMD lock, in the struct page of the PMD table holding the entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int* PmdLockptr(Machine m, ulong* pmd) => &m.Vmemmap.PfnToPage(TablePfnOf(m.Memory, pmd))->Ptl;

    /// <summary>
    /// pte_offset_map_lock: lock the PTE table *pmd points to and return the entry, or null when the PMD
    /// is no longer a table - the caller retries, as in the kernel. The table may be reclaimed by another
    /// CPU until its lock is held and the PMD re-checked, so the read of the PMD and the locking happen
    /// inside an RCU read-side section: the ptl word cannot be recycled under the spin. A caller that
    /// holds a pte_refcount on the table passes its struct page (<paramref name="held"/>) and needs neither: the table stays.
    /// </summary>
    public static ulong* PteOffsetMapLock(Cpu cpu, Machine m, ulong* pmd, ulong address, out int* ptl, Page* held = null)
    {
        if (held != null)
        {
            ulong pmdval = Get(pmd);
            if (new Pmd(pmdval).None || new Pmd(pmdval).Leaf) { ptl = null; return null; }
            ptl = &held->Ptl;
            Spin.Lock(ptl);
            return PteOffset(m.Memory, pmdval, address);
        }
        cpu.RcuReadLock();
        try
        {
            while (true)
            {
                ulong pmdval = Get(pmd);
                if (new Pmd(pmdval).None || new Pmd(pmdval).Leaf) { ptl = null; return null; }
                ptl = PteLockptr(m, pmdval);
                Spin.Lock(ptl);
                // pmd_same: the table must still be the one we locked; holding its lock now pins it.
                if (Get(pmd) == pmdval) return PteOffset(m.Memory, pmdval, address);
                Spin.Unlock(ptl);
            }
        }
        finally
        {
            cpu.RcuReadUnlock();
        }
    }

    // ---- Table pages -------------------------------------------------------------------------------

    /// <summary>pagetable_alloc + pagetable_*_ctor: a zeroed frame typed PGTY_table with its ptl initialised.</summary>
    public static ulong AllocTable(Cpu cpu, Machine m)
    {
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
        for (int i = KernelPgdBoundary; i < Geometry.PtrsPerTable; i++) dst[i] = src[i];
        return pfn;
    }

    /// <summary>
    /// __pte_alloc / pmd_install: allocate a PTE table outside the lock, then install it under the PMD
    /// lock unless another CPU won the race, in which case ours is freed. False: out of memory.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static bool PteAlloc(Cpu cpu, MmStruct mm, ulong* pmd, ulong address)
    {
        Machine m = mm.Machine;
        ulong table = AllocTable(cpu, m);
        if (table == 0) return false;
        int* ptl = PmdLockptr(m, pmd);
        Spin.Lock(ptl);
        if (new Pmd(Get(pmd)).None)
        {
            ArchFlushTlbBeforeSetPtePage(cpu, mm, address);
            mm.AddPgtablesBytes(Geometry.PtrsPerPte * sizeof(ulong)); // mm_inc_nr_ptes
            // smp_wmb(): the zeroed table is visible before the PMD that publishes it (release store).
            Set(pmd, Pmd.MkTable(table).Value);
            table = 0;
        }
        Spin.Unlock(ptl);
        if (table != 0) FreeTable(cpu, m, table);
        return true;
    }

    /// <summary>
    /// arch_flush_tlb_before_set_pte_page (x86, seed 002): a PMD cleared by a reclaim whose batched flush
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

    // ---- pte_refcount (PtReclaim = Refcount) -------------------------------------------------------
    //
    // A PTE table's count is the number of its non-none entries plus the walkers using it. Walkers
    // take a reference with PteTryGet (never from zero: a table at zero is being freed) and drop it
    // with PtePut; the put that reaches zero clears the PMD under the PMD lock and frees the table.

    /// <summary>pte_try_get: a reference on the table *pmd points to, or 0 if there is none (or it is dying).</summary>
    /// <remarks>
    /// Inside an RCU read-side section, so the table read from the PMD cannot be freed and reused before
    /// the count is raised; the PMD is re-read after, since the table may have been replaced meanwhile.
    /// Nothing in between can throw, so the section needs no finally.
    /// </remarks>
    public static ulong PteTryGet(Cpu cpu, Machine m, ulong* pmd)
    {
        cpu.RcuReadLock();
        ulong table = 0;
        while (true)
        {
            ulong pmdval = Get(pmd);
            if (new Pmd(pmdval).None || new Pmd(pmdval).Leaf) break;
            if (PteGetUnlessZero(m, pmd, pmdval) != null)
            {
                table = new Pmd(pmdval).Pfn;
                break;
            }
            if (Get(pmd) == pmdval) break; // at zero: its freer is about to clear the PMD
        }
        cpu.RcuReadUnlock();
        return table;
    }

    /// <summary>
    /// pte_get_unless_zero on the table pmdval points to, read from *pmd inside an RCU read-side section
    /// (the caller's): the table's struct page, or null if its count is zero (dying) or *pmd no longer
    /// points to it afterwards.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Page* PteGetUnlessZero(Machine m, ulong* pmd, ulong pmdval)
    {
        Page* table = m.Vmemmap.PfnToPage(new Pmd(pmdval).Pfn);
        int c;
        do
        {
            c = Volatile.Read(ref table->PteRefcount);
            if (c == 0) return null;
        } while (Interlocked.CompareExchange(ref table->PteRefcount, c + 1, c) != c);
        // The CAS is a full barrier, so this re-read of *pmd follows the raised count: if the PMD still
        // points at the table, the reference is on the table installed here, not on a frame taken out of
        // this PMD (and perhaps reused) between the first read and the CAS.
        if (Get(pmd) == pmdval) return table;
        Interlocked.Decrement(ref table->PteRefcount); // raced with a replacement; that table is someone else's to free
        return null;
    }

    /// <summary>
    /// pte_alloc_get: a reference on the PTE table for address, allocating and installing one if needed.
    /// 0 when out of memory, or when the PMD is (or became) huge: there is no table to hold.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong PteAllocGet(Cpu cpu, MmStruct mm, ulong* pmd, ulong address)
    {
        ulong table = PteTryGet(cpu, mm.Machine, pmd);
        return table != 0 ? table : PteAllocGetSlow(cpu, mm, pmd, address);
    }

    /// <summary>pte_alloc_get without a table to take: install one, or wait out a dying one.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong PteAllocGetSlow(Cpu cpu, MmStruct mm, ulong* pmd, ulong address)
    {
        Machine m = mm.Machine;
        var spin = new SpinWait();
        while (true)
        {
            ulong table = PteTryGet(cpu, m, pmd);
            if (table != 0) return table;
            var now = new Pmd(Get(pmd));
            if (now.Leaf) return 0;
            if (!now.None)
            {
                spin.SpinOnce(sleep1Threshold: -1); // a table at zero: its freer is about to clear the PMD
                continue;
            }
            table = AllocTable(cpu, m);
            if (table == 0) return 0;
            m.Vmemmap.PfnToPage(table)->PteRefcount = 1; // the installing walker's reference
            int* ptl = PmdLockptr(m, pmd);
            Spin.Lock(ptl);
            bool installed = new Pmd(Get(pmd)).None;
            if (installed)
            {
                ArchFlushTlbBeforeSetPtePage(cpu, mm, address);
                mm.AddPgtablesBytes(Geometry.PtrsPerPte * sizeof(ulong));
                Set(pmd, Pmd.MkTable(table).Value);
            }
            Spin.Unlock(ptl);
            if (installed) return table;
            m.Vmemmap.PfnToPage(table)->PteRefcount = 0;
            FreeTable(cpu, m, table);
        }
    }

    /// <summary>pte_get_many: n entries of the table became non-none.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PteGetMany(Machine m, ulong table, int n) => Interlocked.Add(ref m.Vmemmap.PfnToPage(table)->PteRefcount, n);

    /// <summary>
    /// pte_put_many: drop n references (cleared entries and/or the caller's walker reference). The last
    /// one frees the table: PMD cleared under its lock, then the table goes through the gather if one is
    /// running (its flush covers it), else it is flushed here and handed to RCU.
    /// </summary>
    public static void PtePut(Cpu cpu, MmStruct mm, ulong* pmd, ulong table, int n, ulong address, MmuGather? tlb)
    {
        Machine m = mm.Machine;
        int after = Interlocked.Add(ref m.Vmemmap.PfnToPage(table)->PteRefcount, -n);
        Bug.On(after < 0, "pte_refcount of table {0:x} went negative", table);
        if (after != 0) return;

        ulong start = address & Geometry.PmdMask;
        bool gathered = tlb is not null && tlb.InUse && ReferenceEquals(tlb.Mm, mm);
        int* pml = PmdLockptr(m, pmd);
        Spin.Lock(pml);
        bool cleared = Get(pmd) is var v && !new Pmd(v).None && !new Pmd(v).Leaf && new Pmd(v).Pfn == table;
        if (cleared)
        {
            if (m.Config.DebugVm)
            {
                ulong* t = (ulong*)m.Memory.FrameAddress(table);
                for (int i = 0; i < Geometry.PtrsPerPte; i++) Bug.On(!new Pte(t[i]).None, "table {0:x} freed at refcount 0 with entry {1} in use", table, i);
            }
            Set(pmd, 0);
            mm.AddPgtablesBytes(-Geometry.PtrsPerPte * sizeof(ulong)); // mm_dec_nr_ptes
            if (gathered) tlb!.NoteReclaimedPmd(start);
            else mm.NoteReclaimedPmd(start);
        }
        Spin.Unlock(pml);
        if (!cleared) return;
        m.Counters.Add(cpu.Id, VmEvent.PtReclaim);
        TestHooks.AfterPmdCleared?.Invoke(cpu, mm, start);
        if (gathered)
        {
            tlb!.RemoveTable(table, start);
        }
        else
        {
            TableDtor(cpu, m, table);
            TlbFlush.FlushMmRange(cpu, mm, start, start + Geometry.PmdSize, Geometry.PageShift, freedTables: true);
            mm.ReclaimedPmdFlushed(start);
            m.Rcu.CallRcuFreeTable(cpu, table);
        }
    }

    /// <summary>__pmd_alloc: a PMD table for *pud (mm_inc_nr_pmds).</summary>
    public static bool PmdAlloc(Cpu cpu, MmStruct mm, ulong* pud) => InstallUpperTable(cpu, mm, pud, Geometry.PtrsPerPmd * sizeof(ulong));

    /// <summary>__pud_alloc: a PUD table for *p4d (mm_inc_nr_puds).</summary>
    public static bool PudAlloc(Cpu cpu, MmStruct mm, ulong* p4d) => InstallUpperTable(cpu, mm, p4d, Geometry.PtrsPerPud * sizeof(ulong));

    /// <summary>__p4d_alloc (5-level only): a P4D table for *pgd; P4D tables are not counted in pgtables_bytes.</summary>
    public static bool P4dAlloc(Cpu cpu, MmStruct mm, ulong* pgd) => InstallUpperTable(cpu, mm, pgd, 0);

    /// <summary>
    /// The common body of __pmd_alloc, __pud_alloc and __p4d_alloc: allocate outside the lock, install
    /// under mm->page_table_lock (these levels have no split lock) unless another CPU got there first,
    /// in which case ours is freed. Every upper level points at its table with the same _PAGE_TABLE bits.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool InstallUpperTable(Cpu cpu, MmStruct mm, ulong* slot, long accountBytes)
    {
        Machine m = mm.Machine;
        ulong table = AllocTable(cpu, m);
        if (table == 0) return false;
        Spin.Lock(mm.PageTableLock);
        if ((Get(slot) & PageTableBits.Present) == 0)
        {
            if (accountBytes != 0) mm.AddPgtablesBytes(accountBytes);
            Set(slot, (table << Geometry.PageShift) | PageTableBits.PageTable); // pud/p4d/pgd_populate
            table = 0;
        }
        Spin.Unlock(mm.PageTableLock);
        if (table != 0) FreeTable(cpu, m, table);
        return true;
    }

    /// <summary>p4d_alloc: the P4D slot for address, allocating the table with 5-level paging.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* P4dAllocOffset(Cpu cpu, MmStruct mm, ulong* pgd, ulong address)
    {
        if (mm.Paging.L5Enabled && Get(pgd) == 0 && !P4dAlloc(cpu, mm, pgd)) return null;
        return P4dOffset(mm, pgd, address);
    }

    /// <summary>pud_alloc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* PudAllocOffset(Cpu cpu, MmStruct mm, ulong* p4d, ulong address)
    {
        if (new P4d(Get(p4d)).None && !PudAlloc(cpu, mm, p4d)) return null;
        return PudOffset(mm.Machine.Memory, Get(p4d), address);
    }

    /// <summary>pmd_alloc.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong* PmdAllocOffset(Cpu cpu, MmStruct mm, ulong* pud, ulong address)
    {
        if (new Pud(Get(pud)).None && !PmdAlloc(cpu, mm, pud)) return null;
        return PmdOffset(mm.Machine.Memory, Get(pud), address);
    }

    /// <summary>
    /// Counts the page-table pages of the user half by walking them, as a cross-check of
    /// mm_pgtables_bytes (PTE, PMD and PUD tables count, a huge PMD's deposited table too; PGD and P4D
    /// do not). mmap_lock held for write.
    /// </summary>
    public static long RecountPgtablesBytes(MmStruct mm)
    {
        PhysicalMemory mem = mm.Machine.Memory;
        long tables = 0;
        ulong* pgd = (ulong*)mem.FrameAddress(mm.PgdPfn);
        for (int i = 0; i < KernelPgdBoundary; i++)
        {
            ulong pgdval = Get(pgd + i);
            if (pgdval == 0) continue;
            int p4ds = mm.Paging.L5Enabled ? Geometry.PtrsPerTable : 1;
            ulong* p4dTable = mm.Paging.L5Enabled ? (ulong*)mem.FrameAddress(new Pgd(pgdval).Pfn) : pgd + i;
            for (int j = 0; j < p4ds; j++)
            {
                ulong p4dval = Get(p4dTable + j);
                if (new P4d(p4dval).None) continue;
                tables++; // the PUD table
                ulong* pud = (ulong*)mem.FrameAddress(new P4d(p4dval).Pfn);
                for (int k = 0; k < Geometry.PtrsPerPud; k++)
                {
                    ulong pudval = Get(pud + k);
                    if (new Pud(pudval).None) continue;
                    tables++; // the PMD table
                    ulong* pmd = (ulong*)mem.FrameAddress(new Pud(pudval).Pfn);
                    for (int l = 0; l < Geometry.PtrsPerPmd; l++)
                        if (!new Pmd(Get(pmd + l)).None) tables++; // a PTE table, or the one deposited under a huge PMD
                }
            }
        }
        return tables * (long)Geometry.PageSize;
    }

    /// <summary>
    /// The walk without allocation (follow_page-style): the PTE slot mapping address, or null when a
    /// level is missing. Callers hold mmap_lock for write, or are inside an RCU read-side section (a
    /// reclaim may free the PTE table otherwise); the PTE itself is read without the PTL.
    /// </summary>
    public static ulong* WalkToPte(MmStruct mm, ulong address)
    {
        ulong* pmd = WalkToPmd(mm, address);
        if (pmd == null) return null;
        ulong pmdval = Get(pmd);
        if (new Pmd(pmdval).None || new Pmd(pmdval).Leaf) return null;
        return PteOffset(mm.Machine.Memory, pmdval, address);
    }

    /// <summary>The PMD entry covering address, or null when an upper level is none (no allocation).</summary>
    public static ulong* WalkToPmd(MmStruct mm, ulong address)
    {
        PhysicalMemory mem = mm.Machine.Memory;
        ulong* pgd = PgdOffset(mm, address);
        if (new Pgd(Get(pgd)).IsNone(mm.Paging)) return null;
        ulong* p4d = P4dOffset(mm, pgd, address);
        ulong p4dval = Get(p4d);
        if (new P4d(p4dval).None) return null;
        ulong* pud = PudOffset(mem, p4dval, address);
        ulong pudval = Get(pud);
        if (new Pud(pudval).None) return null;
        return PmdOffset(mem, pudval, address);
    }
}
