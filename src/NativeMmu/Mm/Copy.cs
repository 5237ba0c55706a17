using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// fork's page-table copy (mm/memory.c copy_page_range and below): the parent's tables walked with the
/// generic walker, the child's allocated level by level alongside, private anonymous pages shared
/// copy-on-write.
/// </summary>
internal static unsafe partial class Memory
{
    /// <summary>
    /// copy_page_range: only present upper levels are copied. Both mms' mmap_lock held for write (dup_mmap
    /// holds the parent's; nobody can see the child yet); no page-table lock on entry or exit.
    /// </summary>
    public static void CopyPageRange(Cpu cpu, Vma dstVma, Vma srcVma)
    {
        var copy = new CopyWalk(cpu, dstVma, srcVma);
        PageWalk.WalkRange(cpu, srcVma.Mm, srcVma.VmStart, srcVma.VmEnd, ref copy);
        if (copy.Oom) throw new OutOfMemoryException("fork: the emulated machine is out of memory");
    }

    /// <summary>
    /// copy_p4d_range, copy_pud_range and copy_pmd_range as walk callbacks on the parent's tables: each
    /// level allocates the child's table below it (p4d_alloc, pud_alloc, pmd_alloc), each PMD is copied
    /// whole (copy_huge_pmd) or by copy_pte_range. The walk itself maps no PTE table: copy_pte_range maps
    /// both, the child's first.
    /// </summary>
    private struct CopyWalk(Cpu cpu, Vma dstVma, Vma srcVma) : IPageWalkOps
    {
        private readonly Cpu cpu = cpu;
        private readonly Vma dstVma = dstVma, srcVma = srcVma;
        private Pgd* _dstPgd;
        private P4d* _dstP4d;
        private Pud* _dstPud;
        /// <summary>The walk stopped because the child's tables or pages could not be allocated.</summary>
        public bool Oom;

        public readonly PteWalk PteWalk => PteWalk.None;
        public readonly MmuGather? Tlb => null;

        /// <summary>copy_p4d_range's p4d_alloc in the child.</summary>
        public WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next)
        {
            MmStruct dst = dstVma.Mm;
            _dstPgd = PgTable.PgdOffset(dst, addr);
            return PgTable.P4dAllocOffset(cpu, dst, _dstPgd, addr) == null ? Fail() : WalkAction.Subtree;
        }

        /// <summary>copy_pud_range's pud_alloc in the child.</summary>
        public WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next)
        {
            MmStruct dst = dstVma.Mm;
            _dstP4d = PgTable.P4dOffset(dst, _dstPgd, addr);
            return PgTable.PudAllocOffset(cpu, dst, _dstP4d, addr) == null ? Fail() : WalkAction.Subtree;
        }

        /// <summary>copy_pmd_range's pmd_alloc in the child.</summary>
        public WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next)
        {
            MmStruct dst = dstVma.Mm;
            _dstPud = PgTable.PudOffset(dst.Machine.Memory, PgTable.Get(_dstP4d), addr);
            return PgTable.PmdAllocOffset(cpu, dst, _dstPud, addr) == null ? Fail() : WalkAction.Subtree;
        }

        /// <summary>
        /// copy_pmd_range's body: a huge PMD shared whole, or (EAGAIN: split meanwhile) looked at again; with
        /// copy-on-write PTE tables a shareable table shared (one the child already shares, through another
        /// VMA across it, is done); any other table copied by copy_pte_range, after a shared one was made
        /// the parent's own (copy_pte_range write-protects the parent's entries).
        /// </summary>
        public WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            Pmd* dstPmd = PgTable.PmdOffset(dstVma.Mm.Machine.Memory, PgTable.Get(_dstPud), addr);
            if (pmdval.Leaf)
            {
                Bug.On(next - addr != Geometry.PmdSize, "copy_pmd_range: a huge PMD at {0:x} straddles the VMA", addr);
                Errno err = HugeMemory.CopyHugePmd(cpu, dstVma, srcVma, dstPmd, pmd, addr);
                if (err == Errno.ENOMEM) return Fail();
                return err == Errno.Success ? WalkAction.Continue : WalkAction.Again; // EAGAIN: copy its PTEs
            }
            MmStruct src = srcVma.Mm;
            if (src.CowPte)
            {
                // The look-ahead stays inside this PMD table and this VMA.
                Pmd* ahead = pmd + PgTable.CowPtePrefetchDistance;
                if (((ulong)ahead ^ (ulong)pmd) < Geometry.PageSize && addr + PgTable.CowPtePrefetchDistance * Geometry.PmdSize < srcVma.VmEnd)
                    PgTable.PrefetchCowPteShare(src.Machine, ahead);
                Pmd dstval = PgTable.Get(dstPmd);
                if (dstval.None)
                {
                    if (PgTable.CowPteShareable(src, srcVma, pmdval, addr, out bool pinned))
                    {
                        PgTable.CowPteShare(cpu, dstVma, src, pmd, dstPmd, addr);
                        return WalkAction.Continue;
                    }
                    if (pinned) src.Machine.Counters.Add(cpu.Id, VmEvent.CowPteFallback);
                }
                else if (PgTable.IsCowTable(dstval) && dstval.Pfn == pmdval.Pfn)
                {
                    return WalkAction.Continue;
                }
            }
            if (PgTable.IsCowTable(pmdval))
                return PgTable.BreakCowPte(cpu, src, pmd, addr, "fork") ? WalkAction.Again : Fail();
            return CopyPteRange(cpu, dstVma, srcVma, dstPmd, pmd, addr, next) ? WalkAction.Continue : Fail();
        }

        public readonly int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end) => 1;
        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }

        private WalkAction Fail()
        {
            Oom = true;
            return WalkAction.Stop;
        }
    }

    /// <summary>
    /// copy_pte_range: the child's table is allocated and locked first, then the parent's (spin_lock_nested).
    /// Each present anonymous page is shared: mapcount and refcount up, PageAnonExclusive cleared, and both
    /// entries write-protected; a page that may be pinned is copied for the child instead. Both locks are
    /// dropped on return. False: out of memory.
    /// </summary>
    private static bool CopyPteRange(Cpu cpu, Vma dstVma, Vma srcVma, Pmd* dstPmd, Pmd* srcPmd, ulong addr, ulong end)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        Machine m = src.Machine;
        ulong from = addr;
        if (!PgTable.PteAllocMapLock(cpu, dst, dstPmd, addr, out PteMapping dstMap)) return false;
        // The parent's entries are write-protected below: its table is private (copy_pmd_range broke a
        // shared one first).
        if (!PgTable.PteOffsetMapLock(cpu, src, srcPmd, addr, PteAccess.Read, out PteMapping srcMap))
        {
            PgTable.PteUnmapUnlock(cpu, dst, dstPmd, ref dstMap, from, null);
            return true;
        }
        Pte* srcPte = srcMap.Pte, dstPte = dstMap.Pte;
        bool cow = (srcVma.VmFlags & (VmFlags.Shared | VmFlags.MayWrite)) == VmFlags.MayWrite; // is_cow_mapping
        long rss = 0;
        int entries = 0;
        bool ok = true;
        bool batch = true; // folio_pte_batch, until a batch could not be shared (then page by page, as with prealloc)
        for (; addr != end; addr += Geometry.PageSize, srcPte++, dstPte++)
        {
            Pte pte = PgTable.Get(srcPte);
            if (pte.None) continue;
            Bug.On(!pte.Present, "copy_nonpresent_pte: entry {0:x16} at {1:x}, and this kernel has no swap", pte.Value, addr);
            ulong pfn = pte.Pfn;
            if (!pte.Special && pfn != m.ZeroPfn)
            {
                Page* page = m.Vmemmap.PfnToPage(pfn);
                if (page->IsCompound)
                {
                    // Pages of a large folio: the run of entries mapping its next pages goes in one batch,
                    // one reference and one __folio_try_dup_anon_rmap for all (maybe pinned: _pincount).
                    ulong headPfn = Folio.HeadPfn(m, pfn);
                    Page* head = m.Vmemmap.PfnToPage(headPfn);
                    bool maybePinned = src.HasPinned && Folio.MaybeDmaPinned(head);
                    int nr = batch
                        ? FolioPteBatch(srcPte, pte, headPfn + (ulong)Folio.NrPages(head), (int)((end - addr) >> Geometry.PageShift), FpbFlags.RespectDirty)
                        : 1;
                    Interlocked.Add(ref head->RefCount, nr);
                    bool shared = Folio.TryDupAnonRmapPtes(m, head, page, nr, dstVma, maybePinned);
                    if (!shared && nr > 1)
                    {
                        // -EAGAIN: some page of the run may be pinned; page by page from this one on.
                        Interlocked.Add(ref head->RefCount, 1 - nr);
                        nr = 1;
                        batch = false;
                        shared = Folio.TryDupAnonRmapPtes(m, head, page, 1, dstVma, maybePinned);
                    }
                    if (!shared)
                    {
                        Interlocked.Decrement(ref head->RefCount);
                        if (!CopyPresentPage(cpu, dstVma, dstPte, addr, pte)) { ok = false; break; }
                        rss++;
                        entries++;
                        continue;
                    }
                    // __copy_present_ptes for the batch: write-protect both sides, the child's entries old.
                    for (int i = 0; i < nr; i++)
                    {
                        Pte e = PgTable.Get(srcPte + i);
                        if (cow && e.Write)
                        {
                            PgTable.SetWrprotect(srcPte + i);
                            e = e.Wrprotect();
                        }
                        PgTable.Set(dstPte + i, e.MkOld());
                    }
                    rss += nr;
                    entries += nr;
                    addr += (ulong)(nr - 1) * Geometry.PageSize;
                    srcPte += nr - 1;
                    dstPte += nr - 1;
                    continue;
                }
                else if (page->TestFlag(PG.AnonExclusive) && src.HasPinned && Volatile.Read(ref page->RefCount) >= Gup.GupPinCountingBias)
                {
                    // folio_try_dup_anon_rmap_pte said -EBUSY (maybe pinned): copy_present_page.
                    if (!CopyPresentPage(cpu, dstVma, dstPte, addr, pte)) { ok = false; break; }
                    rss++;
                    entries++;
                    continue;
                }
                else
                {
                    Rmap.SmallFolioDupAnonRmapPte(page);
                    rss++;
                }
            }
            if (cow && pte.Write)
            {
                PgTable.SetWrprotect(srcPte); // ptep_set_wrprotect: keeps a hardware Dirty set meanwhile
                pte = pte.Wrprotect();
            }
            PgTable.Set(dstPte, pte.MkOld());
            entries++;
        }
        dstMap.Entries = entries;
        PgTable.PteUnmapUnlock(cpu, src, srcPmd, ref srcMap, from, null);
        PgTable.PteUnmapUnlock(cpu, dst, dstPmd, ref dstMap, from, null);
        dst.AddMmCounter(cpu.Id, MmCounter.AnonPages, rss);
        return ok;
    }

    /// <summary>copy_present_page: a possibly pinned page stays exclusive to the parent; the child gets a copy. Both PTLs held.</summary>
    private static bool CopyPresentPage(Cpu cpu, Vma dstVma, Pte* dstPte, ulong addr, Pte orig)
    {
        Machine m = dstVma.Mm.Machine;
        ulong newPfn = m.Allocator.AllocPages(cpu.Id, 0, Gfp.None);
        if (newPfn == 0) return false;
        m.Memory.CopyFrame(newPfn, orig.Pfn);
        Page* page = m.Vmemmap.PfnToPage(newPfn);
        page->SetFlag(PG.Uptodate);
        Rmap.FolioAddNewAnonRmap(cpu, m, page, dstVma, dstVma.AnonVma!, addr);
        Pte pte = Pte.PfnPte(newPfn, dstVma.VmPageProt).MkDirty();
        if ((dstVma.VmFlags & VmFlags.Write) != 0) pte = pte.MkWrite();
        PgTable.Set(dstPte, pte);
        return true;
    }
}
