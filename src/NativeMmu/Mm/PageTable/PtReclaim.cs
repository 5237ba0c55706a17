using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Diagnostics;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Empty PTE-table reclaim: mm/pt_reclaim.c (6.14's synchronous reclaim in zap_pte_range) and the
/// table-free bookkeeping both reclaim modes share with pte_refcount's last put.
/// </summary>
internal static unsafe partial class PgTable
{
    /// <summary>
    /// reclaim_pt_is_enabled: the zap may free the table it empties only in PtReclaim Sync, when its caller
    /// asked (zap_details.reclaim_pt: MADV_DONTNEED) and this call zaps the table's whole 2 MiB.
    /// </summary>
    public static bool ReclaimPtIsEnabled(MmuGather tlb, ulong start, ulong end)
        => tlb.ReclaimPt && end - start >= Geometry.PmdSize && tlb.Mm.Machine.Config.PtReclaim == PtReclaimMode.Sync;

    /// <summary>
    /// try_get_and_clear_pmd: with the PTE lock held, the PMD lock may only be tried (the reverse of the
    /// usual order). True with the PMD cleared and its old value in <paramref name="pmdval"/>.
    /// </summary>
    public static bool TryGetAndClearPmd(MmuGather tlb, Pmd* pmd, ulong start, out Pmd pmdval)
    {
        int* pml = PmdLockptr(tlb.Mm.Machine, pmd);
        pmdval = default;
        if (!Spin.TryLock(pml)) return false;
        pmdval = Get(pmd);
        PmdClearForReclaim(tlb.Mm, tlb, pmd, start);
        Spin.Unlock(pml);
        return true;
    }

    /// <summary>free_pte: the table try_get_and_clear_pmd took out goes to the gather.</summary>
    public static void FreePte(Cpu cpu, MmuGather tlb, ulong start, Pmd pmdval) => FreeReclaimedPte(cpu, tlb.Mm, tlb, pmdval.Pfn, start);

    /// <summary>try_to_free_pte: PMD lock, then the PTE lock nested; free only if all 512 entries are none.</summary>
    public static void TryToFreePte(Cpu cpu, MmuGather tlb, Pmd* pmd, ulong start)
    {
        Machine m = tlb.Mm.Machine;
        int* pml = PmdLock(m, pmd);
        Pmd pmdval = Get(pmd);
        if (pmdval.None || pmdval.Leaf)
        {
            Spin.Unlock(pml);
            return;
        }
        int* ptl = PteLockptr(m, pmdval);
        if (ptl != pml) Spin.Lock(ptl);
        Pte* pte = PteOffset(m.Memory, pmdval, start & Geometry.PmdMask);
        bool empty = true;
        for (int i = 0; i < Geometry.PtrsPerPte && empty; i++) empty = Get(pte + i).None;
        if (empty) PmdClearForReclaim(tlb.Mm, tlb, pmd, start);
        if (ptl != pml) Spin.Unlock(ptl);
        Spin.Unlock(pml);
        if (empty) FreeReclaimedPte(cpu, tlb.Mm, tlb, pmdval.Pfn, start);
    }

    /// <summary>
    /// pmd_clear of a PMD whose table a reclaim is freeing, PMD lock held: until the flush that covers it,
    /// installing a table there must flush first (arch_flush_tlb_before_set_pte_page), so the range is
    /// noted as pending, with the gather that will flush it or with the mm.
    /// </summary>
    private static void PmdClearForReclaim(MmStruct mm, MmuGather? tlb, Pmd* pmd, ulong start)
    {
        Set(pmd, default);
        if (tlb is not null) tlb.NoteReclaimedPmd(start & Geometry.PmdMask);
        else mm.NoteReclaimedPmd(start & Geometry.PmdMask);
    }

    /// <summary>
    /// The rest of a reclaim, after the PMD lock: the table freed through the gather (whose flush comes
    /// later) or, without one, flushed and handed to RCU here; counted (pt_reclaim) in between.
    /// </summary>
    private static void FreeReclaimedPte(Cpu cpu, MmStruct mm, MmuGather? tlb, ulong table, ulong start)
    {
        start &= Geometry.PmdMask;
        if (tlb is not null) PteFreeTlb(tlb, table, start);
        mm.Machine.Counters.Add(cpu.Id, VmEvent.PtReclaim);
        TestHooks.AfterPmdCleared?.Invoke(cpu, mm, start); // before the flush: the window arch_flush_tlb_before_set_pte_page closes
        if (tlb is null) PteFreeNow(cpu, mm, table, start);
        if (NativeMmuEventSource.Log.ReclaimEventsEnabled) NativeMmuEventSource.Log.TableReclaim(start, table, cpu.Id);
    }
}
