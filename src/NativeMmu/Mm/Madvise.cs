using NativeMmu.Arch.X86;
using NativeMmu.Cpus;

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
        if (write) mm.MmapLock.WriteLock(); else mm.MmapLock.ReadLock(cpu.Id);
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

    /// <summary>madvise_vma_behavior for one VMA's part [start, end).</summary>
    private static Errno MadviseVmaBehavior(Cpu cpu, MmStruct mm, Vma vma, out Vma? prev, ulong start, ulong end, Advice behavior)
    {
        prev = vma;
        switch (behavior)
        {
            case Advice.DontNeed:
            case Advice.DontNeedLocked:
            case Advice.Free:
            {
                // madvise_dontneed_free_valid_vma. MADV_FREE frees at once here: with no reclaim to do it
                // later, this is the outcome the kernel reaches under memory pressure.
                VmFlags forbidden = VmFlags.PfnMap | (behavior == Advice.DontNeedLocked ? 0 : VmFlags.Locked);
                if ((vma.VmFlags & forbidden) != 0) return Errno.EINVAL;
                // madvise_dontneed_single_vma: zap_details { .reclaim_pt = true, .even_cows = true }.
                Memory.ZapPageRangeSingle(cpu, vma, start, end - start, reclaimPt: true);
                return Errno.Success;
            }
            case Advice.WillNeed:
            case Advice.Cold:
            case Advice.PageOut:
                return Errno.Success; // no swap and no reclaim: nothing to read ahead or age
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
        if (newFlags != vma.VmFlags) prev = Mmap.VmaModifyFlags(cpu, mm, vma, start, end, newFlags);
        return Errno.Success;
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
            for (ulong a = start; a < stop; a += Geometry.PageSize)
            {
                if (Gup.Populated(cpu, mm, a, write)) continue;
                VmFaultT r = PageFaultHandler.HandleMmFault(cpu, vma, a, ff);
                if ((r & VmFaultT.Oom) != 0) return Errno.ENOMEM;
                if ((r & VmFaultT.Error) != 0) return Errno.EFAULT;
            }
            start = stop;
        }
        return Errno.Success;
    }
}
