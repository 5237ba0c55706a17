using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;

namespace NativeMmu.Mm;

/// <summary>What a walk does after an entry callback (walk->action, and a callback's error return).</summary>
internal enum WalkAction : byte
{
    /// <summary>ACTION_SUBTREE: descend into the table the entry points to.</summary>
    Subtree,
    /// <summary>ACTION_CONTINUE: the callback dealt with the entry; go on with the next one.</summary>
    Continue,
    /// <summary>ACTION_AGAIN (PMD level): the entry changed under the callback (split, zapped, replaced): read it again.</summary>
    Again,
    /// <summary>A non-zero return: end the walk.</summary>
    Stop,
}

/// <summary>How walk_pte_range maps each PTE table it descends into.</summary>
internal enum PteWalk : byte
{
    /// <summary>It does not: the walk ends at the PMD level.</summary>
    None,
    /// <summary>pte_offset_map_lock: the entries are read under the table lock.</summary>
    Read,
    /// <summary>pte_offset_map_lock for a walker that changes entries: past <see cref="PgTable.BreakSharedTable"/>.</summary>
    Write,
    /// <summary>pte_offset_map_ro_nolock: a lockless look inside an RCU read-side section.</summary>
    RoNolock,
    /// <summary>Neither lock nor RCU: the caller holds mmap_lock for write (the audit), so no table can go.</summary>
    Held,
}

/// <summary>
/// struct mm_walk_ops as a struct constraint: the walk is generic over the ops type, so every call below
/// is a direct call the JIT inlines, and a walk costs what the hand-written loops did. Entry callbacks
/// see only non-none entries (the walk skips holes). <see cref="PteWalk"/> and <see cref="Tlb"/> are
/// constants or fields of the ops, read once per table.
/// </summary>
internal unsafe interface IPageWalkOps
{
    /// <summary>How PTE tables are mapped (and whether the walk goes down to them at all).</summary>
    PteWalk PteWalk { get; }

    /// <summary>The gather a table freed by the walk's own unmap goes to (pte_refcount's last put in a zap), or null.</summary>
    MmuGather? Tlb { get; }

    /// <summary>pgd_entry, for a present PGD entry (every one, with a folded P4D).</summary>
    WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next);

    /// <summary>p4d_entry, for a non-none P4D entry.</summary>
    WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next);

    /// <summary>pud_entry, for a non-none PUD entry. Subtree on a huge PUD continues.</summary>
    WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next);

    /// <summary>
    /// pmd_entry, for a non-none PMD entry, huge or a table, with the value just read. Subtree on a table
    /// walks its PTEs; a huge PMD has none, so the ops deal with it (under pmd_trans_huge_lock), or split it
    /// and return Again.
    /// </summary>
    WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next);

    /// <summary>
    /// pte_entry for the entry at addr of the mapped table (under its lock unless the walk maps without):
    /// how many entries it dealt with, at least 1 and at most up to end (a folio batch takes several). Setting
    /// <see cref="PteMapping.Break"/> ends this pass over the table after them.
    /// </summary>
    int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end);

    /// <summary>The end of a pass over a table [start, end), reached addr, still mapped (and locked).</summary>
    void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end);

    /// <summary>The same pass once the table is unmapped. The walk maps it again at addr when addr != end.</summary>
    void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end);
}

/// <summary>
/// mm/pagewalk.c's walk_page_range: the walker idiom of every level once (next = pXd_addr_end(addr, end);
/// skip none; callback; descend), with the PTE level mapped by the pte_offset_map family. Every
/// software walker of user page tables is an <see cref="IPageWalkOps"/> over it: zap, fork's copy,
/// mprotect, GUP's follow, populate's look, smaps_rollup, the invariant audit and the VmPTE recount.
/// The MMU's own walk (Cpus) is hardware and does not come here. Allocates nothing.
/// </summary>
internal static unsafe class PageWalk
{
    /// <summary>walk_page_range over [addr, end): false when a callback stopped the walk.</summary>
    public static bool WalkRange<TOps>(Cpu? cpu, MmStruct mm, ulong addr, ulong end, ref TOps ops) where TOps : struct, IPageWalkOps
    {
        Pgd* pgd = PgTable.PgdOffset(mm, addr);
        do
        {
            ulong next = mm.Paging.PgdAddrEnd(addr, end);
            if (!PgTable.Get(pgd).IsNone(mm.Paging))
            {
                WalkAction a = ops.PgdEntry(pgd, addr, next);
                if (a == WalkAction.Stop) return false;
                if (a == WalkAction.Subtree && !WalkP4dRange(cpu, mm, pgd, addr, next, ref ops)) return false;
            }
            pgd++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    private static bool WalkP4dRange<TOps>(Cpu? cpu, MmStruct mm, Pgd* pgd, ulong addr, ulong end, ref TOps ops) where TOps : struct, IPageWalkOps
    {
        P4d* p4d = PgTable.P4dOffset(mm, pgd, addr);
        do
        {
            ulong next = mm.Paging.P4dAddrEnd(addr, end);
            P4d v = PgTable.Get(p4d);
            if (!v.None)
            {
                WalkAction a = ops.P4dEntry(p4d, v, addr, next);
                if (a == WalkAction.Stop) return false;
                if (a == WalkAction.Subtree && !WalkPudRange(cpu, mm, PgTable.Get(p4d), addr, next, ref ops)) return false;
            }
            p4d++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    private static bool WalkPudRange<TOps>(Cpu? cpu, MmStruct mm, P4d p4dval, ulong addr, ulong end, ref TOps ops) where TOps : struct, IPageWalkOps
    {
        Pud* pud = PgTable.PudOffset(mm.Machine.Memory, p4dval, addr);
        do
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            Pud v = PgTable.Get(pud);
            if (!v.None)
            {
                WalkAction a = ops.PudEntry(pud, v, addr, next);
                if (a == WalkAction.Stop) return false;
                if (a == WalkAction.Subtree && !v.Leaf && !WalkPmdRange(cpu, mm, PgTable.Get(pud), addr, next, ref ops)) return false;
            }
            pud++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    /// <summary>walk_pmd_range: ACTION_AGAIN reads the same PMD again, from where its PTE walk stopped.</summary>
    private static bool WalkPmdRange<TOps>(Cpu? cpu, MmStruct mm, Pud pudval, ulong addr, ulong end, ref TOps ops) where TOps : struct, IPageWalkOps
    {
        Pmd* pmd = PgTable.PmdOffset(mm.Machine.Memory, pudval, addr);
        do
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            while (true)
            {
                Pmd v = PgTable.Get(pmd);
                if (v.None) break;
                WalkAction a = ops.PmdEntry(pmd, v, addr, next);
                if (a == WalkAction.Again) continue;
                if (a == WalkAction.Stop) return false;
                if (a == WalkAction.Continue || ops.PteWalk == PteWalk.None || v.Leaf) break;
                a = WalkPteRange(cpu, mm, pmd, ref addr, next, ref ops);
                if (a == WalkAction.Stop) return false;
                if (a != WalkAction.Again) break;
            }
            pmd++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    /// <summary>
    /// walk_pte_range: map the table, hand each non-none entry to pte_entry, unmap; again from where a
    /// pass broke off until the range is done. A table that cannot be mapped (the PMD changed) sends the
    /// walk back to the PMD (Again), except a pte_refcount table already at zero, which is as good as
    /// empty (Continue).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static WalkAction WalkPteRange<TOps>(Cpu? cpu, MmStruct mm, Pmd* pmd, ref ulong addr, ulong end, ref TOps ops) where TOps : struct, IPageWalkOps
    {
        ulong start = addr;
        do
        {
            PteMapping map;
            bool mapped = ops.PteWalk switch
            {
                PteWalk.Read => PgTable.PteOffsetMapLock(cpu!, mm, pmd, addr, PteAccess.Read, out map),
                PteWalk.Write => PgTable.PteOffsetMapLock(cpu!, mm, pmd, addr, PteAccess.Write, out map, typeof(TOps).Name),
                PteWalk.RoNolock => PgTable.PteOffsetMapRoNolock(cpu!, mm, pmd, addr, out map),
                _ => PgTable.PteOffsetMapHeld(mm, pmd, addr, out map),
            };
            if (!mapped)
                return map.Oom ? WalkAction.Stop : !map.PmdVal.None && !map.PmdVal.Leaf && PgTable.Get(pmd) == map.PmdVal ? WalkAction.Continue : WalkAction.Again;
            Pte* pte = map.Pte;
            do
            {
                Pte ptent = PgTable.Get(pte);
                int n = ptent.None ? 1 : ops.PteEntry(ref map, pte, ptent, addr, end);
                pte += n;
                addr += (ulong)n << Geometry.PageShift;
            }
            while (addr != end && !map.Break);
            ops.PteTableLocked(ref map, pmd, start, addr, end);
            // The invariant mode's check of the review's first objection: a walker that changed a table
            // still shared (it skipped its break) is named here, while it still has the table mapped.
            if (ops.PteWalk == PteWalk.Write && mm.Machine.Config.DebugVm) PgTable.VerifyAfterWalk(mm.Machine, pmd, start, typeof(TOps).Name);
            switch (ops.PteWalk)
            {
                case PteWalk.Read:
                case PteWalk.Write:
                    PgTable.PteUnmapUnlock(cpu!, mm, pmd, ref map, start, ops.Tlb);
                    break;
                case PteWalk.RoNolock:
                    PgTable.PteUnmap(cpu!, ref map);
                    break;
            }
            ops.PteTableUnlocked(pmd, start, addr, end);
        }
        while (addr != end);
        return WalkAction.Continue;
    }
}
