using NativeMmu.Arch.X86;
using NativeMmu.Cpus;

namespace NativeMmu.Mm;

/// <summary>mprotect(2) and change_protection (mm/mprotect.c).</summary>
internal static unsafe class Mprotect
{
    /// <summary>mprotect(2) → do_mprotect_pkey: the VMAs before a hole are changed, then ENOMEM.</summary>
    public static Errno DoMprotect(Cpu cpu, MmStruct mm, ulong start, ulong len, Prot prot)
    {
        if ((start & (Geometry.PageSize - 1)) != 0) return Errno.EINVAL;
        if (len == 0) return Errno.Success;
        len = Geometry.PageAlign(len);
        ulong end = start + len;
        if (end <= start) return Errno.ENOMEM;
        if (((int)prot & ~(int)(Prot.Read | Prot.Write | Prot.Exec | Prot.Sem)) != 0) return Errno.EINVAL; // arch_validate_prot

        mm.MmapLock.WriteLock();
        try
        {
            Vma? vma = mm.Vmas.FindVmaIntersection(start, end);
            if (vma is null || vma.VmStart > start) return Errno.ENOMEM;
            MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(mm, fullmm: false);
            Errno error = Errno.Success;
            ulong nstart = start, tmp = vma.VmStart;
            while (vma is not null && vma.VmStart < end)
            {
                if (vma.VmStart != tmp) { error = Errno.ENOMEM; break; }
                VmFlags newFlags = Mmap.CalcVmProtBits(prot) | (vma.VmFlags & ~VmFlags.AccessFlags);
                // The VM_MAY* bits sit four above the VM_* bits: what is not permitted may not be asked.
                if (((ulong)newFlags & ~((ulong)newFlags >> 4) & (ulong)VmFlags.AccessFlags) != 0) { error = Errno.EACCES; break; }
                tmp = Math.Min(vma.VmEnd, end);
                vma = MprotectFixup(cpu, tlb, mm, vma, nstart, tmp, newFlags);
                nstart = tmp = vma.VmEnd;
                vma = vma.Next;
            }
            tlb.Finish();
            if (error == Errno.Success && tmp < end) error = Errno.ENOMEM;
            return error;
        }
        finally
        {
            mm.MmapLock.WriteUnlock();
        }
    }

    /// <summary>mprotect_fixup: new flags on [start, end), then change_protection over it.</summary>
    private static Vma MprotectFixup(Cpu cpu, MmuGather tlb, MmStruct mm, Vma vma, ulong start, ulong end, VmFlags newFlags)
    {
        if (newFlags == vma.VmFlags) return vma;
        // A private mapping made writable is charged (VM_ACCOUNT); one made read-only before it has an
        // anon_vma gives the charge back, as nothing can have been committed yet.
        if ((newFlags & VmFlags.Write) != 0)
        {
            if ((vma.VmFlags & (VmFlags.Account | VmFlags.Write | VmFlags.HugeTlb | VmFlags.Shared | VmFlags.NoReserve)) == 0)
                newFlags |= VmFlags.Account;
        }
        else if ((vma.VmFlags & VmFlags.Account) != 0 && vma.IsAnonymous && vma.AnonVma is null)
        {
            newFlags &= ~VmFlags.Account;
        }
        vma = Mmap.VmaModifyFlags(cpu, mm, vma, start, end, newFlags);
        // MM_CP_TRY_CHANGE_WRITABLE: a private writable VMA may make exclusive anon pages writable now.
        bool tryWritable = (newFlags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
        ChangeProtection(cpu, tlb, vma, start, end, vma.VmPageProt, tryWritable);
        return vma;
    }

    /// <summary>change_protection → change_pte_range: every present PTE rewritten with pte_modify, flushed as needed.</summary>
    private static void ChangeProtection(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, ulong newprot, bool tryWritable)
    {
        Machine m = vma.Mm.Machine;
        bool refcount = m.Config.PtReclaim == PtReclaimMode.Refcount;
        for (ulong addr = start; addr < end;)
        {
            ulong next = Geometry.PmdAddrEnd(addr, end);
            ulong* pmd = PgTable.WalkToPmd(vma.Mm, addr);
            if (pmd == null) { addr = next; continue; }
            if (new Pmd(PgTable.Get(pmd)).Leaf)
            {
                // change_pmd_range: a huge PMD the range covers whole changes in place, else it is split.
                if (next - addr != Geometry.PmdSize) HugeMemory.SplitHugePmd(cpu, vma, pmd, addr);
                else if (HugeMemory.ChangeHugePmd(tlb, vma, pmd, addr, newprot, tryWritable)) { addr = next; continue; }
            }
            ulong table = refcount ? PgTable.PteTryGet(cpu, m, pmd) : 0;
            if (refcount && table == 0) { addr = next; continue; }
            ulong from = addr;
            ulong* pte = PgTable.PteOffsetMapLock(cpu, m, pmd, addr, out int* ptl);
            if (pte != null)
            {
                for (; addr < next; addr += Geometry.PageSize, pte++)
                {
                    var oldpte = new Pte(PgTable.Get(pte));
                    if (!oldpte.Present) continue;
                    oldpte = new Pte(PgTable.GetAndClear(pte)); // ptep_modify_prot_start
                    Pte ptent = oldpte.Modify(newprot);
                    if (tryWritable && !ptent.Write && CanChangePteWritable(m, vma, ptent)) ptent = ptent.MkWrite();
                    PgTable.Set(pte, ptent.Value); // ptep_modify_prot_commit
                    if (PteNeedsFlush(oldpte, ptent)) tlb.AdjustRange(addr, Geometry.PageSize);
                }
                Sync.Spin.Unlock(ptl);
            }
            addr = next;
            if (table != 0) PgTable.PtePut(cpu, vma.Mm, pmd, table, 1, from, tlb);
        }
        // tlb_finish_mmu (in the caller) flushes the range gathered above.
    }

    /// <summary>can_change_pte_writable for a private mapping: only an exclusive anonymous page.</summary>
    private static bool CanChangePteWritable(Machine m, Vma vma, Pte pte)
    {
        if ((vma.VmFlags & VmFlags.Write) == 0 || pte.Protnone) return false;
        if (pte.Special) return false;
        ulong pfn = pte.Pfn;
        if (pfn == m.ZeroPfn) return false;
        Physical.Page* page = m.Vmemmap.PfnToPage(pfn);
        Physical.Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, pfn)); // the anon mapping is the folio's
        return (head->Mapping & Physical.PageTypes.MappingAnon) != 0 && page->TestFlag(Physical.PG.AnonExclusive);
    }

    /// <summary>pte_needs_flush (x86): only changes the TLB could have cached, ignoring A, D and software bits.</summary>
    internal static bool PteNeedsFlush(Pte oldpte, Pte newpte)
    {
        if ((oldpte.Flags & PageTableBits.Present) == 0) return false;
        if (oldpte.Pfn != newpte.Pfn) return true;
        const ulong flushOnClear = PageTableBits.Dirty | PageTableBits.Present | PageTableBits.Accessed;
        const ulong softwareFlags = PageTableBits.Special | PageTableBits.UffdWp | PageTableBits.SoftDirty | PageTableBits.Devmap | PageTableBits.SavedDirty;
        const ulong flushOnChange = PageTableBits.Rw | PageTableBits.User | PageTableBits.Pwt | PageTableBits.Pcd | PageTableBits.Pse
            | PageTableBits.Global | PageTableBits.Pat | PageTableBits.PatLarge | PageTableBits.PkeyMask | PageTableBits.Nx;
        ulong diff = (oldpte.Flags ^ newpte.Flags) & ~softwareFlags & ~PageTableBits.Accessed;
        return (diff & oldpte.Flags & flushOnClear) != 0 || (diff & flushOnChange) != 0;
    }
}
