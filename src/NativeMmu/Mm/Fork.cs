using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
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
    public static void DupMmap(Cpu cpu, MmStruct oldmm, MmStruct mm)
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
    private static void CopyPageRange(Cpu cpu, Vma dstVma, Vma srcVma)
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

    private static bool CopyP4dRange(Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstPgd, ulong* srcPgd, ulong addr, ulong end)
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

    private static bool CopyPudRange(Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstP4d, ulong* srcP4d, ulong addr, ulong end)
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

    private static bool CopyPmdRange(Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstPud, ulong* srcPud, ulong addr, ulong end)
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
    private static bool CopyPteRange(Cpu cpu, Vma dstVma, Vma srcVma, ulong* dstPmd, ulong* srcPmd, ulong addr, ulong end)
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
        bool batch = true; // folio_pte_batch, until a batch could not be shared (then page by page, as with prealloc)
        for (; addr != end; addr += Geometry.PageSize, srcPte++, dstPte++)
        {
            var pte = new Pte(PgTable.Get(srcPte));
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
                    int nr = batch ? ForkPteBatch(srcPte, pte, headPfn + (ulong)Folio.NrPages(head), (int)((end - addr) >> Geometry.PageShift)) : 1;
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
                        var e = new Pte(PgTable.Get(srcPte + i));
                        if (cow && e.Write)
                        {
                            PgTable.SetWrprotect(srcPte + i);
                            e = e.Wrprotect();
                        }
                        PgTable.Set(dstPte + i, e.MkOld().Value);
                    }
                    rss += nr;
                    entries += nr;
                    addr += (ulong)(nr - 1) * Geometry.PageSize;
                    srcPte += nr - 1;
                    dstPte += nr - 1;
                    continue;
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
                    page->ClearFlagAtomic(PG.AnonExclusive);
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

    /// <summary>
    /// folio_pte_batch as copy_present_ptes calls it: how many entries from <paramref name="first"/> on
    /// (at most max) map consecutive pages of the same folio with the same bits, write, young and
    /// soft-dirty aside (dirty counts, as for a private mapping).
    /// </summary>
    private static int ForkPteBatch(ulong* srcPte, Pte first, ulong folioEndPfn, int max)
    {
        static ulong Bits(Pte e) => e.Wrprotect().MkOld().ClearSoftDirty().Value & ~PageTableBits.PtePfnMask;
        ulong want = Bits(first);
        ulong pfn = first.Pfn;
        int nr = 1;
        while (nr < max && pfn + (ulong)nr < folioEndPfn)
        {
            var e = new Pte(PgTable.Get(srcPte + nr));
            if (!e.Present || e.Pfn != pfn + (ulong)nr || Bits(e) != want) break;
            nr++;
        }
        return nr;
    }

    /// <summary>copy_present_page: a possibly pinned page stays exclusive to the parent; the child gets a copy.</summary>
    private static bool CopyPresentPage(Cpu cpu, Vma dstVma, ulong* dstPte, ulong addr, Pte orig)
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
        PgTable.Set(dstPte, pte.Value);
        return true;
    }
}
