using NativeMmu.Arch.X86;
using NativeMmu.Cpu;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// fork's address-space copy (kernel/fork.c dup_mmap and mm/memory.c copy_page_range): VMAs copied,
/// page tables copied level by level, private anonymous pages shared copy-on-write.
/// </summary>
internal static unsafe class Fork
{
    /// <summary>GUP_PIN_COUNTING_BIAS: a pin adds this much to the refcount of a small folio.</summary>
    public const int GupPinCountingBias = 1024;

    /// <summary>
    /// dup_mmap: under the parent's mmap_lock for write, copy every VMA except VM_DONTCOPY ones; a
    /// VM_WIPEONFORK VMA is copied empty. The parent's TLBs are flushed after its PTEs were write-protected.
    /// </summary>
    public static void DupMmap(Cpu.Cpu cpu, MmStruct oldmm, MmStruct mm)
    {
        oldmm.MmapLock.WriteLock();
        try
        {
            foreach (Vma mpnt in oldmm.Vmas)
            {
                if ((mpnt.VmFlags & VmFlags.DontCopy) != 0) continue;
                Vma tmp = VmAreaCache.Alloc(mm, mpnt.VmStart, mpnt.VmEnd, mpnt.VmFlags); // vm_area_dup
                tmp.VmPageProt = mpnt.VmPageProt;
                tmp.VmPgoff = mpnt.VmPgoff;
                mm.Vmas.Insert(tmp);
                mm.TotalVm += (long)tmp.Pages;
                if ((tmp.VmFlags & VmFlags.WipeOnFork) != 0) continue; // the child starts with fresh zero memory
                if (mpnt.AnonVma is not null)
                {
                    tmp.AnonVma = AnonVma.Alloc(); // anon_vma_fork: the child's own anon_vma, chained to the parent's
                    CopyPageRange(cpu, tmp, mpnt);
                }
            }
            mm.HiwaterVm = mm.TotalVm;
            Interlocked.Increment(ref mm.VmaSeq);
            TlbFlush.FlushMm(cpu, oldmm); // flush_tlb_mm(oldmm): its writable entries were just write-protected
        }
        finally
        {
            oldmm.MmapLock.WriteUnlock();
        }
    }

    /// <summary>copy_page_range: the walker idiom at every level; only present upper levels are copied.</summary>
    private static void CopyPageRange(Cpu.Cpu cpu, Vma dstVma, Vma srcVma)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        ulong addr = srcVma.VmStart, end = srcVma.VmEnd;
        ulong* srcPgd = PgTable.PgdOffset(src, addr);
        ulong* dstPgd = PgTable.PgdOffset(dst, addr);
        do
        {
            ulong next = src.Paging.PgdAddrEnd(addr, end);
            if (!new Pgd(PgTable.Get(srcPgd)).IsNone(src.Paging) && !CopyP4dRange(cpu, dstVma, srcVma, dstPgd, srcPgd, addr, next))
                throw new OutOfMemoryException("fork: the emulated machine is out of memory");
            srcPgd++;
            dstPgd++;
            addr = next;
        }
        while (addr != end);
    }

    private static bool CopyP4dRange(Cpu.Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstPgd, ulong* srcPgd, ulong addr, ulong end)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        ulong* dstP4d = PgTable.P4dAllocOffset(cpu, dst, dstPgd, addr);
        if (dstP4d == null) return false;
        ulong* srcP4d = PgTable.P4dOffset(src, srcPgd, addr);
        do
        {
            ulong next = src.Paging.P4dAddrEnd(addr, end);
            if (!new P4d(PgTable.Get(srcP4d)).None && !CopyPudRange(cpu, dstVma, srcVma, dstP4d, srcP4d, addr, next)) return false;
            srcP4d++;
            dstP4d++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    private static bool CopyPudRange(Cpu.Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstP4d, ulong* srcP4d, ulong addr, ulong end)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        ulong* dstPud = PgTable.PudAllocOffset(cpu, dst, dstP4d, addr);
        if (dstPud == null) return false;
        ulong* srcPud = PgTable.PudOffset(src.Machine.Memory, PgTable.Get(srcP4d), addr);
        do
        {
            ulong next = Geometry.PudAddrEnd(addr, end);
            if (!new Pud(PgTable.Get(srcPud)).None && !CopyPmdRange(cpu, dstVma, srcVma, dstPud, srcPud, addr, next)) return false;
            srcPud++;
            dstPud++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    private static bool CopyPmdRange(Cpu.Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstPud, ulong* srcPud, ulong addr, ulong end)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        ulong* dstPmd = PgTable.PmdAllocOffset(cpu, dst, dstPud, addr);
        if (dstPmd == null) return false;
        ulong* srcPmd = PgTable.PmdOffset(src.Machine.Memory, PgTable.Get(srcPud), addr);
        do
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            bool copied = false;
            if (new Pmd(PgTable.Get(srcPmd)).Leaf)
            {
                Bug.On(next - addr != Geometry.PmdSize, "copy_pmd_range: a huge PMD at {0:x} straddles the VMA", addr);
                Errno err = HugeMemory.CopyHugePmd(cpu, dstVma, srcVma, dstPmd, srcPmd, addr);
                if (err == Errno.ENOMEM) return false;
                copied = err == Errno.Success; // EAGAIN: split meanwhile (or just now, maybe pinned): copy its PTEs
            }
            if (!copied && !new Pmd(PgTable.Get(srcPmd)).None && !CopyPteRange(cpu, dstVma, srcVma, dstPmd, srcPmd, addr, next)) return false;
            srcPmd++;
            dstPmd++;
            addr = next;
        }
        while (addr != end);
        return true;
    }

    /// <summary>
    /// copy_pte_range: the child's table is locked first, then the parent's (spin_lock_nested). Each
    /// present anonymous page is shared: mapcount and refcount up, PageAnonExclusive cleared, and both
    /// entries write-protected; a page that may be pinned is copied for the child instead.
    /// </summary>
    private static bool CopyPteRange(Cpu.Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstPmd, ulong* srcPmd, ulong addr, ulong end)
    {
        MmStruct src = srcVma.Mm, dst = dstVma.Mm;
        Machine m = src.Machine;
        bool refcount = m.Config.PtReclaim == PtReclaimMode.Refcount;
        ulong dstTable = 0, srcTable = 0;
        if (refcount)
        {
            dstTable = PgTable.PteAllocGet(cpu, dst, dstPmd, addr);
            if (dstTable == 0) return false;
            srcTable = PgTable.PteTryGet(cpu, m, srcPmd);
            if (srcTable == 0)
            {
                PgTable.PtePut(cpu, dst, dstPmd, dstTable, 1, addr, null);
                return true;
            }
        }
        else if (new Pmd(PgTable.Get(dstPmd)).None && !PgTable.PteAlloc(cpu, dst, dstPmd, addr))
        {
            return false;
        }
        ulong from = addr;
        ulong* dstPte = PgTable.PteOffsetMapLock(cpu, m, dstPmd, addr, out int* dstPtl);
        ulong srcPmdval = PgTable.Get(srcPmd);
        int* srcPtl = PgTable.PteLockptr(m, srcPmdval);
        Spin.Lock(srcPtl);
        ulong* srcPte = PgTable.PteOffset(m.Memory, srcPmdval, addr);
        bool cow = (srcVma.VmFlags & (VmFlags.Shared | VmFlags.MayWrite)) == VmFlags.MayWrite; // is_cow_mapping
        long rss = 0;
        int entries = 0;
        bool ok = true;
        for (; addr != end; addr += Geometry.PageSize, srcPte++, dstPte++)
        {
            var pte = new Pte(PgTable.Get(srcPte));
            if (pte.None) continue;
            Bug.On(!pte.Present, "copy_nonpresent_pte: entry {0:x16} at {1:x}, and this kernel has no swap", pte.Value, addr);
            ulong pfn = pte.Pfn;
            if (!pte.Special && pfn != m.ZeroPfn)
            {
                Page* page = m.Vmemmap.PfnToPage(pfn);
                if ((page->Flags & (1UL << PG.Head)) != 0 || (page->CompoundHead & 1) != 0)
                {
                    // A page of a large folio: __folio_try_dup_anon_rmap for this PTE (maybe pinned: _pincount).
                    Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, pfn));
                    Interlocked.Increment(ref head->RefCount);
                    if (!Folio.TryDupAnonRmapPtes(m, head, page, 1, dstVma, src.HasPinned && Folio.MaybeDmaPinned(head)))
                    {
                        Interlocked.Decrement(ref head->RefCount);
                        if (!CopyPresentPage(cpu, dstVma, dstPte, addr, pte)) { ok = false; break; }
                        rss++;
                        entries++;
                        continue;
                    }
                    rss++;
                }
                else if (page->TestFlag(PG.AnonExclusive) && src.HasPinned && Volatile.Read(ref page->RefCount) >= GupPinCountingBias)
                {
                    // folio_try_dup_anon_rmap_pte said -EBUSY (maybe pinned): copy_present_page.
                    if (!CopyPresentPage(cpu, dstVma, dstPte, addr, pte)) { ok = false; break; }
                    rss++;
                    entries++;
                    continue;
                }
                else
                {
                    Interlocked.And(ref page->Flags, ~(1UL << PG.AnonExclusive));
                    Interlocked.Increment(ref page->MapCount);   // folio_dup_file_rmap / the anon dup
                    Interlocked.Increment(ref page->RefCount);   // folio_get
                    rss++;
                }
            }
            if (cow && pte.Write)
            {
                PgTable.SetWrprotect(srcPte); // ptep_set_wrprotect: keeps a hardware Dirty set meanwhile
                pte = pte.Wrprotect();
            }
            pte = pte.MkOld();
            PgTable.Set(dstPte, pte.Value);
            entries++;
        }
        Spin.Unlock(srcPtl);
        Spin.Unlock(dstPtl);
        dst.AddMmCounter(cpu.Id, MmCounter.AnonPages, rss);
        if (refcount)
        {
            PgTable.PteGetMany(m, dstTable, entries);
            PgTable.PtePut(cpu, dst, dstPmd, dstTable, 1, from, null);
            PgTable.PtePut(cpu, src, srcPmd, srcTable, 1, from, null);
        }
        return ok;
    }

    /// <summary>copy_present_page: a possibly pinned page stays exclusive to the parent; the child gets a copy.</summary>
    private static bool CopyPresentPage(Cpu.Cpu cpu, Vma dstVma, ulong* dstPte, ulong addr, Pte orig)
    {
        Machine m = dstVma.Mm.Machine;
        ulong newPfn = m.Allocator.AllocPages(cpu.Id, 0, Gfp.None);
        if (newPfn == 0) return false;
        m.Memory.CopyFrame(newPfn, orig.Pfn);
        Page* page = m.Vmemmap.PfnToPage(newPfn);
        page->Flags |= 1UL << PG.Uptodate;
        Rmap.FolioAddNewAnonRmap(cpu, m, page, dstVma, dstVma.AnonVma!, addr);
        Pte pte = Pte.PfnPte(newPfn, dstVma.VmPageProt).MkDirty();
        if ((dstVma.VmFlags & VmFlags.Write) != 0) pte = pte.MkWrite();
        PgTable.Set(dstPte, pte.Value);
        return true;
    }
}
