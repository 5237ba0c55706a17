using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm.Huge;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>madvise(2) (mm/madvise.c) with Linux's argument checks and errno rules.</summary>
internal static unsafe class Madvise
{
    /// <summary>madvise_behavior_valid (CONFIG_KSM and CONFIG_MEMORY_FAILURE off).</summary>
    public static bool BehaviorValid(Advice a) => a switch
    {
        Advice.Normal or Advice.Random or Advice.Sequential or Advice.WillNeed or Advice.DontNeed or Advice.DontNeedLocked
            or Advice.Free or Advice.Remove or Advice.DontFork or Advice.DoFork or Advice.DontDump or Advice.DoDump
            or Advice.WipeOnFork or Advice.KeepOnFork or Advice.Cold or Advice.PageOut or Advice.PopulateRead
            or Advice.PopulateWrite or Advice.HugePage or Advice.NoHugePage or Advice.Collapse => true,
        _ => false,
    };

    /// <summary>madvise(2) → do_madvise → madvise_walk_vmas.</summary>
    public static Errno DoMadvise(Cpu cpu, MmStruct mm, ulong start, ulong lenIn, Advice behavior)
    {
        if (!BehaviorValid(behavior)) return Errno.EINVAL;
        if ((start & (Geometry.PageSize - 1)) != 0) return Errno.EINVAL;
        ulong len = Geometry.PageAlign(lenIn);
        if (lenIn != 0 && len == 0) return Errno.EINVAL;
        ulong end = start + len;
        if (end < start) return Errno.EINVAL;
        if (end == start) return Errno.Success;

        bool write = MadviseNeedMmapWriteLock(behavior);
        if (write) mm.MmapLock.WriteLock(cpu.Id); else mm.MmapLock.ReadLock(cpu.Id);
        try
        {
            if (behavior is Advice.PopulateRead or Advice.PopulateWrite)
                return MadvisePopulate(cpu, mm, start, end, behavior == Advice.PopulateWrite);
            // The zap drops whole shared PTE tables but cannot copy one half-way: the ones it covers in part
            // are broken first, so that no memory for a copy fails the call before anything was zapped.
            if (behavior is Advice.DontNeed or Advice.DontNeedLocked or Advice.Free && !PgTable.BreakCowPteBoundaries(cpu, mm, start, end, "madvise"))
                return Errno.ENOMEM;
            Vma? vma = mm.Vmas.FindVmaPrev(start, out Vma? prev);
            if (vma is not null && start > vma.VmStart) prev = vma;
            Errno unmappedError = Errno.Success;
            while (true)
            {
                if (vma is null) return Errno.ENOMEM;
                if (start < vma.VmStart)
                {
                    unmappedError = Errno.ENOMEM;
                    start = vma.VmStart;
                    if (start >= end) break;
                }
                ulong tmp = Math.Min(vma.VmEnd, end);
                Errno error = MadviseVmaBehavior(cpu, mm, vma, out prev, start, tmp, behavior);
                if (error != Errno.Success) return error;
                start = tmp;
                if (prev is not null && start < prev.VmEnd) start = prev.VmEnd;
                if (start >= end) break;
                vma = mm.Vmas.FindVma(prev is not null ? prev.VmEnd : start);
            }
            return unmappedError;
        }
        finally
        {
            if (write) mm.MmapLock.WriteUnlock(); else mm.MmapLock.ReadUnlock(cpu.Id);
        }
    }

    private static bool MadviseNeedMmapWriteLock(Advice a) => a switch
    {
        Advice.DontNeed or Advice.DontNeedLocked or Advice.Free or Advice.WillNeed or Advice.Cold or Advice.PageOut
            or Advice.PopulateRead or Advice.PopulateWrite or Advice.Collapse or Advice.Remove => false,
        _ => true,
    };

    /// <summary>
    /// madvise_vma_behavior for one VMA's part [start, end). A hugetlb VMA (a hugetlbfs file, VM_HUGETLB):
    /// MADV_DONTNEED needs a huge-page-aligned start and rounds the end down to a huge page
    /// (madvise_dontneed_free_valid_vma), MADV_FREE is EINVAL; MADV_COLD and MADV_PAGEOUT are EINVAL
    /// (can_madv_lru_vma), MADV_REMOVE on a private mapping EACCES (not shared and writable), MADV_WIPEONFORK
    /// EINVAL (a file VMA), MADV_WILLNEED a no-op (the fadvise of hugetlbfs); flag changes split only at
    /// huge-page boundaries (EINVAL otherwise).
    /// </summary>
    private static Errno MadviseVmaBehavior(Cpu cpu, MmStruct mm, Vma vma, out Vma? prev, ulong start, ulong end, Advice behavior)
    {
        prev = vma;
        if (HugetlbMapping.IsVmHugetlbPage(vma))
        {
            switch (behavior)
            {
                case Advice.DontNeed:
                case Advice.DontNeedLocked:
                {
                    Hstate h = HugetlbMapping.HstateVma(vma);
                    if ((start & ~HugetlbMapping.HugePageMask(h)) != 0) return Errno.EINVAL;
                    // "Avoid unexpected data loss by rounding down the number of huge pages freed."
                    end &= HugetlbMapping.HugePageMask(h);
                    if (start == end) return Errno.Success;
                    Memory.ZapPageRangeSingle(cpu, vma, start, end - start);
                    return Errno.Success;
                }
                case Advice.Free:
                case Advice.Cold:
                case Advice.PageOut:
                case Advice.WipeOnFork:
                case Advice.Collapse:
                    return Errno.EINVAL;
                case Advice.Remove:
                    return (vma.VmFlags & VmFlags.Locked) != 0 ? Errno.EINVAL : Errno.EACCES;
            }
        }
        switch (behavior)
        {
            case Advice.DontNeed:
            case Advice.DontNeedLocked:
            case Advice.Free:
            {
                // madvise_dontneed_free_valid_vma.
                VmFlags forbidden = VmFlags.PfnMap | (behavior == Advice.DontNeedLocked ? 0 : VmFlags.Locked);
                if ((vma.VmFlags & forbidden) != 0) return Errno.EINVAL;
                if (behavior == Advice.Free)
                {
                    MadviseFreeSingleVma(cpu, vma, start, end);
                    return Errno.Success;
                }
                // madvise_dontneed_single_vma: zap_details { .reclaim_pt = true, .even_cows = true }.
                Memory.ZapPageRangeSingle(cpu, vma, start, end - start, reclaimPt: true);
                return Errno.Success;
            }
            case Advice.WillNeed:
                return Errno.Success; // no swap: nothing to read ahead
            case Advice.Cold:
            case Advice.PageOut:
                // madvise_cold / madvise_pageout: "if (!can_madv_lru_vma(vma)) return -EINVAL;", which is
                // "!(vma->vm_flags & (VM_LOCKED|VM_PFNMAP|VM_HUGETLB))"; then no reclaim: nothing to age.
                if ((vma.VmFlags & (VmFlags.Locked | VmFlags.PfnMap | VmFlags.HugeTlb)) != 0) return Errno.EINVAL;
                MadviseColdOrPageout(cpu, vma, start, end, behavior == Advice.PageOut);
                return Errno.Success;
            case Advice.Remove:
            case Advice.Collapse:
                return Errno.EINVAL; // anonymous private memory: no file to punch, no khugepaged here
        }

        VmFlags newFlags = vma.VmFlags;
        switch (behavior)
        {
            case Advice.Normal: newFlags &= ~(VmFlags.RandRead | VmFlags.SeqRead); break;
            case Advice.Sequential: newFlags = (newFlags & ~VmFlags.RandRead) | VmFlags.SeqRead; break;
            case Advice.Random: newFlags = (newFlags & ~VmFlags.SeqRead) | VmFlags.RandRead; break;
            case Advice.DontFork: newFlags |= VmFlags.DontCopy; break;
            case Advice.DoFork:
                if ((vma.VmFlags & VmFlags.Io) != 0) return Errno.EINVAL;
                newFlags &= ~VmFlags.DontCopy;
                break;
            case Advice.WipeOnFork:
                if ((vma.VmFlags & VmFlags.Shared) != 0) return Errno.EINVAL;
                newFlags |= VmFlags.WipeOnFork;
                break;
            case Advice.KeepOnFork: newFlags &= ~VmFlags.WipeOnFork; break;
            case Advice.DontDump: newFlags |= VmFlags.DontDump; break;
            case Advice.DoDump: newFlags &= ~VmFlags.DontDump; break;
            case Advice.HugePage: newFlags = (newFlags & ~VmFlags.NoHugePage) | VmFlags.HugePage; break;
            case Advice.NoHugePage: newFlags = (newFlags & ~VmFlags.HugePage) | VmFlags.NoHugePage; break;
        }
        if (newFlags == vma.VmFlags) return Errno.Success;
        prev = Mmap.VmaModifyFlags(cpu, mm, vma, start, end, newFlags, out Errno error);
        return error;
    }

    /// <summary>
    /// madvise_free_single_vma: the pages stay mapped, their contents readable, and count in RssAnon; each
    /// exclusive or small anonymous folio is made clean and old (so that a later write marks it dirty
    /// again) and lazily freed (folio_mark_lazyfree: off the swap-backed LRU). Only reclaim discards a
    /// lazily freed folio that is still clean, and this kernel has none: what a program observes is what
    /// Linux shows without memory pressure. mmap_lock held for read.
    /// </summary>
    private static void MadviseFreeSingleVma(Cpu cpu, Vma vma, ulong start, ulong end)
    {
        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(vma.Mm, fullmm: false);
        vma.Mm.UpdateHiwaterRss();
        var walk = new MadviseFreeWalk(cpu, tlb, vma);
        PageWalk.WalkRange(cpu, vma.Mm, start, end, ref walk);
        tlb.Finish();
    }

    /// <summary>madvise_free_pte_range (6.18) and madvise_free_huge_pmd as walk callbacks.</summary>
    private struct MadviseFreeWalk(Cpu cpu, MmuGather tlb, Vma vma) : IPageWalkOps
    {
        private readonly Machine _m = vma.Mm.Machine;
        private readonly Cpu cpu = cpu;
        private readonly MmuGather tlb = tlb;
        private readonly Vma vma = vma;
        private bool _forceFlush;

        public readonly PteWalk PteWalk => PteWalk.Write;
        public readonly MmuGather? Tlb => tlb;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>
        /// madvise_free_huge_pmd: the huge zero PMD and a THP other processes may map stay as they are
        /// ("if (folio_maybe_mapped_shared(folio)) goto out;"); a THP the range covers only in part is
        /// split ("if (next - addr != HPAGE_PMD_SIZE) { ... split_folio(folio); ...") and its PTEs are
        /// walked; a whole one is made clean and old and lazily freed.
        /// </summary>
        public readonly WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (!pmdval.Leaf) return WalkAction.Subtree;
            int* ptl = PgTable.PmdTransHugeLock(_m, pmd);
            if (ptl == null) return WalkAction.Again;
            Pmd orig = PgTable.Get(pmd);
            if (HugeMemory.IsHugeZeroPmd(_m, orig) || Folio.MaybeMappedShared(_m.Vmemmap.PfnToPage(orig.Pfn)))
            {
                Spin.Unlock(ptl);
                return WalkAction.Continue; // pte_offset_map_lock finds no table under a huge PMD
            }
            if (next - addr != Geometry.PmdSize)
            {
                Spin.Unlock(ptl);
                // split_folio remaps the THP by PTEs; the walk then deals with them one by one. Here the
                // PMD is split and the folio stays large, as when split_folio fails: without reclaim the
                // two differ in no observable way (AnonHugePages drops, RssAnon stays).
                HugeMemory.SplitHugePmd(cpu, vma, pmd, addr);
                return WalkAction.Again;
            }
            if (orig.Young || orig.Dirty)
            {
                Pmd old = PgTable.Exchange(pmd, orig.MkInvalid()); // pmdp_invalidate
                PgTable.Set(pmd, old.MkOld().MkClean());
                tlb.AdjustRange(addr, Geometry.PmdSize); // tlb_remove_pmd_tlb_entry
            }
            MarkLazyfree(_m.Vmemmap.PfnToPage(orig.Pfn));
            Spin.Unlock(ptl);
            return WalkAction.Continue;
        }

        /// <summary>
        /// madvise_free_pte_range for one present entry: the zero page is skipped; a large folio the range
        /// does not cover whole is split as far as anything observes it (<see cref="SplitFolioZeroSubpages"/>)
        /// and otherwise left as it is; other entries lose young and dirty and their folio is lazily freed.
        /// PTL held.
        /// </summary>
        public int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end)
        {
            if (!ptent.Present) return 1;
            ulong pfn = ptent.Pfn;
            if (ptent.Special || pfn == _m.ZeroPfn) return 1; // vm_normal_folio() == NULL
            Page* page = _m.Vmemmap.PfnToPage(pfn);
            int nr = 1;
            Page* head = page;
            if (page->IsCompound)
            {
                ulong headPfn = Folio.HeadPfn(_m, pfn);
                head = _m.Vmemmap.PfnToPage(headPfn);
                int folioPages = Folio.NrPages(head);
                // madvise_folio_pte_batch: young and dirty do not break the run.
                nr = Memory.FolioPteBatch(pte, ptent, headPfn + (ulong)folioPages, (int)((end - addr) >> Geometry.PageShift), FpbFlags.None);
                if (nr < folioPages)
                {
                    // "if (folio_maybe_mapped_shared(folio)) continue; ... err = split_folio(folio);"
                    if (!Folio.MaybeMappedShared(head) && SplitFolioZeroSubpages(cpu, tlb, vma, pte, addr, pfn, headPfn, folioPages))
                    {
                        _forceFlush = true;
                        map.Break = true;
                    }
                    return nr;
                }
            }
            for (int i = 0; i < nr; i++) // clear_young_dirty_ptes
            {
                Pte e = PgTable.Get(pte + i);
                if (!e.Young && !e.Dirty) continue;
                e = PgTable.GetAndClear(pte + i);
                PgTable.Set(pte + i, e.MkOld().MkClean());
                tlb.AdjustRange(addr + ((ulong)i << Geometry.PageShift), Geometry.PageSize); // tlb_remove_tlb_entries
            }
            MarkLazyfree(head);
            return nr;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end)
        {
            if (_forceFlush) tlb.FlushMmuTlbOnly();
        }

        public void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end)
        {
            if (_forceFlush) tlb.FlushMmuFree();
            _forceFlush = false;
        }

        /// <summary>folio_mark_lazyfree → lru_lazyfree: an anonymous swap-backed folio leaves the anonymous LRU.</summary>
        private static void MarkLazyfree(Page* head)
        {
            if ((head->Mapping & PageTypes.MappingAnon) == 0 || !head->TestFlag(PG.Swapbacked) || head->TestFlag(PG.Unevictable)) return;
            head->ClearFlagAtomic(PG.Active);
            head->ClearFlagAtomic(PG.Referenced);
            head->ClearFlagAtomic(PG.Swapbacked);
        }
    }

    /// <summary>
    /// madvise_cold / madvise_pageout over one VMA: madvise_cold_or_pageout_pte_range as a walk. There is
    /// no swap, so of what MADV_PAGEOUT hands to reclaim only lazily freed folios go: shrink_folio_list →
    /// try_to_unmap_one discards an anonymous folio that is not swap-backed when it is still clean
    /// ("if (ref_count == 1 + map_count &amp;&amp; !folio_test_dirty(folio)) { dec_mm_counter(mm, MM_ANONPAGES);
    /// goto discard; }") and makes it swap-backed again when a write dirtied it. MADV_COLD only ages,
    /// which nothing here observes. mmap_lock held for read.
    /// </summary>
    private static void MadviseColdOrPageout(Cpu cpu, Vma vma, ulong start, ulong end, bool pageout)
    {
        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(vma.Mm, fullmm: false);
        var walk = new ColdOrPageoutWalk(cpu, tlb, vma, pageout);
        PageWalk.WalkRange(cpu, vma.Mm, start, end, ref walk);
        tlb.Finish();
    }

    /// <summary>madvise_cold_or_pageout_pte_range (6.18) as walk callbacks.</summary>
    private struct ColdOrPageoutWalk(Cpu cpu, MmuGather tlb, Vma vma, bool pageout) : IPageWalkOps
    {
        private readonly Machine _m = vma.Mm.Machine;
        private readonly Cpu cpu = cpu;
        private readonly MmuGather tlb = tlb;
        private readonly Vma vma = vma;
        private readonly bool pageout = pageout;
        private bool _forceFlush;

        public readonly PteWalk PteWalk => PteWalk.Write;
        public readonly MmuGather? Tlb => tlb;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>
        /// The huge-PMD part: the huge zero PMD and a THP other processes may map are left alone; a THP
        /// the range covers only in part is split ("if (next - addr != HPAGE_PMD_SIZE) { ...
        /// split_folio(folio); ... goto regular_folio;"), here by its PMD, the folio staying large as when
        /// split_folio fails; a whole one is only aged (no swap, and a lazily freed THP is kept).
        /// </summary>
        public readonly WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (!pmdval.Leaf) return WalkAction.Subtree;
            int* ptl = PgTable.PmdTransHugeLock(_m, pmd);
            if (ptl == null) return WalkAction.Again;
            Pmd orig = PgTable.Get(pmd);
            bool split = next - addr != Geometry.PmdSize && !HugeMemory.IsHugeZeroPmd(_m, orig)
                && !Folio.MaybeMappedShared(_m.Vmemmap.PfnToPage(orig.Pfn));
            Spin.Unlock(ptl);
            if (!split) return WalkAction.Continue;
            HugeMemory.SplitHugePmd(cpu, vma, pmd, addr);
            return WalkAction.Again;
        }

        /// <summary>One present entry: with MADV_PAGEOUT, a clean lazily freed small folio mapped only here is discarded. PTL held.</summary>
        public int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end)
        {
            if (!ptent.Present) return 1;
            ulong pfn = ptent.Pfn;
            if (ptent.Special || pfn == _m.ZeroPfn) return 1;
            Page* page = _m.Vmemmap.PfnToPage(pfn);
            if (page->IsCompound)
            {
                // A large folio the range does not cover whole is split ("if (nr < folio_nr_pages(folio))
                // { ... err = split_folio(folio); ...", unless other processes may map it); one covered
                // whole is reclaimed whole or not at all, and without swap only a lazily freed one could
                // go, which this kernel keeps (see PmdEntry).
                ulong headPfn = Folio.HeadPfn(_m, pfn);
                Page* head = _m.Vmemmap.PfnToPage(headPfn);
                int folioPages = Folio.NrPages(head);
                int nr = Memory.FolioPteBatch(pte, ptent, headPfn + (ulong)folioPages, (int)((end - addr) >> Geometry.PageShift), FpbFlags.None);
                if (nr < folioPages && !Folio.MaybeMappedShared(head))
                {
                    if (SplitFolioZeroSubpages(cpu, tlb, vma, pte, addr, pfn, headPfn, folioPages))
                    {
                        _forceFlush = true;
                        map.Break = true;
                    }
                }
                return nr;
            }
            if (!pageout) return 1;
            if ((page->Mapping & PageTypes.MappingAnon) == 0 || page->TestFlag(PG.Swapbacked) || page->TestFlag(PG.Dirty)) return 1;
            if (Folio.Mapcount(page) != 1 || Volatile.Read(ref page->RefCount) != 1 || ptent.Dirty) return 1;
            Pte old = PgTable.GetAndClear(pte); // ptep_clear_flush's clear
            if (old.Dirty)
            {
                // Written since MADV_FREE: remapped and swap-backed again.
                PgTable.Set(pte, old);
                page->SetFlagAtomic(PG.Swapbacked);
                return 1;
            }
            tlb.AdjustRange(addr, Geometry.PageSize);
            Rmap.FolioRemoveRmapPte(cpu, _m, pfn, vma.Mm);
            vma.Mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, -1);
            map.Entries--;
            if (tlb.RemovePage(pfn))
            {
                _forceFlush = true;
                map.Break = true;
            }
            return 1;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end)
        {
            if (_forceFlush) tlb.FlushMmuTlbOnly(); // the TLB must be clean before the lock goes
        }

        public void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end)
        {
            if (_forceFlush) tlb.FlushMmuFree();
            _forceFlush = false;
        }
    }

    /// <summary>
    /// What split_folio of an anonymous folio leaves for anyone to observe: remap_page with
    /// RMP_USE_SHARED_ZEROPAGE ("try_to_map_unused_to_zeropage": a subpage whose contents are all zero,
    /// in a VMA that is not VM_LOCKED, is mapped by the shared zero page instead and leaves MM_ANONPAGES).
    /// The folio itself stays large here, PTE-mapped where it is still mapped, as when split_folio fails
    /// after the remap; the subpages no one maps are freed with it (or by the deferred split). Covers the
    /// folio's entries in this PTE table, whose lock is held; <paramref name="pte"/> maps
    /// <paramref name="pfn"/> at <paramref name="addr"/>. True when references went to the gather (the
    /// caller flushes before the lock goes).
    /// </summary>
    private static bool SplitFolioZeroSubpages(Cpu cpu, MmuGather tlb, Vma vma, Pte* pte, ulong addr, ulong pfn, ulong headPfn, int folioPages)
    {
        Machine m = vma.Mm.Machine;
        if ((vma.VmFlags & VmFlags.Locked) != 0) return false;
        long index = (long)Geometry.PteIndex(addr);
        int remapped = 0;
        for (int i = 0; i < folioPages; i++)
        {
            long delta = (long)(headPfn + (ulong)i) - (long)pfn;
            if (index + delta < 0 || index + delta >= 512) continue; // mapped through another table, if at all
            ulong va = unchecked(addr + (ulong)(delta << Geometry.PageShift));
            if (va < vma.VmStart || va >= vma.VmEnd) continue;
            Pte* e = pte + delta;
            Pte cur = PgTable.Get(e);
            if (!cur.Present || cur.Pfn != headPfn + (ulong)i) continue;
            if (m.Vmemmap.PfnToPage(headPfn + (ulong)i)->TestFlag(PG.Mlocked)) continue;
            if (m.Memory.Frame(headPfn + (ulong)i).IndexOfAnyExcept((byte)0) >= 0) continue;
            PgTable.GetAndClear(e);
            PgTable.Set(e, Pte.PfnPte(m.ZeroPfn, vma.VmPageProt).MkSpecial());
            tlb.AdjustRange(va, Geometry.PageSize);
            Folio.RemoveRmapPtes(cpu, m, headPfn, headPfn + (ulong)i, 1, vma.Mm);
            remapped++;
        }
        if (remapped == 0) return false;
        vma.Mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, -remapped);
        tlb.RemoveFolioPages(headPfn, remapped);
        return true;
    }

    /// <summary>
    /// madvise_populate → faultin_page_range → __get_user_pages with FOLL_MADV_POPULATE, over the whole
    /// range rather than VMA by VMA: it stops at the first hole with ENOMEM ("vma = vma_lookup(mm,
    /// start); if (!vma) { ret = -ENOMEM; ...") and at the first VMA check_vma_flags refuses with EINVAL
    /// ("if (check_vma_flags(vma, gup_flags)) { ret = -EINVAL; ...": a write needs VM_WRITE, a read
    /// VM_READ, no FOLL_FORCE); what it faulted in before stays. A fault that fails is EFAULT, OOM ENOMEM.
    /// </summary>
    private static Errno MadvisePopulate(Cpu cpu, MmStruct mm, ulong start, ulong end, bool write)
    {
        FaultFlags ff = FaultFlags.Remote | (write ? FaultFlags.Write : 0);
        while (start < end)
        {
            Vma? vma = mm.Vmas.FindVma(start);
            if (vma is null || vma.VmStart > start) return Errno.ENOMEM;
            if ((vma.VmFlags & (write ? VmFlags.Write : VmFlags.Read)) == 0 || (vma.VmFlags & VmFlags.PfnMap) != 0) return Errno.EINVAL;
            ulong stop = Math.Min(end, vma.VmEnd);
            // GUP advances by the page mask it is given: a whole huge page at a time for hugetlb.
            ulong step = HugetlbMapping.IsVmHugetlbPage(vma) ? HugetlbMapping.HugePageSize(HugetlbMapping.HstateVma(vma)) : Geometry.PageSize;
            for (ulong a = start; a < stop; a = (a + step) & ~(step - 1))
            {
                if (Gup.Populated(cpu, mm, vma, a, write)) continue;
                VmFaultT r = PageFaultHandler.HandleMmFault(cpu, vma, a, ff);
                if ((r & VmFaultT.Oom) != 0) return Errno.ENOMEM;
                if ((r & VmFaultT.Error) != 0) return Errno.EFAULT;
            }
            start = stop;
        }
        return Errno.Success;
    }
}
