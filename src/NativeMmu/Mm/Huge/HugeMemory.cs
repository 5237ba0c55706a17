using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Diagnostics;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// PMD-mapped transparent huge pages (mm/huge_memory.c, mm/pgtable-generic.c): the huge anonymous
/// fault and its zero-page read, write-protect faults on a huge PMD, the PMD split, zap, fork's copy,
/// mprotect and GUP's follow. Every huge PMD of anonymous memory has a PTE table deposited under it
/// (counted in VmPTE) so that a split never needs to allocate.
/// </summary>
internal static unsafe class HugeMemory
{
    public const int HpagePmdNr = 1 << Thp.PmdOrder;

    // ---------------------------------------------------------------------------------------------
    // Deposited page tables (pgtable_trans_huge_deposit / _withdraw): a list threaded through the
    // deposited tables' lru words, its head in the PMD table's pmd_huge_pte. PMD lock held.
    // ---------------------------------------------------------------------------------------------

    private static ulong ListHead(Machine m, ulong pfn) => m.Vmemmap.PageVaddr(pfn) + 8; // &page->lru

    private static ulong PfnOfListHead(Machine m, ulong vaddr) => m.Vmemmap.PfnOfVaddr(vaddr - 8);

    public static void Deposit(Machine m, Pmd* pmd, ulong table)
    {
        Page* owner = m.Vmemmap.PfnToPage(PgTable.TablePfnOf(m.Memory, pmd));
        Page* t = m.Vmemmap.PfnToPage(table);
        ulong self = ListHead(m, table);
        if (owner->PmdHugePte == 0)
        {
            t->LruNext = t->LruPrev = self; // INIT_LIST_HEAD
        }
        else
        {
            // list_add(&pgtable->lru, &pmd_huge_pte->lru)
            Page* top = m.Vmemmap.PfnToPage(m.Vmemmap.PfnOfVaddr(owner->PmdHugePte));
            ulong topHead = ListHead(m, m.Vmemmap.PfnOfVaddr(owner->PmdHugePte));
            ulong next = top->LruNext;
            m.Vmemmap.PfnToPage(PfnOfListHead(m, next))->LruPrev = self;
            t->LruNext = next;
            t->LruPrev = topHead;
            top->LruNext = self;
        }
        owner->PmdHugePte = m.Vmemmap.PageVaddr(table);
    }

    public static ulong Withdraw(Machine m, Pmd* pmd)
    {
        Page* owner = m.Vmemmap.PfnToPage(PgTable.TablePfnOf(m.Memory, pmd));
        Bug.On(owner->PmdHugePte == 0, "withdrawing a page table under pmd {0:x}, but none is deposited", (ulong)pmd);
        ulong table = m.Vmemmap.PfnOfVaddr(owner->PmdHugePte);
        Page* t = m.Vmemmap.PfnToPage(table);
        ulong self = ListHead(m, table);
        if (t->LruNext == self)
        {
            owner->PmdHugePte = 0;
        }
        else
        {
            ulong next = t->LruNext, prev = t->LruPrev;
            owner->PmdHugePte = m.Vmemmap.PageVaddr(PfnOfListHead(m, next)); // list_first_entry
            m.Vmemmap.PfnToPage(PfnOfListHead(m, next))->LruPrev = prev;     // list_del
            m.Vmemmap.PfnToPage(PfnOfListHead(m, prev))->LruNext = next;
        }
        t->LruNext = t->LruPrev = 0; // the words are the table's own again (compound_head, pmd_huge_pte)
        return table;
    }

    /// <summary>The number of tables deposited under the PMD table <paramref name="pmdTable"/> (for the invariant audit).</summary>
    public static int DepositedCount(Machine m, ulong pmdTable)
    {
        ulong top = m.Vmemmap.PfnToPage(pmdTable)->PmdHugePte;
        if (top == 0) return 0;
        ulong first = m.Vmemmap.PfnOfVaddr(top), head = ListHead(m, first);
        int n = 1;
        for (ulong e = m.Vmemmap.PfnToPage(first)->LruNext; e != head && n <= Geometry.PtrsPerPmd; e = m.Vmemmap.PfnToPage(PfnOfListHead(m, e))->LruNext) n++;
        return n;
    }

    /// <summary>pgtable_trans_huge_deposit + mm_inc_nr_ptes: the table under a new huge PMD, counted in VmPTE. PMD lock held.</summary>
    private static void DepositTable(MmStruct mm, Pmd* pmd, ulong table)
    {
        Deposit(mm.Machine, pmd, table);
        mm.AddPgtablesBytes(PgTable.TableBytes);
    }

    /// <summary>zap_deposited_table: the table under a huge PMD goes with it (pte_free, mm_dec_nr_ptes). PMD lock held.</summary>
    private static void ZapDepositedTable(Cpu cpu, MmStruct mm, Pmd* pmd) => PgTable.PteFreeDeposited(cpu, mm, Withdraw(mm.Machine, pmd));

    /// <summary>is_huge_zero_pmd.</summary>
    public static bool IsHugeZeroPmd(Machine m, Pmd pmd) => pmd.Present && m.HugeZero.IsHead(pmd.Pfn);

    // ---------------------------------------------------------------------------------------------
    // Faults
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// The huge part of __handle_mm_fault, entered with the PMD read once: a none PMD in a VMA that allows
    /// PMD order goes to create_huge_pmd; a huge PMD to wp_huge_pmd or huge_pmd_set_accessed. Fallback
    /// sends the fault on to the PTE level.
    /// </summary>
    public static VmFaultT HugePmdFault(ref VmFault vmf, Pmd orig)
    {
        Machine m = vmf.Mm.Machine;
        if (orig.None)
        {
            if ((m.Thp.AllowableOrders(vmf.Vma.VmFlags) & (1u << Thp.PmdOrder)) == 0) return VmFaultT.Fallback;
            return DoHugePmdAnonymousPage(ref vmf);
        }
        if ((vmf.Flags & (FaultFlags.Write | FaultFlags.Unshare)) != 0 && !orig.Write)
            return DoHugePmdWpPage(ref vmf, orig);
        HugePmdSetAccessed(ref vmf, orig);
        return VmFaultT.None;
    }

    /// <summary>
    /// do_huge_pmd_anonymous_page: a read maps the huge zero folio (use_zero_page); a write maps a new
    /// zeroed PMD-order folio, writable and dirty. Either way a PTE table is deposited under the PMD.
    /// </summary>
    private static VmFaultT DoHugePmdAnonymousPage(ref VmFault vmf)
    {
        Vma vma = vmf.Vma;
        MmStruct mm = vmf.Mm;
        Machine m = mm.Machine;
        ulong haddr = vmf.Address & Geometry.PmdMask;
        if (haddr < vma.VmStart || haddr + Geometry.PmdSize > vma.VmEnd) return VmFaultT.Fallback; // thp_vma_suitable_order
        AnonVma anonVma = vma.AnonVma ?? Memory.AnonVmaPrepare(vma); // vmf_anon_prepare

        if ((vmf.Flags & FaultFlags.Write) == 0 && !m.Config.ForbidZeroPage && m.Thp.UseZeroPage)
        {
            ulong pgtable = PgTable.AllocTable(vmf.Cpu, m);
            if (pgtable == 0) return VmFaultT.Oom;
            ulong zero = m.HugeZero.MmGet(vmf.Cpu, mm);
            if (zero == 0)
            {
                PgTable.FreeTable(vmf.Cpu, m, pgtable);
                m.Counters.Add(vmf.Cpu.Id, VmEvent.ThpFaultFallback);
                return VmFaultT.Fallback;
            }
            int* zptl = PgTable.PmdLock(m, vmf.Pmd);
            bool set = PgTable.Get(vmf.Pmd).None;
            if (set)
            {
                // set_huge_zero_folio: read-only, special, with the table deposited.
                PgTable.ArchFlushTlbBeforeSetHugePage(vmf.Cpu, mm, haddr);
                Pmd entry = Pmd.PfnPmd(zero, vma.VmPageProt).MkHuge().SetFlags(PageTableBits.Special);
                DepositTable(mm, vmf.Pmd, pgtable);
                PgTable.Set(vmf.Pmd, entry); // release: the deposit and the zero folio's reference come first
            }
            Spin.Unlock(zptl);
            if (!set) PgTable.FreeTable(vmf.Cpu, m, pgtable);
            vmf.Kind = FaultKind.Huge;
            vmf.MappedPfn = zero + (ulong)Geometry.PteIndex(vmf.Address);
            return VmFaultT.None;
        }

        ulong folio = AllocAnonFolioPmd(vmf.Cpu, m);
        if (folio == 0) return VmFaultT.Fallback;
        ulong table = PgTable.AllocTable(vmf.Cpu, m);
        if (table == 0)
        {
            Rmap.FolioPut(vmf.Cpu, m, folio);
            return VmFaultT.Oom;
        }
        int* ptl = PgTable.PmdLock(m, vmf.Pmd);
        if (!PgTable.Get(vmf.Pmd).None)
        {
            Spin.Unlock(ptl);
            PgTable.FreeTable(vmf.Cpu, m, table);
            Rmap.FolioPut(vmf.Cpu, m, folio);
            return VmFaultT.None;
        }
        PgTable.ArchFlushTlbBeforeSetHugePage(vmf.Cpu, mm, haddr);
        MapAnonFolioPmd(vmf.Cpu, vma, anonVma, vmf.Pmd, folio, haddr);
        DepositTable(mm, vmf.Pmd, table);
        Spin.Unlock(ptl);
        vmf.Kind = FaultKind.Huge;
        vmf.MappedPfn = folio + (ulong)Geometry.PteIndex(vmf.Address);
        return VmFaultT.None;
    }

    /// <summary>vma_alloc_anon_folio_pmd: a zeroed PMD-order folio, or 0 counting thp_fault_fallback. No page-table lock.</summary>
    private static ulong AllocAnonFolioPmd(Cpu cpu, Machine m)
    {
        ulong folio = m.Allocator.AllocPages(cpu.Id, Thp.PmdOrder, Gfp.Zero | Gfp.Comp);
        if (folio == 0)
        {
            m.Counters.Add(cpu.Id, VmEvent.ThpFaultFallback);
            m.Thp.Count(Thp.PmdOrder, MthpStat.AnonFaultFallback);
            return 0;
        }
        m.Vmemmap.PfnToPage(folio)->SetFlag(PG.Uptodate); // __folio_mark_uptodate
        return folio;
    }

    /// <summary>map_anon_folio_pmd: the new folio mapped writable and dirty by the PMD. PMD lock held.</summary>
    private static void MapAnonFolioPmd(Cpu cpu, Vma vma, AnonVma anonVma, Pmd* pmd, ulong folio, ulong haddr)
    {
        Machine m = vma.Mm.Machine;
        Pmd entry = Pmd.PfnPmd(folio, vma.VmPageProt).MkHuge().MkDirty();
        if ((vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkWrite(); // maybe_pmd_mkwrite
        Folio.AddNewAnonRmapPmd(cpu, m, folio, vma, anonVma, haddr);
        PgTable.Set(pmd, entry); // set_pmd_at: the release store publishes the zeroed folio and its rmap
        vma.Mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, HpagePmdNr);
        m.Counters.Add(cpu.Id, VmEvent.ThpFaultAlloc);
        m.Thp.Count(Thp.PmdOrder, MthpStat.AnonFaultAlloc);
    }

    /// <summary>huge_pmd_set_accessed → touch_pmd: young (and dirty for a write), taking and dropping the PMD lock.</summary>
    private static void HugePmdSetAccessed(ref VmFault vmf, Pmd orig)
    {
        int* ptl = PgTable.PmdLock(vmf.Mm.Machine, vmf.Pmd);
        if (PgTable.Get(vmf.Pmd) == orig)
        {
            bool write = (vmf.Flags & FaultFlags.Write) != 0;
            Pmd entry = orig.MkYoung();
            if (write) entry = entry.MkDirty();
            if (write && entry != orig) PgTable.Set(vmf.Pmd, entry); // pmdp_set_access_flags (x86: only a dirty update is written)
        }
        Spin.Unlock(ptl);
    }

    /// <summary>
    /// do_huge_pmd_wp_page: reuse a folio that is PageAnonExclusive, or whose only reference is this PMD
    /// (made exclusive then); otherwise split the PMD and let the PTE level copy. A write to the huge zero
    /// PMD maps a new THP in its place, or splits when none can be allocated.
    /// </summary>
    private static VmFaultT DoHugePmdWpPage(ref VmFault vmf, Pmd orig)
    {
        Machine m = vmf.Mm.Machine;
        Vma vma = vmf.Vma;
        bool unshare = (vmf.Flags & FaultFlags.Unshare) != 0;
        int* ptl = PgTable.PmdLockptr(m, vmf.Pmd);

        if (IsHugeZeroPmd(m, orig))
        {
            VmFaultT ret = DoHugeZeroWpPmd(ref vmf, orig);
            if ((ret & VmFaultT.Fallback) == 0) return ret;
            SplitHugePmd(vmf.Cpu, vma, vmf.Pmd, vmf.Address);
            return VmFaultT.Fallback;
        }

        Spin.Lock(ptl);
        if (PgTable.Get(vmf.Pmd) != orig)
        {
            Spin.Unlock(ptl);
            return VmFaultT.None;
        }
        ulong headPfn = orig.Pfn;
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        bool reuse = head->TestFlag(PG.AnonExclusive);
        if (!reuse)
        {
            // The kernel sleeps on a contended folio lock with the PT lock dropped and retries; here the
            // access is retried instead.
            if (!Rmap.FolioTryLock(head))
            {
                Spin.Unlock(ptl);
                return VmFaultT.None;
            }
            // Every reference must be this mapping's: a THP is drained from the LRU caches at once.
            if (Volatile.Read(ref head->RefCount) == 1)
            {
                head->Mapping = Rmap.AnonMapping(vma.AnonVma!); // folio_move_anon_rmap
                head->SetFlagAtomic(PG.AnonExclusive);
                reuse = true;
            }
            Rmap.FolioUnlock(head);
        }
        if (!reuse)
        {
            Spin.Unlock(ptl);
            SplitHugePmd(vmf.Cpu, vma, vmf.Pmd, vmf.Address);
            return VmFaultT.Fallback;
        }
        if (!unshare)
        {
            Pmd entry = orig.MkYoung().MkDirty();
            if ((vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkWrite();
            PgTable.Set(vmf.Pmd, entry); // pmdp_set_access_flags
            vmf.Kind = FaultKind.Huge;
            vmf.MappedPfn = headPfn + (ulong)Geometry.PteIndex(vmf.Address);
        }
        Spin.Unlock(ptl);
        return VmFaultT.None;
    }

    /// <summary>do_huge_zero_wp_pmd: replace the huge zero PMD by a new THP (the deposited table stays). Takes and drops the PMD lock.</summary>
    private static VmFaultT DoHugeZeroWpPmd(ref VmFault vmf, Pmd orig)
    {
        Machine m = vmf.Mm.Machine;
        Vma vma = vmf.Vma;
        ulong haddr = vmf.Address & Geometry.PmdMask;
        ulong folio = AllocAnonFolioPmd(vmf.Cpu, m);
        if (folio == 0) return VmFaultT.Fallback;
        int* ptl = PgTable.PmdLock(m, vmf.Pmd);
        if (PgTable.Get(vmf.Pmd) != orig)
        {
            Spin.Unlock(ptl);
            Rmap.FolioPut(vmf.Cpu, m, folio);
            return VmFaultT.None;
        }
        PmdpHugeClearFlush(vmf.Cpu, vmf.Mm, vmf.Pmd, haddr);
        MapAnonFolioPmd(vmf.Cpu, vma, vma.AnonVma ?? Memory.AnonVmaPrepare(vma), vmf.Pmd, folio, haddr);
        Spin.Unlock(ptl);
        vmf.Kind = FaultKind.Huge;
        vmf.MappedPfn = folio + (ulong)Geometry.PteIndex(vmf.Address);
        return VmFaultT.None;
    }

    /// <summary>pmdp_huge_clear_flush: clear the PMD and flush its 2 MiB from every CPU's TLB. PMD lock held.</summary>
    private static Pmd PmdpHugeClearFlush(Cpu cpu, MmStruct mm, Pmd* pmd, ulong haddr)
    {
        Pmd old = PgTable.GetAndClear(pmd);
        TlbFlush.FlushMmRange(cpu, mm, haddr, haddr + Geometry.PmdSize, Geometry.PmdShift, false);
        return old;
    }

    // ---------------------------------------------------------------------------------------------
    // Split
    // ---------------------------------------------------------------------------------------------

    /// <summary>__split_huge_pmd (freeze = false): under the PMD lock (taken and dropped here), if the PMD is still huge, split it. mmap_lock held.</summary>
    public static void SplitHugePmd(Cpu cpu, Vma vma, Pmd* pmd, ulong address)
    {
        int* ptl = PgTable.PmdTransHugeLock(vma.Mm.Machine, pmd);
        if (ptl == null) return;
        SplitHugePmdLocked(cpu, vma, pmd, address & Geometry.PmdMask);
        Spin.Unlock(ptl);
    }

    /// <summary>split_huge_pmd_address: split the huge PMD mapping address, if there is one (vma_adjust_trans_huge). mmap_lock held for write.</summary>
    public static void SplitHugePmdAddress(Cpu cpu, Vma vma, ulong address)
    {
        Pmd* pmd = PgTable.WalkToPmd(vma.Mm, address);
        if (pmd != null && PgTable.Get(pmd).Leaf) SplitHugePmd(cpu, vma, pmd, address);
    }

    /// <summary>
    /// __split_huge_pmd_locked for anonymous memory: the PMD is made invalid and flushed, the folio gains
    /// 512 PTE mappings (and references) carrying PageAnonExclusive and the PMD's write, dirty, young and
    /// soft-dirty bits, the deposited table is filled and becomes the PMD's table, and the PMD mapping
    /// goes. The huge zero PMD becomes 512 PTEs of the small zero page. PMD lock held throughout, so no
    /// walker under pmd_trans_huge_lock sees the split half done.
    /// </summary>
    private static void SplitHugePmdLocked(Cpu cpu, Vma vma, Pmd* pmd, ulong haddr)
    {
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        m.Counters.Add(cpu.Id, VmEvent.ThpSplitPmd);
        Pmd cur = PgTable.Get(pmd);
        if (IsHugeZeroPmd(m, cur))
        {
            // __split_huge_zero_page_pmd
            PmdpHugeClearFlush(cpu, mm, pmd, haddr);
            ulong ztable = Withdraw(m, pmd);
            Pte* zpte = PgTable.PteTable(m.Memory, ztable);
            Pte zero = Pte.PfnPte(m.ZeroPfn, vma.VmPageProt).MkSpecial();
            for (int i = 0; i < HpagePmdNr; i++) PgTable.Set(zpte + i, zero);
            PgTable.PmdPopulateFilled(m, pmd, ztable, HpagePmdNr);
            return;
        }

        // pmdp_invalidate: not present (PSE kept, so walkers still see a huge PMD) and flushed.
        Pmd old = PgTable.Exchange(pmd, cur.MkInvalid());
        TlbFlush.FlushMmRange(cpu, mm, haddr, haddr + Geometry.PmdSize, Geometry.PmdShift, false);
        ulong headPfn = old.Pfn;
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        bool anonExclusive = head->TestFlag(PG.AnonExclusive);
        Interlocked.Add(ref head->RefCount, HpagePmdNr - 1); // folio_ref_add: one reference per PTE
        Folio.AddAnonRmapPtes(cpu, m, headPfn, headPfn, HpagePmdNr, vma, anonExclusive);

        ulong table = Withdraw(m, pmd);
        Pte* pte = PgTable.PteTable(m.Memory, table);
        for (int i = 0; i < HpagePmdNr; i++)
        {
            Pte entry = Pte.PfnPte(headPfn + (ulong)i, vma.VmPageProt);
            if (old.Write) entry = entry.MkWrite();
            if (!old.Young) entry = entry.MkOld();
            if (old.Dirty) entry = entry.MkDirty();
            if (old.SoftDirty) entry = entry.MkSoftDirty();
            PgTable.Set(pte + i, entry); // not yet reachable: published with the table below
        }
        Folio.RemoveRmapPmd(cpu, m, headPfn, mm);
        PgTable.PmdPopulateFilled(m, pmd, table, HpagePmdNr);
    }

    // ---------------------------------------------------------------------------------------------
    // Zap, fork, mprotect, GUP
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// zap_huge_pmd: clear the whole huge PMD, drop its rmap and RSS and its deposited table, and hand the
    /// folio's reference to the gather. False when the PMD is no longer huge (the caller goes on by PTEs).
    /// mmap_lock held; takes pmd_trans_huge_lock and drops it before the folio goes to the gather.
    /// </summary>
    public static bool ZapHugePmd(Cpu cpu, MmuGather tlb, Vma vma, Pmd* pmd, ulong addr)
    {
        MmStruct mm = vma.Mm;
        Machine m = mm.Machine;
        int* ptl = PgTable.PmdTransHugeLock(m, pmd);
        if (ptl == null) return false;
        Pmd orig;
        if (tlb.FullMm)
        {
            orig = PgTable.Get(pmd);
            PgTable.Set(pmd, default);
        }
        else
        {
            orig = PgTable.GetAndClear(pmd); // pmdp_huge_get_and_clear_full
        }
        tlb.AdjustRange(addr, Geometry.PmdSize); // tlb_remove_pmd_tlb_entry
        if (IsHugeZeroPmd(m, orig))
        {
            ZapDepositedTable(cpu, mm, pmd);
            Spin.Unlock(ptl);
            return true;
        }
        ulong headPfn = orig.Pfn;
        Folio.RemoveRmapPmd(cpu, m, headPfn, mm);
        ZapDepositedTable(cpu, mm, pmd);
        mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, -HpagePmdNr);
        m.Counters.Add(cpu.Id, VmEvent.ZapPages, HpagePmdNr);
        tlb.ZappedPages += HpagePmdNr;
        Spin.Unlock(ptl);
        if (tlb.RemovePage(headPfn)) tlb.FlushMmu(); // tlb_remove_page_size
        return true;
    }

    /// <summary>
    /// copy_huge_pmd: share the THP with the child by PMD, both write-protected, with a table deposited
    /// for the child; the huge zero PMD is shared as it is. A folio that may be pinned is split in the
    /// parent instead and copied by PTEs (EAGAIN, as when the PMD was split meanwhile). Both mms' mmap_lock
    /// held for write; takes the child's PMD lock, then the parent's nested, and drops both.
    /// </summary>
    public static Errno CopyHugePmd(Cpu cpu, Vma dstVma, Vma srcVma, Pmd* dstPmd, Pmd* srcPmd, ulong addr)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        Machine m = src.Machine;
        ulong table = PgTable.AllocTable(cpu, m);
        if (table == 0) return Errno.ENOMEM;
        int* dstPtl = PgTable.PmdLockptr(m, dstPmd);
        int* srcPtl = PgTable.PmdLockptr(m, srcPmd);
        Spin.Lock(dstPtl);
        Spin.Lock(srcPtl); // spin_lock_nested
        Pmd pmd = PgTable.Get(srcPmd);
        if (!pmd.Leaf)
        {
            Spin.Unlock(srcPtl);
            Spin.Unlock(dstPtl);
            PgTable.FreeTable(cpu, m, table);
            return Errno.EAGAIN;
        }
        if (IsHugeZeroPmd(m, pmd))
        {
            m.HugeZero.MmGet(cpu, dst); // never allocates: the folio exists; takes the child's reference
        }
        else
        {
            Page* head = m.Vmemmap.PfnToPage(pmd.Pfn);
            Interlocked.Increment(ref head->RefCount); // folio_get
            if (!Folio.TryDupAnonRmapPmd(head, dstVma, src.HasPinned && Folio.MaybeDmaPinned(head)))
            {
                Interlocked.Decrement(ref head->RefCount);
                Spin.Unlock(srcPtl);
                Spin.Unlock(dstPtl);
                PgTable.FreeTable(cpu, m, table);
                SplitHugePmd(cpu, srcVma, srcPmd, addr); // page maybe pinned: split, and copy by PTEs
                return Errno.EAGAIN;
            }
            dst.AddMmCounter(cpu.Id, MmCounter.AnonPages, HpagePmdNr);
        }
        DepositTable(dst, dstPmd, table);
        PgTable.SetWrprotect(srcPmd); // pmdp_set_wrprotect
        PgTable.Set(dstPmd, pmd.Wrprotect().MkOld()); // release: the deposit and the rmap dup come first
        Spin.Unlock(srcPtl);
        Spin.Unlock(dstPtl);
        return Errno.Success;
    }

    /// <summary>
    /// change_huge_pmd: the PMD made invalid while it is rewritten with pmd_modify; an exclusive anonymous
    /// THP in a writable private VMA may become writable at once. False when it is no longer huge.
    /// mmap_lock held for write; takes and drops pmd_trans_huge_lock.
    /// </summary>
    public static bool ChangeHugePmd(MmuGather tlb, Vma vma, Pmd* pmd, ulong addr, ulong newprot, bool tryWritable)
    {
        Machine m = vma.Mm.Machine;
        int* ptl = PgTable.PmdTransHugeLock(m, pmd);
        if (ptl == null) return false;
        Pmd old = PgTable.Exchange(pmd, PgTable.Get(pmd).MkInvalid()); // pmdp_invalidate_ad
        Pmd entry = old.Modify(newprot);
        if (tryWritable && !entry.Write && CanChangePmdWritable(m, vma, entry)) entry = entry.MkWrite();
        PgTable.Set(pmd, entry);
        if (Mprotect.PteNeedsFlush(new Pte(old.Value), new Pte(entry.Value))) tlb.AdjustRange(addr, Geometry.PmdSize); // huge_pmd_needs_flush: the same bits at both levels
        Spin.Unlock(ptl);
        return true;
    }

    /// <summary>can_change_pmd_writable for a private mapping: only an exclusive anonymous THP. PMD lock held.</summary>
    private static bool CanChangePmdWritable(Machine m, Vma vma, Pmd pmd)
    {
        if ((vma.VmFlags & VmFlags.Write) == 0 || pmd.Protnone) return false;
        if (IsHugeZeroPmd(m, pmd)) return false; // vm_normal_page_pmd: none
        Page* head = m.Vmemmap.PfnToPage(pmd.Pfn);
        return (head->Mapping & PageTypes.MappingAnon) != 0 && head->TestFlag(PG.AnonExclusive);
    }

    /// <summary>
    /// follow_huge_pmd under the PMD lock: the subpage for address with its reference grabbed, or 0 with
    /// the fault that makes it followable (write: do_huge_pmd_wp_page; a read-only pin of a shared THP:
    /// unshare). A PMD that stopped being huge reports 0 and no fault, and the walk is retried. mmap_lock
    /// held for read; takes and drops the PMD lock.
    /// </summary>
    public static ulong FollowHugePmd(Cpu cpu, Vma vma, Pmd* pmd, ulong address, Foll flags, out FaultFlags need, out bool retry)
    {
        Machine m = vma.Mm.Machine;
        need = (flags & Foll.Write) != 0 ? FaultFlags.Write : FaultFlags.None;
        retry = false;
        int* ptl = PgTable.PmdLockptr(m, pmd);
        Spin.Lock(ptl);
        try
        {
            Pmd e = PgTable.Get(pmd);
            if (!e.Leaf || (e.Value & PageTableBits.Present) == 0)
            {
                retry = true; // split (or being split) meanwhile
                return 0;
            }
            ulong pfn = e.Pfn + (ulong)Geometry.PteIndex(address);
            bool zero = IsHugeZeroPmd(m, e);
            Page* head = m.Vmemmap.PfnToPage(e.Pfn);
            if ((flags & Foll.Write) != 0 && !Gup.CanFollowWrite(e.Write, vma, flags, zero, head, head)) return 0;
            if (!e.Write && Gup.MustUnshare(vma, flags, zero, head, head)) // PageAnonExclusive lives on the head
            {
                need = FaultFlags.Unshare;
                return 0;
            }
            Gup.Grab(head, flags);
            return pfn;
        }
        finally
        {
            Spin.Unlock(ptl);
        }
    }
}
