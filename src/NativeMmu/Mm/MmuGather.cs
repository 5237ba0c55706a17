using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;

namespace NativeMmu.Mm;

/// <summary>
/// struct mmu_gather (mm/mmu_gather.c): pages and page tables unmapped by a zap are batched here and
/// freed only after the TLB flush that makes them unreachable; the flush covers the union of the
/// ranges cleared, once per batch.
/// </summary>
internal sealed unsafe class MmuGather : IDisposable
{
    /// <summary>MAX_GATHER_BATCH * MAX_GATHER_BATCH_COUNT on x86-64 with 4 KiB pages: 510 * 19.</summary>
    public const int MaxPages = 510 * 19;
    /// <summary>MAX_TABLE_BATCH: one page of table pointers.</summary>
    public const int MaxTables = 510;

    private readonly Cpu _cpu;
    private readonly ulong* _pages;
    private readonly ulong* _tables;
    /// <summary>The 2 MiB ranges whose PMDs this gather's zap cleared, registered with the mm until flushed.</summary>
    private readonly ulong* _reclaimed;
    private int _nrPages, _nrTables, _nrReclaimed;

    public MmuGather(Cpu cpu)
    {
        _cpu = cpu;
        _pages = (ulong*)NativeMemory.Alloc(MaxPages * sizeof(ulong));
        _tables = (ulong*)NativeMemory.Alloc(MaxTables * sizeof(ulong));
        _reclaimed = (ulong*)NativeMemory.Alloc((MaxTables + 1) * sizeof(ulong));
    }

    public MmStruct Mm = null!;
    /// <summary>zap_details.reclaim_pt: this zap may free PTE tables it empties (MADV_DONTNEED).</summary>
    public bool ReclaimPt;
    /// <summary>Pages this gather's zap released (for the Zap event).</summary>
    public long ZappedPages;
    public bool FullMm;
    public bool FreedTables;
    public ulong Start, End;
    public bool InUse;

    public void Dispose()
    {
        NativeMemory.Free(_pages);
        NativeMemory.Free(_tables);
        NativeMemory.Free(_reclaimed);
    }

    /// <summary>tlb_gather_mmu / tlb_gather_mmu_fullmm.</summary>
    public MmuGather Gather(MmStruct mm, bool fullmm)
    {
        InUse = true;
        Mm = mm;
        FullMm = fullmm;
        ReclaimPt = false;
        ZappedPages = 0;
        _nrPages = _nrTables = 0;
        ResetRange();
        Interlocked.Increment(ref mm.TlbFlushPending); // inc_tlb_flush_pending
        return this;
    }

    /// <summary>__tlb_reset_range.</summary>
    private void ResetRange()
    {
        if (FullMm) Start = End = ulong.MaxValue;
        else { Start = Mm.TaskSize; End = 0; }
        FreedTables = false;
    }

    /// <summary>__tlb_adjust_range / tlb_remove_tlb_entry.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void AdjustRange(ulong address, ulong size)
    {
        if (address < Start) Start = address;
        if (address + size > End) End = address + size;
    }

    /// <summary>__tlb_remove_page: queue a page reference to drop after the flush; true when the batch is full.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public bool RemovePage(ulong pfn)
    {
        _pages[_nrPages++] = pfn;
        return _nrPages >= MaxPages - 1;
    }

    /// <summary>
    /// __tlb_remove_folio_pages: nr references on one large folio, encoded as two entries (the head with
    /// ENCODED_PAGE_BIT_NR_PAGES_NEXT, then the count), dropped at once after the flush.
    /// </summary>
    public bool RemoveFolioPages(ulong headPfn, int nr)
    {
        _pages[_nrPages++] = headPfn | NrPagesNext;
        _pages[_nrPages++] = (ulong)nr;
        return _nrPages >= MaxPages - 1;
    }

    private const ulong NrPagesNext = 1UL << 63;

    /// <summary>pte_free_tlb / pmd_free_tlb / pud_free_tlb → tlb_remove_table: free the table after the flush.</summary>
    public void RemoveTable(ulong tablePfn, ulong address)
    {
        FreedTables = true;
        AdjustRange(address, Geometry.PageSize);
        PgTable.TableDtor(_cpu, Mm.Machine, tablePfn); // ___pte_free_tlb: pagetable_dtor now, the frame after RCU
        if (_nrTables == MaxTables) FlushMmu();
        _tables[_nrTables++] = tablePfn;
    }

    /// <summary>
    /// A reclaim cleared the PMD of the 2 MiB at start (PMD lock held): until this gather flushes,
    /// installing a table there must flush first. The table itself follows with <see cref="RemoveTable"/>.
    /// </summary>
    public void NoteReclaimedPmd(ulong start)
    {
        Mm.NoteReclaimedPmd(start);
        _reclaimed[_nrReclaimed++] = start;
    }

    /// <summary>tlb_flush_mmu_tlbonly → x86 tlb_flush → flush_tlb_mm_range.</summary>
    public void FlushMmuTlbOnly()
    {
        if (End != 0)
        {
            ulong end = FullMm ? ulong.MaxValue : End;
            TlbFlush.FlushMmRange(_cpu, Mm, FullMm ? 0 : Start, end, Geometry.PageShift, FreedTables);
            ResetRange();
        }
        for (int i = 0; i < _nrReclaimed; i++) Mm.ReclaimedPmdFlushed(_reclaimed[i]);
        _nrReclaimed = 0;
    }

    /// <summary>
    /// tlb_flush_mmu_free: the tables go to RCU (tlb_table_flush → call_rcu: software walkers may still be
    /// reading them, and an IPI does not wait for rcu_read_lock holders), then the pages are freed.
    /// </summary>
    public void FlushMmuFree()
    {
        Machine m = Mm.Machine;
        for (int i = 0; i < _nrTables; i++) m.Rcu.CallRcuFreeTable(_cpu, _tables[i]);
        _nrTables = 0;
        for (int i = 0; i < _nrPages; i++)
        {
            ulong e = _pages[i];
            if ((e & NrPagesNext) == 0) Rmap.FolioPut(_cpu, m, e);
            else Folio.PutRefs(_cpu, m, e & ~NrPagesNext, (int)_pages[++i]);
        }
        _nrPages = 0;
    }

    /// <summary>tlb_flush_mmu.</summary>
    public void FlushMmu()
    {
        FlushMmuTlbOnly();
        FlushMmuFree();
    }

    /// <summary>tlb_finish_mmu: a concurrent batched flush on the same mm forces a full flush (mm_tlb_flush_nested).</summary>
    public void Finish()
    {
        if (Volatile.Read(ref Mm.TlbFlushPending) > 1)
        {
            FullMm = true;
            ResetRange();
            FreedTables = true;
        }
        FlushMmu();
        Interlocked.Decrement(ref Mm.TlbFlushPending);
        Mm = null!;
        InUse = false;
    }
}
