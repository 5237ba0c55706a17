using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm.Huge;

/// <summary>
/// The fault side of mm/hugetlb.c for private mappings: hugetlb_fault, hugetlb_no_page, hugetlb_wp
/// (copy the whole huge page, or reuse it when this mapping is its only one) and unmap_ref_private, and
/// the VMA side of alloc_hugetlb_folio (which reservation a fault may use). A 2 MiB page is one PMD
/// leaf, a 1 GiB page one PUD leaf; neither is ever split.
/// </summary>
/// <remarks>
/// Locks, in order: mmap_lock (read) → the inode's fault mutex for the index (serialises instantiating one
/// huge page, so two CPUs never both allocate for it) → the entry's lock (huge_pte_lock). The
/// hugetlb VMA lock of the kernel guards PMD sharing, which private mappings never do: mmap_lock suffices.
/// </remarks>
internal static unsafe class HugetlbFault
{
    /// <summary>
    /// hugetlb_fault: a hwpoison entry is VM_FAULT_HWPOISON_LARGE; a none entry goes to hugetlb_no_page;
    /// a write or unshare on a read-only entry to hugetlb_wp; anything else updates the access flags.
    /// mmap_lock held for read; no lock held on return.
    /// </summary>
    public static VmFaultT Fault(Cpu cpu, Vma vma, ulong address, FaultFlags flags)
    {
        MmStruct mm = vma.Mm;
        Hstate h = HugetlbMapping.HstateVma(vma);
        ulong sz = HugetlbMapping.HugePageSize(h);
        ulong haddr = address & HugetlbMapping.HugePageMask(h);
        Pte* ptep = HugetlbMapping.HugePteOffset(mm, haddr, sz);
        if (ptep != null && HugetlbMapping.IsHugetlbEntryHwpoisoned(PgTable.Get(ptep)))
            return VmFaultT.HwpoisonLarge;

        HugetlbFile file = vma.Hugetlb.File!;
        ulong idx = HugetlbMapping.VmaHugecacheOffset(h, vma, haddr);
        Lock mutex = file.FaultMutex(idx);
        mutex.Enter();
        try
        {
            ptep = HugetlbMapping.HugePteAlloc(cpu, mm, haddr, sz);
            if (ptep == null) return VmFaultT.Oom;
            Pte entry = PgTable.Get(ptep);
            if (entry.None) return HugetlbNoPage(cpu, vma, idx, address, ptep, entry, flags);
            if (!entry.Present) return VmFaultT.None; // hwpoison meanwhile: the next fault reports it

            int* ptl = HugetlbMapping.HugePteLock(h, mm, ptep);
            try
            {
                if (PgTable.Get(ptep) != entry) return VmFaultT.None;
                if ((flags & (FaultFlags.Write | FaultFlags.Unshare)) != 0)
                {
                    if (!entry.Write) return HugetlbWp(cpu, vma, address, ptep, flags, ptl, mutex);
                    if ((flags & FaultFlags.Write) != 0) entry = entry.MkDirty();
                }
                entry = entry.MkYoung();
                // huge_ptep_set_access_flags (x86: only a dirty update is written; A alone the MMU sets).
                if ((flags & FaultFlags.Write) != 0 && PgTable.Get(ptep) != entry) PgTable.Set(ptep, entry);
                return VmFaultT.None;
            }
            finally
            {
                Spin.Unlock(ptl);
            }
        }
        finally
        {
            if (mutex.IsHeldByCurrentThread) mutex.Exit();
        }
    }

    /// <summary>
    /// hugetlb_no_page for a private mapping: a VMA the owner took a page back from is killed (SIGBUS);
    /// otherwise a folio is allocated (the reservation of idx if it has one), zeroed, mapped read-only by a
    /// new exclusive anonymous rmap, and a write goes straight on to hugetlb_wp, which reuses it. Pool
    /// exhaustion is SIGBUS. The fault mutex held; takes and drops the entry's lock.
    /// </summary>
    private static VmFaultT HugetlbNoPage(Cpu cpu, Vma vma, ulong idx, ulong address, Pte* ptep, Pte oldPte, FaultFlags flags)
    {
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        Hstate h = HugetlbMapping.HstateVma(vma);
        ulong haddr = address & HugetlbMapping.HugePageMask(h);
        if ((vma.Hugetlb.ResvFlags & HugetlbVma.ResvUnmapped) != 0) return VmFaultT.Sigbus; // "killed due to inadequate hugepage pool"

        ulong folio = AllocHugetlbFolioVma(cpu, vma, haddr, avoidReserve: false, out bool usedReserve);
        if (folio == 0) return VmFaultT.Sigbus; // -ENOSPC → vmf_error
        int npages = HugetlbMapping.PagesPerHugePage(h);
        for (int i = 0; i < npages; i++) m.Memory.ClearFrame(folio + (ulong)i); // clear_huge_folio
        m.Vmemmap.PfnToPage(folio)->SetFlag(PG.Uptodate); // __folio_mark_uptodate: the zeroing comes first
        AnonVma anonVma = vma.AnonVma ?? Memory.AnonVmaPrepare(vma);

        int* ptl = HugetlbMapping.HugePteLock(h, mm, ptep);
        if (PgTable.Get(ptep) != oldPte)
        {
            // Not reachable for a private mapping while the fault mutex of idx is held (only a fault of the
            // same index installs this entry); kept as the kernel keeps it.
            Spin.Unlock(ptl);
            RestoreReserveOnError(vma, haddr, usedReserve);
            Folio.PutRefs(cpu, m, folio, 1);
            return VmFaultT.None;
        }
        HugetlbMapping.HugetlbAddNewAnonRmap(m, folio, vma, anonVma, haddr);
        // A private mapping starts read-only: the write below (or a later one) goes through hugetlb_wp.
        PgTable.Set(ptep, HugetlbMapping.MakeHugePte(vma, folio, writable: false));
        HugetlbMapping.HugetlbCountAdd(mm, npages);
        VmFaultT ret = VmFaultT.None;
        if ((flags & FaultFlags.Write) != 0) ret = HugetlbWp(cpu, vma, address, ptep, flags, ptl, mutex: null);
        Spin.Unlock(ptl);
        return ret;
    }

    /// <summary>
    /// hugetlb_wp for a private mapping: when the folio's only mapping is this one (folio_mapcount == 1;
    /// not its refcount, so a FOLL_GET reference taken elsewhere does not force a copy - the kernel's known
    /// leak, which cow.c marks as an expected failure), make it exclusive and writable; otherwise copy the
    /// whole huge page into a new folio (the owner without its reserve, so that the reservations of the
    /// pages it has not faulted stay for them), and switch the entry after clearing and flushing it. When
    /// the owner cannot get a page, the page is taken back from the fork children instead
    /// (unmap_ref_private) and reused. Entered with the entry's lock held (and the fault mutex); returns with it held.
    /// </summary>
    private static VmFaultT HugetlbWp(Cpu cpu, Vma vma, ulong address, Pte* ptep, FaultFlags flags, int* ptl, Lock? mutex)
    {
        bool unshare = (flags & FaultFlags.Unshare) != 0;
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        Hstate h = HugetlbMapping.HstateVma(vma);
        ulong sz = HugetlbMapping.HugePageSize(h);
        ulong haddr = address & HugetlbMapping.HugePageMask(h);
        Pte pte = PgTable.Get(ptep);
        if (!unshare && (vma.VmFlags & VmFlags.Write) == 0) return VmFaultT.Sigsegv; // no FOLL_FORCE write faults on hugetlb

        ulong oldPfn = pte.Pfn;
        Page* old = m.Vmemmap.PfnToPage(oldPfn);
        while (true)
        {
            if (HugetlbMapping.HugetlbMapcount(old) == 1 && (old->Mapping & PageTypes.MappingAnon) != 0)
            {
                if (!old->TestFlag(PG.AnonExclusive))
                {
                    old->Mapping = Rmap.AnonMapping(vma.AnonVma!); // folio_move_anon_rmap
                    old->SetFlagAtomic(PG.AnonExclusive);
                }
                // set_huge_ptep_maybe_writable: PageAnonExclusive is set before the entry becomes writable.
                if (!unshare && (vma.VmFlags & VmFlags.Write) != 0)
                    PgTable.Set(ptep, PgTable.Get(ptep).MkDirty().MkWrite());
                return VmFaultT.None;
            }
            Bug.On(old->TestFlag(PG.AnonExclusive), "hugetlb_wp: folio {0:x} mapped {1} times is PageAnonExclusive", oldPfn, HugetlbMapping.HugetlbMapcount(old));

            // The owner copies without its reserve (there is no page-cache page for anonymous memory).
            bool outsideReserve = (vma.Hugetlb.ResvFlags & HugetlbVma.ResvOwner) != 0;
            Interlocked.Increment(ref old->RefCount); // folio_get
            Spin.Unlock(ptl);
            ulong newPfn = AllocHugetlbFolioVma(cpu, vma, haddr, outsideReserve, out _);
            if (newPfn == 0)
            {
                Folio.PutRefs(cpu, m, oldPfn, 1);
                if (!outsideReserve)
                {
                    Spin.Lock(ptl); // the caller expects the lock held
                    return VmFaultT.Sigbus;
                }
                // unmap_ref_private with the fault mutex dropped, as the kernel drops it (the children's
                // zap takes their locks); then try the reuse again if the entry is unchanged.
                mutex?.Exit();
                UnmapRefPrivate(cpu, vma, oldPfn, haddr);
                mutex?.Enter();
                Spin.Lock(ptl);
                Pte* again = HugetlbMapping.HugePteOffset(mm, haddr, sz);
                if (again == ptep && PgTable.Get(ptep) == pte) continue;
                return VmFaultT.None; // raced: the job is done
            }

            AnonVma anonVma = vma.AnonVma ?? Memory.AnonVmaPrepare(vma);
            CopyUserHugePage(m, newPfn, oldPfn, HugetlbMapping.PagesPerHugePage(h));
            m.Vmemmap.PfnToPage(newPfn)->SetFlag(PG.Uptodate);
            Spin.Lock(ptl);
            bool switched = false;
            if (PgTable.Get(ptep) == pte)
            {
                // huge_ptep_clear_flush: no CPU may write the old page through a stale translation once
                // the new one is visible.
                PgTable.GetAndClear(ptep);
                TlbFlush.FlushMmRange(cpu, mm, haddr, haddr + sz, HugetlbMapping.HugePageShift(h), false);
                HugetlbMapping.HugetlbRemoveRmap(old);
                HugetlbMapping.HugetlbAddNewAnonRmap(m, newPfn, vma, anonVma, haddr);
                PgTable.Set(ptep, HugetlbMapping.MakeHugePte(vma, newPfn, writable: !unshare));
                switched = true;
            }
            // The old folio loses its mapping's reference once switched; either way the one taken above.
            if (!switched) Folio.PutRefs(cpu, m, newPfn, 1);
            else Folio.PutRefs(cpu, m, oldPfn, 1);
            Folio.PutRefs(cpu, m, oldPfn, 1);
            return VmFaultT.None;
        }
    }

    /// <summary>
    /// unmap_ref_private: the owner of a private mapping failed to COW a page it shares with fork children;
    /// the page is unmapped from every other private VMA of the inode that does not own the reservation
    /// (marking it HPAGE_RESV_UNMAPPED, so a later fault there is SIGBUS rather than silently new data).
    /// mmap_lock held for read by the owner; the children's page tables are changed under their PTLs.
    /// </summary>
    private static void UnmapRefPrivate(Cpu cpu, Vma vma, ulong headPfn, ulong haddr)
    {
        HugetlbFile file = vma.Hugetlb.File!;
        Hstate h = file.H;
        ulong pgoff = ((haddr - vma.VmStart) >> Geometry.PageShift) + vma.VmPgoff;
        Vma[] others;
        lock (file.IMmapLock) others = [.. file.IMmap];
        foreach (Vma iter in others)
        {
            if (ReferenceEquals(iter, vma)) continue;
            if ((iter.VmFlags & VmFlags.MayShare) != 0) continue;
            if ((iter.Hugetlb.ResvFlags & HugetlbVma.ResvOwner) != 0) continue;
            ulong first = iter.VmPgoff, last = iter.VmPgoff + iter.Pages;
            if (pgoff < first || pgoff >= last) continue;
            ulong address = iter.VmStart + ((pgoff - first) << Geometry.PageShift);
            // The kernel holds i_mmap_rwsem, which every change to these VMAs takes; here their mm's
            // mmap_lock (read) keeps the VMA as it is while its page goes. Recheck it is still ours.
            MmStruct other = iter.Mm;
            other.MmapLock.ReadLock(cpu.Id);
            try
            {
                if (ReferenceEquals(iter.Mm, other) && iter.Hugetlb.File == file && iter.VmPgoff == first)
                    HugetlbMapping.UnmapHugepageRangeOwnGather(cpu, iter, address, address + HugetlbMapping.HugePageSize(h), headPfn);
            }
            finally
            {
                other.MmapLock.ReadUnlock(cpu.Id);
            }
        }
    }

    /// <summary>
    /// alloc_hugetlb_folio, the VMA side: the fault may use the reservation of its index when the VMA owns
    /// the map and that index has not consumed it (vma_needs_reservation == 0, vma_has_reserves), unless
    /// it must avoid reserves (the owner's COW); a fork child and a VM_NORESERVE mapping always allocate
    /// beyond the reserves. The owner's index is recorded as consumed (vma_commit_reservation). The
    /// folio's head PFN with one reference, or 0 when the pool has nothing to give (-ENOSPC).
    /// </summary>
    public static ulong AllocHugetlbFolioVma(Cpu cpu, Vma vma, ulong haddr, bool avoidReserve, out bool usedReserve)
    {
        Hstate h = HugetlbMapping.HstateVma(vma);
        ulong idx = HugetlbMapping.VmaHugecacheOffset(h, vma, haddr);
        ResvMap? resv = (vma.Hugetlb.ResvFlags & HugetlbVma.ResvOwner) != 0 ? vma.Hugetlb.Resv : null;
        usedReserve = !avoidReserve && resv is not null && !resv.Consumed(idx);
        ulong pfn = vma.Mm.Machine.Hugetlb.AllocHugetlbFolio(h, cpu.Id, usedReserve);
        if (pfn == 0) return 0;
        if (resv is not null && !avoidReserve) resv.Consume(idx);
        return pfn;
    }

    public static ulong AllocHugetlbFolioVma(Cpu cpu, Vma vma, ulong haddr, bool avoidReserve)
        => AllocHugetlbFolioVma(cpu, vma, haddr, avoidReserve, out _);

    /// <summary>restore_reserve_on_error: a folio that used idx's reservation is given back unmapped; the index has its reservation again.</summary>
    private static void RestoreReserveOnError(Vma vma, ulong haddr, bool usedReserve)
    {
        if (!usedReserve) return;
        Hstate h = HugetlbMapping.HstateVma(vma);
        vma.Hugetlb.Resv!.Restore(HugetlbMapping.VmaHugecacheOffset(h, vma, haddr));
    }

    /// <summary>copy_user_large_folio: every subpage copied.</summary>
    public static void CopyUserHugePage(Machine m, ulong dst, ulong src, int npages)
    {
        for (int i = 0; i < npages; i++) m.Memory.CopyFrame(dst + (ulong)i, src + (ulong)i);
    }
}
