using NativeMmu.Arch.X86;
using NativeMmu.Cpus;

namespace NativeMmu.Mm;

/// <summary>mprotect(2) and change_protection (mm/mprotect.c).</summary>
internal static unsafe class Mprotect
{
    /// <summary>mprotect(2) → do_mprotect_pkey: the VMAs before a hole are changed, then ENOMEM. Takes and drops mmap_lock for write.</summary>
    public static Errno DoMprotect(Cpu cpu, MmStruct mm, ulong start, ulong len, Prot prot)
    {
        // "grows = prot & (PROT_GROWSDOWN|PROT_GROWSUP); prot &= ~(PROT_GROWSDOWN|PROT_GROWSUP);
        // if (grows == (PROT_GROWSDOWN|PROT_GROWSUP)) return -EINVAL;": before the alignment check.
        int grows = (int)prot & (ProtGrowsDown | ProtGrowsUp);
        prot = (Prot)((int)prot & ~(ProtGrowsDown | ProtGrowsUp));
        if (grows == (ProtGrowsDown | ProtGrowsUp)) return Errno.EINVAL;
        if ((start & (Geometry.PageSize - 1)) != 0) return Errno.EINVAL;
        if (len == 0) return Errno.Success;
        len = Geometry.PageAlign(len);
        ulong end = start + len;
        if (end <= start) return Errno.ENOMEM;
        if (((int)prot & ~(int)(Prot.Read | Prot.Write | Prot.Exec | Prot.Sem)) != 0) return Errno.EINVAL; // arch_validate_prot

        mm.MmapLock.WriteLock(cpu.Id);
        try
        {
            Vma? vma = mm.Vmas.FindVmaIntersection(start, end);
            if (vma is null) return Errno.ENOMEM;
            if ((grows & ProtGrowsDown) != 0)
            {
                // PROT_GROWSDOWN: the range extends down to the start of the first VMA it meets, which
                // must be VM_GROWSDOWN.
                if ((vma.VmFlags & VmFlags.GrowsDown) == 0) return Errno.EINVAL;
                start = vma.VmStart;
            }
            else
            {
                if (vma.VmStart > start) return Errno.ENOMEM;
                if ((grows & ProtGrowsUp) != 0) return Errno.EINVAL; // x86 has no VM_GROWSUP
            }
            // change_pte_range would break each shared table it changes; breaking them all first makes a
            // break that finds no memory fail the call before any VMA or entry changed.
            if (!PgTable.BreakCowPteRange(cpu, mm, start, end, "mprotect")) return Errno.ENOMEM;
            MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(mm, fullmm: false);
            Errno error = Errno.Success;
            ulong nstart = start, tmp = vma.VmStart;
            while (vma is not null && vma.VmStart < end)
            {
                if (vma.VmStart != tmp) { error = Errno.ENOMEM; break; }
                // calc_vm_prot_bits(prot, arch_override_mprotect_pkey(vma, prot, -1)), and of the old flags all
                // but VM_ACCESS_FLAGS and the key (mask_off_old_flags).
                VmFlags newFlags = Mmap.CalcVmProtBits(prot) | Pkeys.PkeyBits(Pkeys.OverrideMprotectPkey(cpu, vma, prot))
                    | (vma.VmFlags & ~(VmFlags.AccessFlags | VmFlags.PkeyMask));
                // The VM_MAY* bits sit four above the VM_* bits: what is not permitted may not be asked.
                if (((ulong)newFlags & ~((ulong)newFlags >> 4) & (ulong)VmFlags.AccessFlags) != 0) { error = Errno.EACCES; break; }
                tmp = Math.Min(vma.VmEnd, end);
                Vma? changed = MprotectFixup(cpu, tlb, mm, vma, nstart, tmp, newFlags, out error);
                if (changed is null) break;
                vma = changed;
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

    private const int ProtGrowsDown = 0x01000000;
    private const int ProtGrowsUp = 0x02000000;

    /// <summary>
    /// mprotect_fixup: new flags on [start, end), then change_protection over it; a locked private VMA
    /// made writable is populated for writing at once. Null with the errno of a refused split. mmap_lock
    /// held for write.
    /// </summary>
    private static Vma? MprotectFixup(Cpu cpu, MmuGather tlb, MmStruct mm, Vma vma, ulong start, ulong end, VmFlags newFlags, out Errno error)
    {
        error = Errno.Success;
        if (newFlags == vma.VmFlags) return vma;
        VmFlags oldFlags = vma.VmFlags;
        Vma? changed = MprotectFixupFlags(cpu, tlb, mm, vma, start, end, newFlags, out error);
        if (changed is null) return null;
        vma = changed;
        // "if ((oldflags & (VM_WRITE | VM_SHARED | VM_LOCKED)) == VM_LOCKED && (newflags & VM_WRITE))
        //      populate_vma_page_range(vma, start, end, NULL);"
        if ((oldFlags & (VmFlags.Write | VmFlags.Shared | VmFlags.Locked)) == VmFlags.Locked && (newFlags & VmFlags.Write) != 0)
        {
            for (ulong a = start; a < end; a += Geometry.PageSize)
            {
                if (Gup.Populated(cpu, mm, vma, a, write: true)) continue;
                if ((PageFaultHandler.HandleMmFault(cpu, vma, a, FaultFlags.Remote | FaultFlags.Write) & VmFaultT.Error) != 0) break;
            }
        }
        return vma;
    }

    private static Vma? MprotectFixupFlags(Cpu cpu, MmuGather tlb, MmStruct mm, Vma vma, ulong start, ulong end, VmFlags newFlags, out Errno error)
    {
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
        Vma? modified = Mmap.VmaModifyFlags(cpu, mm, vma, start, end, newFlags, out error);
        if (modified is null) return null;
        vma = modified;
        if (Huge.HugetlbMapping.IsVmHugetlbPage(vma))
        {
            Huge.HugetlbMapping.HugetlbChangeProtection(cpu, vma, start, end, vma.VmPageProt); // change_protection's hugetlb case
            return vma;
        }
        // MM_CP_TRY_CHANGE_WRITABLE: a private writable VMA may make exclusive anon pages writable now.
        bool tryWritable = (newFlags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
        ChangeProtection(cpu, tlb, vma, start, end, vma.VmPageProt, tryWritable);
        return vma;
    }

    /// <summary>
    /// change_protection → change_p4d_range → change_pud_range → change_pmd_range → change_pte_range, as
    /// one walk. mmap_lock held for write; no page-table lock on entry or exit. The caller's gather
    /// (tlb_finish_mmu) flushes the range gathered here.
    /// </summary>
    private static void ChangeProtection(Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, ulong newprot, bool tryWritable)
    {
        var change = new ChangeProtectionWalk(cpu, tlb, vma, newprot, tryWritable);
        PageWalk.WalkRange(cpu, vma.Mm, start, end, ref change);
    }

    /// <summary>change_pmd_range and change_pte_range as walk callbacks; each PTE table is mapped for writing and locked.</summary>
    private struct ChangeProtectionWalk(Cpu cpu, MmuGather tlb, Vma vma, ulong newprot, bool tryWritable) : IPageWalkOps
    {
        private readonly Cpu cpu = cpu;
        private readonly MmuGather tlb = tlb;
        private readonly Vma vma = vma;
        private readonly ulong newprot = newprot;
        private readonly bool tryWritable = tryWritable;

        public readonly PteWalk PteWalk => PteWalk.Write;
        public readonly MmuGather? Tlb => tlb;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>change_pmd_range's body: a huge PMD the range covers whole changes in place (change_huge_pmd), else it is split first.</summary>
        public readonly WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (!pmdval.Leaf) return WalkAction.Subtree;
            if (next - addr != Geometry.PmdSize)
            {
                HugeMemory.SplitHugePmd(cpu, vma, pmd, addr);
                return WalkAction.Again;
            }
            return HugeMemory.ChangeHugePmd(tlb, vma, pmd, addr, newprot, tryWritable) ? WalkAction.Continue : WalkAction.Again;
        }

        /// <summary>change_pte_range's body for one present entry: pte_modify between ptep_modify_prot_start and _commit. PTL held.</summary>
        public readonly int PteEntry(ref PteMapping map, Pte* pte, Pte oldpte, ulong addr, ulong end)
        {
            if (!oldpte.Present) return 1;
            Machine m = vma.Mm.Machine;
            oldpte = PgTable.GetAndClear(pte); // ptep_modify_prot_start
            Pte ptent = oldpte.Modify(newprot);
            if (tryWritable && !ptent.Write && CanChangePteWritable(m, vma, ptent)) ptent = ptent.MkWrite();
            PgTable.Set(pte, ptent); // ptep_modify_prot_commit
            if (PteNeedsFlush(oldpte, ptent)) tlb.AdjustRange(addr, Geometry.PageSize);
            return 1;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }
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
