using NativeMmu.Cpus;

namespace NativeMmu.Mm;

/// <summary>kernel/fork.c's part of fork: dup_mmap copies the VMAs and has mm/memory.c copy their page tables.</summary>
internal static class Fork
{
    /// <summary>
    /// dup_mmap: under the parent's mmap_lock for write, copy every VMA except VM_DONTCOPY ones; a
    /// VM_WIPEONFORK VMA is copied empty. The parent's TLBs are flushed after its PTEs were write-protected.
    /// Returns with the parent's mmap_lock released; the child is not yet visible to anyone.
    /// </summary>
    public static void DupMmap(Cpu cpu, MmStruct oldmm, MmStruct mm)
    {
        oldmm.MmapLock.WriteLock(cpu.Id);
        try
        {
            // The COW PTE series: MMF_COW_PTE_READY (prctl) becomes MMF_COW_PTE at this fork; the child inherits it.
            if (oldmm.Machine.Config.CowPte != CowPteMode.Off && (oldmm.CowPteReady || oldmm.Machine.Config.CowPteAllProcesses))
            {
                oldmm.CowPte = true;
                oldmm.CowPteReady = false;
            }
            mm.CowPte = oldmm.CowPte;
            // arch_dup_mmap → arch_dup_pkeys: the child has the parent's keys.
            mm.PkeyAllocationMap = oldmm.PkeyAllocationMap;
            mm.ExecuteOnlyPkey = oldmm.ExecuteOnlyPkey;
            foreach (Vma mpnt in oldmm.Vmas)
            {
                if ((mpnt.VmFlags & VmFlags.DontCopy) != 0) continue;
                // vm_area_dup, then "vm_flags_clear(tmp, VM_LOCKED_MASK)": mlock is not inherited.
                Vma tmp = VmAreaCache.Alloc(mm, mpnt.VmStart, mpnt.VmEnd, mpnt.VmFlags & ~(VmFlags.Locked | VmFlags.LockOnFault));
                tmp.VmPageProt = mpnt.VmPageProt;
                tmp.VmPgoff = mpnt.VmPgoff;
                bool hugetlb = (mpnt.VmFlags & VmFlags.HugeTlb) != 0;
                if (hugetlb) Huge.HugetlbMapping.HugetlbDupVma(tmp, mpnt); // hugetlb_dup_vma_private, vm_ops->open
                mm.Vmas.Insert(tmp);
                mm.TotalVm += (long)tmp.Pages;
                if ((tmp.VmFlags & VmFlags.WipeOnFork) != 0) continue; // the child starts with fresh zero memory
                if (mpnt.AnonVma is not null)
                {
                    tmp.AnonVma = AnonVma.Alloc(); // anon_vma_fork: the child's own anon_vma, chained to the parent's
                    tmp.AnonVma.Forked = true;
                }
                // vma_needs_copy: a hugetlb VMA is always copied, an anonymous one once it has an anon_vma.
                if (hugetlb)
                {
                    if (Huge.HugetlbMapping.CopyHugetlbPageRange(cpu, tmp, mpnt) != Errno.Success)
                        throw new OutOfMemoryException("fork: the emulated machine is out of memory");
                }
                else if (tmp.AnonVma is not null)
                {
                    Memory.CopyPageRange(cpu, tmp, mpnt);
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
}
