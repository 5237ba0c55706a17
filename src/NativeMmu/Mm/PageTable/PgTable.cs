using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// The walk policy's lowest part, the ptep_* side (include/linux/pgtable.h, arch/x86's pgtable.c): the one
/// place that reads and writes entries inside table frames, through typed entry pointers, and finds the
/// split page-table locks. Table pages (PgAlloc.cs), the pte_offset_map family (PteMap.cs), empty-table
/// reclaim (PtReclaim.cs) and the generic walker (PageWalk.cs) build on it.
/// </summary>
/// <remarks>
/// Entries are 8-byte aligned words read by lockless walkers (the MMU, the fault path before it takes
/// the PTL), so every store is a single Volatile.Write (WRITE_ONCE/set_pte) and every read-modify-write
/// that can race with the MMU's A/D update is Interlocked (ptep_get_and_clear's xchg, cmpxchg loops).
/// Pte, Pmd, Pud, P4d and Pgd are readonly structs over one ulong, so a <c>Pte*</c> points at the entry
/// itself; this class is the only one that reinterprets one as a ulong for Volatile and Interlocked.
/// </remarks>
internal static unsafe partial class PgTable
{
    /// <summary>The PGD index where the kernel half starts (KERNEL_PGD_BOUNDARY for PAGE_OFFSET's half).</summary>
    public const int KernelPgdBoundary = 256;

    /// <summary>What one PTE, PMD or PUD table adds to pgtables_bytes (mm_inc_nr_ptes and friends).</summary>
    public const long TableBytes = Geometry.PtrsPerTable * sizeof(ulong);

    // ---- Offsets: pgd_offset, p4d_offset, pud_offset, pmd_offset, pte_offset_kernel ------------

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pgd* PgdOffset(MmStruct mm, ulong address)
        => (Pgd*)mm.Machine.Memory.FrameAddress(mm.PgdPfn) + mm.Paging.PgdIndex(address);

    /// <summary>p4d_offset: with a folded P4D, the PGD slot itself.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static P4d* P4dOffset(MmStruct mm, Pgd* pgd, ulong address)
        => mm.Paging.L5Enabled ? (P4d*)mm.Machine.Memory.FrameAddress(Get(pgd).Pfn) + Geometry.P4dIndex(address) : (P4d*)pgd;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pud* PudOffset(PhysicalMemory mem, P4d p4d, ulong address)
        => (Pud*)mem.FrameAddress(p4d.Pfn) + Geometry.PudIndex(address);

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd* PmdOffset(PhysicalMemory mem, Pud pud, ulong address)
        => (Pmd*)mem.FrameAddress(pud.Pfn) + Geometry.PmdIndex(address);

    /// <summary>pte_offset_kernel on a PMD value: the entry for address in the table it points to. No pinning: see PteMap.cs.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte* PteOffset(PhysicalMemory mem, Pmd pmd, ulong address)
        => (Pte*)mem.FrameAddress(pmd.Pfn) + Geometry.PteIndex(address);

    /// <summary>The first entry of the PTE table in frame pfn (a table being filled before it is published, or audited).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte* PteTable(PhysicalMemory mem, ulong pfn) => (Pte*)mem.FrameAddress(pfn);

    /// <summary>The first entry of the PMD table in frame pfn.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd* PmdTable(PhysicalMemory mem, ulong pfn) => (Pmd*)mem.FrameAddress(pfn);

    /// <summary>The frame that holds an entry (virt_to_page of a table pointer).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static ulong TablePfnOf(PhysicalMemory mem, void* entry) => (ulong)((byte*)entry - mem.Base) >> Geometry.PageShift;

    // ---- Entry access: ptep_get, set_pte, ptep_get_and_clear, and their pmd/pud/p4d/pgd twins ----

    /// <summary>READ_ONCE of any entry word.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong Load(ulong* entry)
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

    /// <summary>ptep_get.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte Get(Pte* pte) => new(Load((ulong*)pte));

    /// <summary>pmdp_get / pmdp_get_lockless (one aligned load is atomic on x86-64).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd Get(Pmd* pmd) => new(Load((ulong*)pmd));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pud Get(Pud* pud) => new(Load((ulong*)pud));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static P4d Get(P4d* p4d) => new(Load((ulong*)p4d));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pgd Get(Pgd* pgd) => new(Load((ulong*)pgd));

    /// <summary>set_pte / set_ptes' store: a single store that publishes the entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(Pte* pte, Pte value) => Volatile.Write(ref *(ulong*)pte, value.Value);

    /// <summary>set_pmd_at / pmd_populate / pmd_clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(Pmd* pmd, Pmd value) => Volatile.Write(ref *(ulong*)pmd, value.Value);

    /// <summary>pud_populate / pud_clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(Pud* pud, Pud value) => Volatile.Write(ref *(ulong*)pud, value.Value);

    /// <summary>p4d_populate / p4d_clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(P4d* p4d, P4d value) => Volatile.Write(ref *(ulong*)p4d, value.Value);

    /// <summary>pgd_populate / pgd_clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Set(Pgd* pgd, Pgd value) => Volatile.Write(ref *(ulong*)pgd, value.Value);

    /// <summary>ptep_get_and_clear: xchg, because the MMU may set A/D concurrently.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte GetAndClear(Pte* pte) => new(Interlocked.Exchange(ref *(ulong*)pte, 0));

    /// <summary>pmdp_huge_get_and_clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd GetAndClear(Pmd* pmd) => new(Interlocked.Exchange(ref *(ulong*)pmd, 0));

    /// <summary>pmdp_establish (pmdp_invalidate's xchg): the old entry, with any A/D the MMU set meanwhile.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pmd Exchange(Pmd* pmd, Pmd value) => new(Interlocked.Exchange(ref *(ulong*)pmd, value.Value));

    /// <summary>ptep_cmpxchg: the value seen (equal to expected when the swap happened).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static Pte CmpXchg(Pte* pte, Pte newValue, Pte expected)
        => new(Interlocked.CompareExchange(ref *(ulong*)pte, newValue.Value, expected.Value));

    /// <summary>ptep_set_wrprotect: clear RW with a cmpxchg loop so a concurrent hardware Dirty is not lost.</summary>
    public static void SetWrprotect(Pte* pte)
    {
        ulong old = Load((ulong*)pte);
        while (true)
        {
            ulong seen = Interlocked.CompareExchange(ref *(ulong*)pte, new Pte(old).Wrprotect().Value, old);
            if (seen == old) return;
            old = seen;
        }
    }

    /// <summary>pmdp_set_wrprotect: the same loop on a huge PMD (RW is bit 1 at every level).</summary>
    public static void SetWrprotect(Pmd* pmd)
    {
        ulong old = Load((ulong*)pmd);
        while (true)
        {
            ulong seen = Interlocked.CompareExchange(ref *(ulong*)pmd, new Pmd(old).Wrprotect().Value, old);
            if (seen == old) return;
            old = seen;
        }
    }

    // ---- Split page-table locks --------------------------------------------------------------------

    /// <summary>pte_lockptr: the ptl in the struct page of the PTE table pmd points to.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int* PteLockptr(Machine m, Pmd pmd) => &m.Vmemmap.PfnToPage(pmd.Pfn)->Ptl;

    /// <summary>pmd_lockptr: the split PMD lock, in the struct page of the PMD table holding the entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int* PmdLockptr(Machine m, Pmd* pmd) => &m.Vmemmap.PfnToPage(TablePfnOf(m.Memory, pmd))->Ptl;

    /// <summary>pmd_lock: take the split PMD lock and return it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static int* PmdLock(Machine m, Pmd* pmd)
    {
        int* ptl = PmdLockptr(m, pmd);
        Spin.Lock(ptl);
        return ptl;
    }

    /// <summary>
    /// pmd_trans_huge_lock: the PMD lock, held, when *pmd is a huge PMD once it is taken (a split in
    /// progress holds it, so a huge PMD seen here is whole); null, with nothing held, otherwise.
    /// </summary>
    public static int* PmdTransHugeLock(Machine m, Pmd* pmd)
    {
        if (!Get(pmd).Leaf) return null;
        int* ptl = PmdLock(m, pmd);
        if (Get(pmd).Leaf) return ptl;
        Spin.Unlock(ptl);
        return null;
    }

    // ---- Walks to one address, without allocating ------------------------------------------------

    /// <summary>
    /// mm_find_pmd without the huge check: the PMD entry covering address, or null when an upper level is
    /// none. Callers hold mmap_lock (PMD tables are freed only under it for write).
    /// </summary>
    public static Pmd* WalkToPmd(MmStruct mm, ulong address)
    {
        PhysicalMemory mem = mm.Machine.Memory;
        Pgd* pgd = PgdOffset(mm, address);
        if (Get(pgd).IsNone(mm.Paging)) return null;
        P4d p4d = Get(P4dOffset(mm, pgd, address));
        if (p4d.None) return null;
        Pud pud = Get(PudOffset(mem, p4d, address));
        if (pud.None) return null;
        return PmdOffset(mem, pud, address);
    }

    /// <summary>
    /// The PTE slot mapping address, or null when a level is missing, for callers that need no pinning:
    /// mmap_lock held for write (no table can go), or tests that hold the mm still.
    /// </summary>
    public static Pte* WalkToPte(MmStruct mm, ulong address)
    {
        Pmd* pmd = WalkToPmd(mm, address);
        if (pmd == null) return null;
        Pmd pmdval = Get(pmd);
        if (pmdval.None || pmdval.Leaf) return null;
        return PteOffset(mm.Machine.Memory, pmdval, address);
    }
}
