using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>What a walker does with the entries of a PTE table it maps (PgTable.PteOffsetMapLock).</summary>
internal enum PteAccess : byte
{
    /// <summary>Reads them (smaps_pte_range, follow_page_pte).</summary>
    Read,
    /// <summary>Changes them (zap, mprotect, the fault path): the table passes <see cref="PgTable.BreakSharedTable"/> first.</summary>
    Write,
}

/// <summary>
/// A PTE table mapped by the pte_offset_map family: the entry asked for, and what pte_unmap /
/// pte_unmap_unlock need to undo the mapping.
/// </summary>
internal unsafe struct PteMapping
{
    /// <summary>The entry for the address mapped; null when the PMD held no table to map.</summary>
    public Pte* Pte;
    /// <summary>The table's lock: non-null exactly while it is held.</summary>
    public int* Ptl;
    /// <summary>The PMD the table was mapped from (when mapping failed: the value seen).</summary>
    public Pmd PmdVal;
    /// <summary>pte_refcount: the table this mapping holds a walker reference on (0: none held).</summary>
    public ulong Table;
    /// <summary>Non-none entries the holder added (positive) or cleared (negative): settled with the reference at the unmap.</summary>
    public int Entries;
    /// <summary>Inside an RCU read-side section (the _nolock variants), ended by the unmap.</summary>
    public bool Rcu;
    /// <summary>Set by a walker's pte_entry: end this pass over the table (the walk maps it again at the next address).</summary>
    public bool Break;
    /// <summary>The map failed because a shared PTE table could not be broken (no memory for its copy).</summary>
    public bool Oom;
}

/// <summary>
/// The pte_offset_map family (mm/pgtable-generic.c) and pte_refcount: how anything outside the MMU gets
/// at the entries of a PTE table that another CPU may free. The rules live here and nowhere else:
/// <list type="bullet">
/// <item>PtReclaim Sync and Off: the PMD is read and the table's lock taken inside an RCU read-side
/// section, then the PMD re-read (pmd_same). Once that holds, the lock pins the table: a reclaim frees
/// only a table whose lock it held when it cleared the PMD. The kernel keeps rcu_read_lock until
/// pte_unmap; here the section ends once the lock is held, since nothing after needs it.</item>
/// <item>PtReclaim Refcount (the 2021 series): the last reference frees the table without its lock, so
/// every mapping holds a pte_refcount (pte_try_get) until its unmap, which also settles the entries the
/// holder added or cleared (pte_get_many / pte_put_many).</item>
/// <item>The lockless look (ro_nolock) stays inside its RCU section until pte_unmap: the frame cannot be
/// freed meanwhile, whatever the mode; what it reads may be stale.</item>
/// </list>
/// </summary>
internal static unsafe partial class PgTable
{
    // ---- The copy-on-write page-table hook ---------------------------------------------------------

    /// <summary>
    /// The one place that decides "this PTE table is shared: break it first". Every path about to change
    /// entries of the table *pmd points to comes through here before it maps the table: the walkers that
    /// map with <see cref="PteAccess.Write"/> (zap, mprotect) and pte_alloc_map_lock. A PMD that points to a
    /// table with RW clear (<see cref="IsCowTable"/>; pmd_populate always sets RW, so without copy-on-write
    /// page tables it never matches) → break_cow_pte (<see cref="BreakCowPte"/>: reuse the table and make
    /// the PMD writable when its count is 1, else copy it into a new table and drop a reference on the
    /// shared one). Zap asks first to drop its reference only (<see cref="ZapCowPte"/>); the fault path
    /// breaks in <see cref="PteOffsetMapRwNolock"/>, where the PMD is already loaded. False: out of memory
    /// for the copy, and the caller's map fails with <see cref="PteMapping.Oom"/>.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool BreakSharedTable(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, string who)
        => !IsCowTable(Get(pmd)) || BreakCowPte(cpu, mm, pmd, address, who);

    /// <summary>The fault path's map functions come after its break: in the invariant mode, a table still shared here is a bug.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CheckFaultTableNotShared(MmStruct mm, Pmd* pmd, ulong address)
    {
        if (mm.Machine.Config.DebugVm) CheckTableNotShared(pmd, address);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void CheckTableNotShared(Pmd* pmd, ulong address)
    {
        Pmd pmdval = Get(pmd);
        Bug.On(IsCowTable(pmdval),
            "the fault path is about to change entries of the shared PTE table under PMD {0:x16} at {1:x} without having broken it", pmdval.Value, address);
    }

    // ---- pte_offset_map_lock and pte_unmap_unlock ----------------------------------------------------

    /// <summary>
    /// pte_offset_map_lock: the table *pmd points to, locked, with the entry for address; false (nothing
    /// held, <paramref name="map"/>.PmdVal the PMD seen) when the PMD is none or huge, or, with pte_refcount,
    /// holds a table already at zero. Undone by PteUnmapUnlock.
    /// </summary>
    public static bool PteOffsetMapLock(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, PteAccess access, out PteMapping map, string who = "pte_offset_map_lock")
    {
        map = default;
        if (access == PteAccess.Write && !BreakSharedTable(cpu, mm, pmd, address, who))
        {
            map.Oom = true;
            map.PmdVal = Get(pmd);
            return false;
        }
        Machine m = mm.Machine;
        if (m.Config.PtReclaim != PtReclaimMode.Refcount)
        {
            map.Pte = PteOffsetMapLock(cpu, m, pmd, address, out map.Ptl, out map.PmdVal);
            return map.Pte != null;
        }
        map.Table = PteTryGet(cpu, m, pmd, out map.PmdVal);
        return map.Table != 0 && LockHeldTable(cpu, mm, pmd, address, ref map);
    }

    /// <summary>The lock of the table map.Table, on which the caller just took a reference; the reference goes again if the PMD no longer holds a table.</summary>
    private static bool LockHeldTable(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, ref PteMapping map)
    {
        Machine m = mm.Machine;
        map.Pte = PteOffsetMapLockHeld(m, pmd, address, m.Vmemmap.PfnToPage(map.Table), out map.Ptl, out map.PmdVal);
        if (map.Pte != null) return true;
        PtePut(cpu, mm, pmd, map.Table, 1, address, null);
        map.Table = 0;
        return false;
    }

    /// <summary>
    /// pte_unmap_unlock: drop the table's lock, then (pte_refcount) the walker's reference together with
    /// the entries it cleared, or take the references of the entries it added. The reference goes after
    /// the lock: the last put takes the PMD lock, which nests outside the PTE lock. A put that frees the
    /// table hands it to <paramref name="tlb"/> when that gather is running on this mm.
    /// </summary>
    public static void PteUnmapUnlock(Cpu cpu, MmStruct mm, Pmd* pmd, ref PteMapping map, ulong address, MmuGather? tlb)
    {
        Spin.Unlock(map.Ptl);
        map.Ptl = null;
        if (map.Table == 0) return;
        int settle = map.Entries - 1; // the walker's own reference goes
        if (settle > 0) PteGetMany(mm.Machine, map.Table, settle);
        else if (settle < 0) PtePut(cpu, mm, pmd, map.Table, -settle, address, tlb);
        map.Table = 0;
        map.Entries = 0;
    }

    /// <summary>
    /// pte_alloc_map_lock: the table for address, allocated and installed if the PMD is none, then mapped
    /// and locked for writing. False: out of memory (or the PMD turned huge meanwhile).
    /// </summary>
    public static bool PteAllocMapLock(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, out PteMapping map)
    {
        Machine m = mm.Machine;
        if (m.Config.PtReclaim != PtReclaimMode.Refcount)
        {
            if (Get(pmd).None && !PteAlloc(cpu, mm, pmd, address)) { map = default; return false; }
            return PteOffsetMapLock(cpu, mm, pmd, address, PteAccess.Write, out map, "pte_alloc_map_lock");
        }
        map = default;
        if (!BreakSharedTable(cpu, mm, pmd, address, "pte_alloc_map_lock")) { map.Oom = true; return false; }
        map.Table = PteAllocGet(cpu, mm, pmd, address); // pte_alloc_get: the reference comes with the table
        return map.Table != 0 && LockHeldTable(cpu, mm, pmd, address, ref map);
    }

    /// <summary>pte_offset_map_ro_nolock: a lockless look at the table, inside an RCU read-side section that PteUnmap ends.</summary>
    public static bool PteOffsetMapRoNolock(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, out PteMapping map)
    {
        map = default;
        cpu.RcuReadLock();
        map.PmdVal = Get(pmd);
        if (map.PmdVal.None || map.PmdVal.Leaf)
        {
            cpu.RcuReadUnlock();
            return false;
        }
        map.Rcu = true;
        map.Pte = PteOffset(mm.Machine.Memory, map.PmdVal, address);
        return true;
    }

    /// <summary>pte_unmap: the end of a lockless mapping's RCU read-side section.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PteUnmap(Cpu cpu, ref PteMapping map)
    {
        if (!map.Rcu) return;
        map.Rcu = false;
        cpu.RcuReadUnlock();
    }

    /// <summary>
    /// The table mapped for a caller that holds mmap_lock for write (the invariant audit): no table can be
    /// freed or replaced under it, so it takes neither lock nor RCU.
    /// </summary>
    public static bool PteOffsetMapHeld(MmStruct mm, Pmd* pmd, ulong address, out PteMapping map)
    {
        map = default;
        map.PmdVal = Get(pmd);
        if (map.PmdVal.None || map.PmdVal.Leaf) return false;
        map.Pte = PteOffset(mm.Machine.Memory, map.PmdVal, address);
        return true;
    }

    /// <summary>
    /// __pte_offset_map_lock without pte_refcount: read the PMD and lock the table it points to inside an
    /// RCU read-side section, so the ptl word cannot be recycled under the spin; retry until the PMD still
    /// points at the table once it is locked.
    /// </summary>
    private static Pte* PteOffsetMapLock(Cpu cpu, Machine m, Pmd* pmd, ulong address, out int* ptl, out Pmd pmdval)
    {
        cpu.RcuReadLock();
        try
        {
            while (true)
            {
                pmdval = Get(pmd);
                if (pmdval.None || pmdval.Leaf) { ptl = null; return null; }
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

    /// <summary>The lock of a table this caller holds a pte_refcount on (its struct page <paramref name="held"/>): the table stays, so no RCU and no retry.</summary>
    private static Pte* PteOffsetMapLockHeld(Machine m, Pmd* pmd, ulong address, Page* held, out int* ptl, out Pmd pmdval)
    {
        pmdval = Get(pmd);
        if (pmdval.None || pmdval.Leaf) { ptl = null; return null; }
        ptl = &held->Ptl;
        Spin.Lock(ptl);
        return PteOffset(m.Memory, pmdval, address);
    }

    // ---- The fault path's mappings (the reference, with pte_refcount, travels in the VmFault) ---------

    /// <summary>
    /// pte_offset_map_rw_nolock for handle_pte_fault: inside an RCU read-side section, which the caller ends
    /// with <see cref="PteUnmap(Cpu)"/> once it holds the lock or has given up, the slot for vmf.Address and
    /// the PMD value it came from. Null when the PMD is none or huge (<paramref name="pmdval"/> says which)
    /// or, with pte_refcount, points at a dying table: then the entry is missing and do_anonymous_page
    /// takes a table of its own. With pte_refcount the fault holds the table from here to
    /// <see cref="PteFaultDone"/>.
    /// </summary>
    /// <remarks>
    /// A fault under a shared PTE table (any fault: a read of a none entry installs the zero page) breaks
    /// it first, On-Demand-Fork's rule in __handle_mm_fault. The test is the PMD's RW bit in the value just
    /// loaded, one branch never taken without copy-on-write page tables. A break that cannot allocate
    /// returns null with <see cref="VmFault.CowPteOom"/> set, still inside the RCU section.
    /// </remarks>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte* PteOffsetMapRwNolock(ref VmFault vmf, out Pmd pmdval)
    {
        vmf.Cpu.RcuReadLock();
        pmdval = Get(vmf.Pmd);
        if (pmdval.None || pmdval.Leaf) return null;
        if (IsCowTable(pmdval) && !FaultBreakCowPte(ref vmf, out pmdval)) return null;
        Machine m = vmf.Mm.Machine;
        if (m.Config.PtReclaim == PtReclaimMode.Refcount && !PteFaultTryGet(ref vmf, pmdval)) return null;
        return PteOffset(m.Memory, pmdval, vmf.Address);
    }

    /// <summary>
    /// The fault's break of a shared table, outside the RCU section (it takes locks and may allocate and
    /// flush): true with the PMD read again once it is private, false when the fault has nothing to map
    /// (the PMD went none or huge meanwhile, or the break found no memory: <see cref="VmFault.CowPteOom"/>).
    /// Returns inside the RCU section again.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool FaultBreakCowPte(ref VmFault vmf, out Pmd pmdval)
    {
        vmf.Cpu.RcuReadUnlock();
        bool ok = BreakCowPte(vmf.Cpu, vmf.Mm, vmf.Pmd, vmf.Address, "handle_pte_fault");
        vmf.Cpu.RcuReadLock();
        pmdval = Get(vmf.Pmd);
        if (!ok)
        {
            vmf.CowPteOom = true;
            return false;
        }
        return !pmdval.None && !pmdval.Leaf;
    }

    /// <summary>pte_try_get for the fault, inside its RCU read-side section: false when the table is dying or was replaced.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool PteFaultTryGet(ref VmFault vmf, Pmd pmdval)
    {
        vmf.PteTablePage = PteGetUnlessZero(vmf.Mm.Machine, vmf.Pmd, pmdval);
        if (vmf.PteTablePage == null) return false;
        vmf.PteTable = pmdval.Pfn;
        return true;
    }

    /// <summary>The end of <see cref="PteOffsetMapRwNolock"/>'s RCU read-side section.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PteUnmap(Cpu cpu) => cpu.RcuReadUnlock();

    /// <summary>
    /// pte_alloc for do_anonymous_page (pte_alloc_get with pte_refcount, unless the fault already holds
    /// the table): true when a table is there. False with <paramref name="fail"/> Oom, or None when a
    /// huge PMD raced in (the access is retried).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool PteAlloc(ref VmFault vmf, out VmFaultT fail)
    {
        fail = VmFaultT.None;
        if (vmf.Mm.Machine.Config.PtReclaim == PtReclaimMode.Refcount) return PteFaultAllocGet(ref vmf, out fail);
        if (Get(vmf.Pmd).None && !PteAlloc(vmf.Cpu, vmf.Mm, vmf.Pmd, vmf.Address))
        {
            fail = VmFaultT.Oom;
            return false;
        }
        return true;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static bool PteFaultAllocGet(ref VmFault vmf, out VmFaultT fail)
    {
        fail = VmFaultT.None;
        if (vmf.PteTable != 0) return true;
        vmf.PteTable = PteAllocGet(vmf.Cpu, vmf.Mm, vmf.Pmd, vmf.Address);
        if (vmf.PteTable == 0)
        {
            fail = Get(vmf.Pmd).Leaf ? VmFaultT.None : VmFaultT.Oom;
            return false;
        }
        vmf.PteTablePage = vmf.Mm.Machine.Vmemmap.PfnToPage(vmf.PteTable);
        return true;
    }

    /// <summary>
    /// pte_offset_map_lock for the fault path: vmf.Pte (the slot for address) and vmf.Ptl set and held;
    /// false, with neither, when the PMD no longer holds a table (the access is retried).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool PteOffsetMapLock(ref VmFault vmf, ulong address)
    {
        CheckFaultTableNotShared(vmf.Mm, vmf.Pmd, address);
        Machine m = vmf.Mm.Machine;
        vmf.Pte = vmf.PteTablePage != null
            ? PteOffsetMapLockHeld(m, vmf.Pmd, address, vmf.PteTablePage, out vmf.Ptl, out _)
            : PteOffsetMapLock(vmf.Cpu, m, vmf.Pmd, address, out vmf.Ptl, out _);
        return vmf.Pte != null;
    }

    /// <summary>pte_unmap_unlock for the fault path: the lock goes, and vmf.Ptl with it (it is non-null exactly while held).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PteUnmapUnlock(ref VmFault vmf)
    {
        Spin.Unlock(vmf.Ptl);
        vmf.Ptl = null;
    }

    /// <summary>The fault installed nr entries in the table it holds: with pte_refcount one keeps the fault's reference, the others take their own.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PteInstalled(ref VmFault vmf, int nr)
    {
        if (vmf.PteTable == 0) return;
        vmf.PteRefTransferred = true;
        if (nr > 1) PteGetMany(vmf.Mm.Machine, vmf.PteTable, nr - 1);
    }

    /// <summary>The end of a fault: the reference it held on its PTE table goes, unless an entry it installed kept it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PteFaultDone(ref VmFault vmf, ulong address)
    {
        if (vmf.PteTable != 0 && !vmf.PteRefTransferred) PtePut(vmf.Cpu, vmf.Mm, vmf.Pmd, vmf.PteTable, 1, address, null);
    }

    /// <summary>
    /// smp_wmb + pmd_populate of a table filled before it is published (a huge PMD split into the deposited
    /// table): with pte_refcount it starts with one count per entry.
    /// </summary>
    public static void PmdPopulateFilled(Machine m, Pmd* pmd, ulong table, int entries)
    {
        if (m.Config.PtReclaim == PtReclaimMode.Refcount) m.Vmemmap.PfnToPage(table)->PteRefcount = entries;
        Set(pmd, Pmd.MkTable(table)); // release: the filled entries and the count are visible before the table is
    }

    // ---- pte_refcount (PtReclaim = Refcount) -------------------------------------------------------
    //
    // A PTE table's count is the number of its non-none entries plus the walkers using it. Walkers
    // take a reference with PteTryGet (never from zero: a table at zero is being freed) and drop it
    // with PtePut; the put that reaches zero clears the PMD under the PMD lock and frees the table.

    /// <summary>pte_try_get: a reference on the table *pmd points to, or 0 if there is none (or it is dying); <paramref name="seen"/> the PMD read last.</summary>
    /// <remarks>
    /// Inside an RCU read-side section, so the table read from the PMD cannot be freed and reused before
    /// the count is raised; the PMD is re-read after, since the table may have been replaced meanwhile.
    /// Nothing in between can throw, so the section needs no finally.
    /// </remarks>
    public static ulong PteTryGet(Cpu cpu, Machine m, Pmd* pmd, out Pmd seen)
    {
        cpu.RcuReadLock();
        ulong table = 0;
        while (true)
        {
            seen = Get(pmd);
            if (seen.None || seen.Leaf) break;
            if (PteGetUnlessZero(m, pmd, seen) != null)
            {
                table = seen.Pfn;
                break;
            }
            if (Get(pmd) == seen) break; // at zero: its freer is about to clear the PMD
        }
        cpu.RcuReadUnlock();
        return table;
    }

    /// <summary>pte_try_get, for callers that need not know what the PMD held.</summary>
    public static ulong PteTryGet(Cpu cpu, Machine m, Pmd* pmd) => PteTryGet(cpu, m, pmd, out _);

    /// <summary>
    /// pte_get_unless_zero on the table pmdval points to, read from *pmd inside an RCU read-side section
    /// (the caller's): the table's struct page, or null if its count is zero (dying) or *pmd no longer
    /// points to it afterwards.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Page* PteGetUnlessZero(Machine m, Pmd* pmd, Pmd pmdval)
    {
        Page* table = m.Vmemmap.PfnToPage(pmdval.Pfn);
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
    public static ulong PteAllocGet(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address)
    {
        ulong table = PteTryGet(cpu, mm.Machine, pmd);
        return table != 0 ? table : PteAllocGetSlow(cpu, mm, pmd, address);
    }

    /// <summary>pte_alloc_get without a table to take: install one, or wait out a dying one.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static ulong PteAllocGetSlow(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address)
    {
        Machine m = mm.Machine;
        var spin = new SpinWait();
        while (true)
        {
            ulong table = PteTryGet(cpu, m, pmd, out Pmd now);
            if (table != 0) return table;
            if (now.Leaf) return 0;
            if (!now.None)
            {
                spin.SpinOnce(sleep1Threshold: -1); // a table at zero: its freer is about to clear the PMD
                continue;
            }
            table = AllocTable(cpu, m);
            if (table == 0) return 0;
            m.Vmemmap.PfnToPage(table)->PteRefcount = 1; // the installing walker's reference, published by the install's release store
            if (Install(cpu, mm, (ulong*)pmd, table, TableLevel.Pte, address)) return table;
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
    /// running on this mm (its flush covers it), else it is flushed here and handed to RCU.
    /// </summary>
    public static void PtePut(Cpu cpu, MmStruct mm, Pmd* pmd, ulong table, int n, ulong address, MmuGather? tlb)
    {
        Machine m = mm.Machine;
        int after = Interlocked.Add(ref m.Vmemmap.PfnToPage(table)->PteRefcount, -n);
        Bug.On(after < 0, "pte_refcount of table {0:x} went negative", table);
        if (after != 0) return;

        ulong start = address & Geometry.PmdMask;
        MmuGather? gather = tlb is not null && tlb.InUse && ReferenceEquals(tlb.Mm, mm) ? tlb : null;
        int* pml = PmdLock(m, pmd);
        Pmd v = Get(pmd);
        bool cleared = !v.None && !v.Leaf && v.Pfn == table;
        if (cleared)
        {
            if (m.Config.DebugVm)
            {
                Pte* t = PteTable(m.Memory, table);
                for (int i = 0; i < Geometry.PtrsPerPte; i++) Bug.On(!Get(t + i).None, "table {0:x} freed at refcount 0 with entry {1} in use", table, i);
            }
            PmdClearForReclaim(mm, gather, pmd, start);
        }
        Spin.Unlock(pml);
        if (cleared) FreeReclaimedPte(cpu, mm, gather, table, start);
    }
}
