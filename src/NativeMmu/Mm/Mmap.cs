using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm.Huge;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>mmap(2) prot bits.</summary>
[Flags]
public enum Prot
{
    None = 0,
    Read = 1,
    Write = 2,
    Exec = 4,
    /// <summary>PROT_SEM: accepted by mprotect (arch_validate_prot), without effect on x86.</summary>
    Sem = 8,
    ReadWrite = Read | Write,
}

/// <summary>mmap(2) flags (x86-64 values).</summary>
[Flags]
public enum MapFlags
{
    None = 0,
    Shared = 0x01,
    Private = 0x02,
    SharedValidate = 0x03,
    Type = 0x0f,
    Fixed = 0x10,
    Anonymous = 0x20,
    GrowsDown = 0x0100,
    DenyWrite = 0x0800,
    Executable = 0x1000,
    Locked = 0x2000,
    NoReserve = 0x4000,
    Populate = 0x8000,
    NonBlock = 0x10000,
    Stack = 0x20000,
    HugeTlb = 0x40000,
    Sync = 0x80000,
    FixedNoReplace = 0x100000,
    /// <summary>MAP_HUGE_2MB: log2(2 MiB) &lt;&lt; MAP_HUGE_SHIFT (26).</summary>
    Huge2MB = 21 << 26,
    /// <summary>MAP_HUGE_1GB: log2(1 GiB) &lt;&lt; MAP_HUGE_SHIFT (26).</summary>
    Huge1GB = 30 << 26,
}

/// <summary>madvise(2) advice values.</summary>
public enum Advice
{
    Normal = 0,
    Random = 1,
    Sequential = 2,
    WillNeed = 3,
    DontNeed = 4,
    Free = 8,
    Remove = 9,
    DontFork = 10,
    DoFork = 11,
    Mergeable = 12,
    Unmergeable = 13,
    HugePage = 14,
    NoHugePage = 15,
    DontDump = 16,
    DoDump = 17,
    WipeOnFork = 18,
    KeepOnFork = 19,
    Cold = 20,
    PageOut = 21,
    PopulateRead = 22,
    PopulateWrite = 23,
    DontNeedLocked = 24,
    Collapse = 25,
}

/// <summary>
/// The VMA-level system calls of mm/mmap.c, mm/vma.c, mm/mprotect.c and mm/madvise.c, with Linux's
/// argument checks and errno rules.
/// </summary>
public static unsafe class Mmap
{
    /// <summary>sysctl vm.max_map_count.</summary>
    public const int MaxMapCount = 65530;
    /// <summary>vm.mmap_min_addr (the x86 default).</summary>
    public const ulong MmapMinAddr = 65536;

    // -------------------------------------------------------------------------------------------
    // mmap
    // -------------------------------------------------------------------------------------------

    /// <summary>
    /// mmap(2) for anonymous memory (ksys_mmap_pgoff → vm_mmap_pgoff → do_mmap → mmap_region). MAP_HUGETLB
    /// takes the hstate from MAP_HUGE_* (EINVAL when no pool has that size), rounds the length up to its
    /// huge page size and maps an anonymous hugetlbfs inode of that size (hugetlb_file_setup).
    /// </summary>
    public static Errno DoMmap(Cpu cpu, MmStruct mm, ulong addr, ulong len, Prot prot, MapFlags flags, out ulong result)
    {
        result = 0;
        MapFlags type = flags & MapFlags.Type;
        if (type is not (MapFlags.Private or MapFlags.Shared or MapFlags.SharedValidate)) return Errno.EINVAL;
        if ((flags & MapFlags.Anonymous) == 0) return Errno.EBADF; // a file mapping needs a file descriptor
        if (type != MapFlags.Private) return Errno.EINVAL; // shared anonymous memory (shmem, shared hugetlb) is not emulated
        HugetlbFile? hugetlbFile = null;
        if ((flags & MapFlags.HugeTlb) != 0)
        {
            Hstate? hs = HugetlbMapping.HstateSizelog(mm.Machine, ((int)flags >> HugetlbMapping.MapHugeShift) & HugetlbMapping.MapHugeMask);
            if (hs is null) return Errno.EINVAL;
            ulong hsz = HugetlbMapping.HugePageSize(hs);
            len = unchecked(len + hsz - 1) & ~(hsz - 1); // ALIGN: a length that wraps becomes 0, and do_mmap's EINVAL
            hugetlbFile = new HugetlbFile(hs);
        }
        // prot bits other than R/W/X are ignored, not refused: calc_vm_prot_bits takes only those three.
        if (len == 0) return Errno.EINVAL;
        if ((flags & MapFlags.FixedNoReplace) != 0) flags |= MapFlags.Fixed;
        if ((flags & MapFlags.Fixed) == 0)
        {
            // round_hint_to_min: the hint loses its page offset first, so a hint inside page 0 is no hint.
            addr &= Geometry.PageMask;
            if (addr != 0 && addr < MmapMinAddr) addr = Geometry.PageAlign(MmapMinAddr);
        }
        ulong alignedLen = Geometry.PageAlign(len);
        if (alignedLen == 0) return Errno.ENOMEM;

        mm.MmapLock.WriteLock(cpu.Id);
        try
        {
            if (mm.Vmas.Count > MaxMapCount) return Errno.ENOMEM;
            Errno err = hugetlbFile is null
                ? GetUnmappedArea(mm, addr, alignedLen, flags, out ulong start)
                : HugetlbGetUnmappedArea(mm, addr, alignedLen, flags, hugetlbFile.H, out start);
            if (err != Errno.Success) return err;
            if ((flags & MapFlags.FixedNoReplace) != 0 && mm.Vmas.FindVmaIntersection(start, start + alignedLen) is not null)
                return Errno.EEXIST;

            // "if (prot == PROT_EXEC) { pkey = execute_only_pkey(mm); if (pkey < 0) pkey = 0; }"
            int pkey = prot == Prot.Exec ? Math.Max(Pkeys.ExecuteOnlyPkey(cpu, mm), 0) : 0;
            VmFlags vmFlags = CalcVmProtBits(prot) | Pkeys.PkeyBits(pkey) | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec;
            if ((flags & MapFlags.GrowsDown) != 0) vmFlags |= VmFlags.GrowsDown;
            if ((flags & MapFlags.Locked) != 0) vmFlags |= VmFlags.Locked;
            if ((flags & MapFlags.NoReserve) != 0) vmFlags |= VmFlags.NoReserve;
            // calc_vm_flag_bits: "_calc_vm_trans(flags, MAP_SYNC, VM_SYNC) | _calc_vm_trans(flags, MAP_STACK,
            // VM_NOHUGEPAGE)" (the latter with CONFIG_TRANSPARENT_HUGEPAGE), kept for private mappings too.
            if ((flags & MapFlags.Sync) != 0) vmFlags |= VmFlags.Sync;
            if ((flags & MapFlags.Stack) != 0) vmFlags |= VmFlags.NoHugePage;
            // accountable_mapping: never a hugetlbfs file; hugetlbfs_file_mmap adds VM_HUGETLB | VM_DONTEXPAND.
            if (hugetlbFile is not null) vmFlags |= VmFlags.HugeTlb | VmFlags.DontExpand;
            else if ((vmFlags & (VmFlags.Write | VmFlags.Shared | VmFlags.NoReserve)) == VmFlags.Write) vmFlags |= VmFlags.Account;

            err = MmapRegion(cpu, mm, start, alignedLen, vmFlags, hugetlbFile);
            if (err != Errno.Success) return err;
            result = start;
        }
        finally
        {
            mm.MmapLock.WriteUnlock();
        }
        if ((flags & (MapFlags.Populate | MapFlags.NonBlock)) == MapFlags.Populate || (flags & MapFlags.Locked) != 0)
            Gup.MmPopulate(cpu, mm, result, alignedLen);
        return Errno.Success;
    }

    /// <summary>calc_vm_prot_bits.</summary>
    public static VmFlags CalcVmProtBits(Prot prot)
        => ((prot & Prot.Read) != 0 ? VmFlags.Read : 0) | ((prot & Prot.Write) != 0 ? VmFlags.Write : 0) | ((prot & Prot.Exec) != 0 ? VmFlags.Exec : 0);

    /// <summary>
    /// __get_unmapped_area: MAP_FIXED takes the address as given; a free hint is honoured; otherwise
    /// top-down from mmap_base, THP-aligned for anonymous lengths that are a multiple of 2 MiB.
    /// </summary>
    private static Errno GetUnmappedArea(MmStruct mm, ulong addr, ulong len, MapFlags flags, out ulong start)
    {
        start = 0;
        if (len > mm.TaskSize) return Errno.ENOMEM;
        if ((flags & MapFlags.Fixed) != 0)
        {
            // __get_unmapped_area checks the range before the alignment.
            if (addr > mm.TaskSize - len) return Errno.ENOMEM;
            if ((addr & (Geometry.PageSize - 1)) != 0) return Errno.EINVAL;
            // security_mmap_addr → cap_mmap_addr: below vm.mmap_min_addr needs CAP_SYS_RAWIO, which emulated tasks lack.
            if (addr < MmapMinAddr) return Errno.EPERM;
            start = addr;
            return Errno.Success;
        }
        if (addr != 0)
        {
            addr &= Geometry.PageMask;
            if (addr <= mm.TaskSize - len && addr >= MmapMinAddr)
            {
                Vma? v = mm.Vmas.FindVma(addr);
                if (v is null || addr + len <= v.VmStart)
                {
                    start = addr;
                    return Errno.Success;
                }
            }
        }
        else if ((len & (Geometry.PmdSize - 1)) == 0)
        {
            // thp_get_unmapped_area: ask for len + 2 MiB and align inside it; top-down keeps the top.
            ulong padded = len + Geometry.PmdSize;
            if (padded > len && FindArea(mm, padded, out ulong ret))
            {
                ulong offSub = (0 - ret) & (Geometry.PmdSize - 1);
                start = offSub == 0 ? ret + Geometry.PmdSize : ret + offSub;
                return Errno.Success;
            }
        }
        return FindArea(mm, len, out start) ? Errno.Success : Errno.ENOMEM;
    }

    /// <summary>
    /// hugetlb_get_unmapped_area (fs/hugetlbfs/inode.c): MAP_FIXED must be huge-page aligned (EINVAL,
    /// before the generic range and mmap_min_addr checks); a hint is rounded up to the huge page size and
    /// taken if free; otherwise the highest huge-page-aligned gap below mmap_base (align_mask in
    /// vm_unmapped_area), bottom-up as a fallback.
    /// </summary>
    private static Errno HugetlbGetUnmappedArea(MmStruct mm, ulong addr, ulong len, MapFlags flags, Hstate h, out ulong start)
    {
        start = 0;
        ulong hsz = HugetlbMapping.HugePageSize(h);
        if (len > mm.TaskSize) return Errno.ENOMEM;
        if ((flags & MapFlags.Fixed) != 0)
        {
            if ((addr & (hsz - 1)) != 0) return Errno.EINVAL; // prepare_hugepage_range
            return GetUnmappedArea(mm, addr, len, flags, out start);
        }
        if (addr != 0)
        {
            addr = (addr + hsz - 1) & ~(hsz - 1);
            if (addr != 0 && mm.TaskSize - len >= addr && addr >= MmapMinAddr)
            {
                Vma? v = mm.Vmas.FindVma(addr);
                if (v is null || addr + len <= v.VmStart)
                {
                    start = addr;
                    return Errno.Success;
                }
            }
        }
        ulong padded = len + hsz - Geometry.PageSize;
        if (padded < len) return Errno.ENOMEM;
        ulong low = Math.Max(Geometry.PageSize, MmapMinAddr);
        if (UnmappedAreaTopdown(mm, padded, low, mm.MmapBase, out ulong gap))
        {
            start = (gap + padded - len) & ~(hsz - 1); // the highest aligned start in the gap
            return Errno.Success;
        }
        if (UnmappedAreaBottomUp(mm, padded, Geometry.PageAlign(mm.TaskSize / 3), mm.TaskSize, out gap))
        {
            start = (gap + hsz - 1) & ~(hsz - 1);
            return Errno.Success;
        }
        return Errno.ENOMEM;
    }

    /// <summary>arch_get_unmapped_area_topdown: the highest gap below mmap_base, then bottom-up as a fallback.</summary>
    private static bool FindArea(MmStruct mm, ulong len, out ulong start)
    {
        ulong low = Math.Max(Geometry.PageSize, MmapMinAddr);
        if (UnmappedAreaTopdown(mm, len, low, mm.MmapBase, out start)) return true;
        return UnmappedAreaBottomUp(mm, len, Geometry.PageAlign(mm.TaskSize / 3), mm.TaskSize, out start);
    }

    /// <summary>The highest gap of len bytes in [low, high), found through the tree's subtree gaps.</summary>
    private static bool UnmappedAreaTopdown(MmStruct mm, ulong len, ulong low, ulong high, out ulong start)
    {
        start = 0;
        if (high < low + len) return false;
        return mm.Vmas.FindGapTopdown(low, high, len, out start);
    }

    private static bool UnmappedAreaBottomUp(MmStruct mm, ulong len, ulong low, ulong high, out ulong start)
    {
        start = 0;
        ulong gapStart = low;
        for (Vma? v = mm.Vmas.FindVma(low); ; v = v.Next)
        {
            ulong gapEnd = v is null ? high : Math.Min(v.VmStart, high);
            if (gapEnd > gapStart && gapEnd - gapStart >= len)
            {
                start = gapStart;
                return true;
            }
            if (v is null || v.VmEnd >= high) return false;
            gapStart = Math.Max(gapStart, v.VmEnd);
        }
    }

    /// <summary>
    /// mmap_region: unmap what MAP_FIXED covers, then extend a neighbour or insert a new VMA. A hugetlb
    /// mapping is a new VMA (VM_SPECIAL never merges) at file offset 0, and call_mmap's
    /// hugetlbfs_file_mmap reserves its pages: ENOMEM, with the VMA gone again, when the pool cannot.
    /// mmap_lock held for write.
    /// </summary>
    private static Errno MmapRegion(Cpu cpu, MmStruct mm, ulong addr, ulong len, VmFlags vmFlags, HugetlbFile? hugetlbFile = null)
    {
        ulong end = addr + len;
        if (mm.Vmas.FindVmaIntersection(addr, end) is not null)
        {
            Errno e = DoVmiAlignMunmap(cpu, mm, addr, end);
            if (e != Errno.Success) return e;
        }
        // Every new VMA starts with VM_SOFTDIRTY set, so soft-dirty tracking begins clean.
        vmFlags |= VmFlags.SoftDirty;
        ulong pgoff = addr >> Geometry.PageShift;
        Vma? prev = mm.Vmas.FindVmaPrev(addr, out Vma? before) is { } at && at.VmStart < end ? null : before;
        Vma? next = prev is not null ? prev.Next : mm.Vmas.FindVma(addr);
        bool mergePrev = prev is not null && prev.VmEnd == addr && CanMerge(prev, vmFlags, null) && prev.VmPgoff + prev.Pages == pgoff;
        bool mergeNext = next is not null && next.VmStart == end && CanMerge(next, vmFlags, null) && pgoff + (len >> Geometry.PageShift) == next.VmPgoff;
        if (mergePrev && mergeNext && !NeighboursCompatible(prev!.AnonVma, next!.AnonVma)) mergeNext = false;

        if (mergePrev)
        {
            prev!.VmEnd = end;
            if (mergeNext) RemoveMergedNext(mm, prev, next!);
        }
        else if (mergeNext)
        {
            next!.VmStart = addr;
            next.VmPgoff = pgoff;
        }
        else
        {
            Vma vma = VmAreaCache.Alloc(mm, addr, end, vmFlags);
            vma.VmPgoff = hugetlbFile is null ? pgoff : 0;
            mm.Vmas.Insert(vma);
            if (hugetlbFile is not null && !HugetlbMapping.HugetlbfsFileMmap(vma, hugetlbFile))
            {
                // unmap_region + remove_vma: nothing was mapped yet.
                HugetlbMapping.HugetlbVmOpClose(vma);
                mm.Vmas.Remove(vma);
                VmAreaCache.Free(vma);
                Interlocked.Increment(ref mm.VmaSeq);
                return Errno.ENOMEM;
            }
        }
        mm.TotalVm += (long)(len >> Geometry.PageShift);
        if (mm.TotalVm > mm.HiwaterVm) mm.HiwaterVm = mm.TotalVm;
        Interlocked.Increment(ref mm.VmaSeq);
        return Errno.Success;
    }

    /// <summary>is_mergeable_vma + is_mergeable_anon_vma, for anonymous VMAs (VM_SOFTDIRTY ignored).</summary>
    private static bool CanMerge(Vma vma, VmFlags flags, AnonVma? anonVma)
        => ((vma.VmFlags ^ flags) & ~VmFlags.SoftDirty) == 0 && (flags & VmFlags.Special) == 0 && AnonVmaCompatible(vma.AnonVma, anonVma);

    /// <summary>
    /// is_mergeable_anon_vma (mm/vma.c), target tgt and source src: when only one of them has an
    /// anon_vma, the merged VMA takes it, which is refused if it is a fork child's
    /// ("if (!tgt_anon &amp;&amp; src_anon) ... if (vma_is_fork_child(src)) return false;" and
    /// "if (tgt_anon &amp;&amp; !src_anon) return !vma_is_fork_child(tgt);"); when both have one, they must be the same.
    /// </summary>
    private static bool AnonVmaCompatible(AnonVma? tgt, AnonVma? src)
        => tgt is null ? src is null || !src.Forked : src is null ? !tgt.Forked : ReferenceEquals(tgt, src);

    /// <summary>can_vma_merge_right: prev and next, both mergeable with the middle, must agree with each other too.</summary>
    private static bool NeighboursCompatible(AnonVma? prev, AnonVma? next) => prev is null || next is null || ReferenceEquals(prev, next);

    private static void RemoveMergedNext(MmStruct mm, Vma prev, Vma next)
    {
        if (prev.AnonVma is null && next.AnonVma is { } adopted)
        {
            prev.AnonVma = adopted;
            Interlocked.Increment(ref adopted.Users);
        }
        ulong end = next.VmEnd;
        mm.Vmas.Remove(next);
        prev.VmEnd = end;
        VmAreaCache.Free(next);
    }

    // -------------------------------------------------------------------------------------------
    // munmap
    // -------------------------------------------------------------------------------------------

    /// <summary>munmap(2) → do_vmi_munmap.</summary>
    public static Errno DoMunmap(Cpu cpu, MmStruct mm, ulong start, ulong len)
    {
        if ((start & (Geometry.PageSize - 1)) != 0 || start > mm.TaskSize || len > mm.TaskSize - start) return Errno.EINVAL;
        ulong end = start + Geometry.PageAlign(len);
        if (end == start) return Errno.EINVAL;
        mm.MmapLock.WriteLock(cpu.Id);
        try
        {
            return DoVmiAlignMunmap(cpu, mm, start, end);
        }
        finally
        {
            mm.MmapLock.WriteUnlock();
        }
    }

    /// <summary>
    /// do_vmi_align_munmap: split the VMAs at the edges, detach those inside, unmap_region (zap, then
    /// free_pgtables between the surviving neighbours), and drop them. mmap_lock held for write.
    /// </summary>
    internal static Errno DoVmiAlignMunmap(Cpu cpu, MmStruct mm, ulong start, ulong end)
    {
        Vma? first = mm.Vmas.FindVmaIntersection(start, end);
        if (first is null) return Errno.Success;
        // Shared PTE tables the unmap covers in part are made private before any VMA is split, so a
        // break without memory fails munmap with nothing changed.
        if (!PgTable.BreakCowPteBoundaries(cpu, mm, start, end, "munmap")) return Errno.ENOMEM;
        if (start > first.VmStart)
        {
            if (end < first.VmEnd && mm.Vmas.Count >= MaxMapCount) return Errno.ENOMEM;
            if (MaySplit(first, start) is var e1 && e1 != Errno.Success) return e1;
            first = SplitVma(cpu, mm, first, start);
        }
        Vma last = first;
        while (last.Next is { } n && n.VmStart < end) last = n;
        if (last.VmEnd > end)
        {
            if (mm.Vmas.Count >= MaxMapCount) return Errno.ENOMEM;
            // The split at start above stays when this one is refused, as in vms_gather_munmap_vmas.
            if (MaySplit(last, end) is var e2 && e2 != Errno.Success) return e2;
            SplitVma(cpu, mm, last, end);
        }
        Vma? prev = first.Prev, next = last.Next;

        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(mm, fullmm: false);
        mm.UpdateHiwaterRss();
        Memory.UnmapVmas(cpu, tlb, first, start, end);
        Memory.FreePgtables(cpu, tlb, first, last, prev?.VmEnd ?? 0, next?.VmStart ?? 0);
        tlb.Finish();

        for (Vma? v = first; v is not null;)
        {
            Vma? following = ReferenceEquals(v, last) ? null : v.Next;
            mm.TotalVm -= (long)v.Pages;
            if (HugetlbMapping.IsVmHugetlbPage(v)) HugetlbMapping.HugetlbVmOpClose(v); // remove_vma → vm_ops->close
            mm.Vmas.Remove(v);
            VmAreaCache.Free(v);
            v = following;
        }
        Interlocked.Increment(ref mm.VmaSeq);
        return Errno.Success;
    }

    /// <summary>
    /// __split_vma(new_below = 0): vma keeps [start, addr); the returned new VMA is [addr, end). A huge PMD
    /// across addr is split first (vma_adjust_trans_huge): no PMD leaf may straddle two VMAs.
    /// </summary>
    internal static Vma SplitVma(Cpu cpu, MmStruct mm, Vma vma, ulong addr)
    {
        bool hugetlb = HugetlbMapping.IsVmHugetlbPage(vma);
        Bug.On(hugetlb && HugetlbMapping.HugetlbVmOpSplit(vma, addr) != Errno.Success, "__split_vma: hugetlb VMA {0} split at {1:x}, inside a huge page", vma, addr);
        if (!hugetlb && (addr & ~Geometry.PmdMask) != 0) HugeMemory.SplitHugePmdAddress(cpu, vma, addr);
        Vma upper = VmAreaCache.Alloc(mm, addr, vma.VmEnd, vma.VmFlags);
        upper.VmPageProt = vma.VmPageProt;
        upper.VmPgoff = vma.VmPgoff + ((addr - vma.VmStart) >> Geometry.PageShift);
        if (vma.AnonVma is { } av)
        {
            upper.AnonVma = av;
            Interlocked.Increment(ref av.Users);
        }
        if (hugetlb)
        {
            upper.Hugetlb = vma.Hugetlb; // vm_area_dup copies vm_file and vm_private_data
            HugetlbMapping.HugetlbVmOpOpen(upper);
        }
        vma.VmEnd = addr;
        mm.Vmas.Insert(upper);
        Interlocked.Increment(ref mm.VmaSeq);
        return upper;
    }

    /// <summary>vm_ops->may_split: a hugetlb VMA refuses a split inside a huge page (hugetlb_vm_op_split).</summary>
    internal static Errno MaySplit(Vma vma, ulong addr)
        => HugetlbMapping.IsVmHugetlbPage(vma) ? HugetlbMapping.HugetlbVmOpSplit(vma, addr) : Errno.Success;

    /// <summary>
    /// vma_modify_flags: give [start, end) of vma the new flags, splitting at the edges and merging with
    /// neighbours that end up identical. Returns the VMA now covering the range's start, or null with the
    /// errno of a refused split (a split at start already made stays, as in vma_modify).
    /// </summary>
    internal static Vma? VmaModifyFlags(Cpu cpu, MmStruct mm, Vma vma, ulong start, ulong end, VmFlags newFlags, out Errno error)
    {
        error = Errno.Success;
        if (start > vma.VmStart)
        {
            if ((error = MaySplit(vma, start)) != Errno.Success) return null;
            vma = SplitVma(cpu, mm, vma, start);
        }
        if (end < vma.VmEnd)
        {
            if ((error = MaySplit(vma, end)) != Errno.Success) return null;
            SplitVma(cpu, mm, vma, end);
        }
        vma.VmFlags = newFlags;
        vma.VmPageProt = Vma.VmGetPageProt(newFlags);
        Vma? n = vma.Next, p = vma.Prev;
        bool mergeNext = n is not null && n.VmStart == vma.VmEnd && CanMerge(n, vma.VmFlags, vma.AnonVma) && vma.VmPgoff + vma.Pages == n.VmPgoff;
        bool mergePrev = p is not null && p.VmEnd == vma.VmStart && CanMerge(p, vma.VmFlags, vma.AnonVma) && p.VmPgoff + p.Pages == vma.VmPgoff;
        // can_vma_merge_right: merging all three needs prev's and next's anon_vmas to agree; otherwise only prev merges.
        if (mergePrev && mergeNext && !NeighboursCompatible(p!.AnonVma, n!.AnonVma)) mergeNext = false;
        if (mergeNext) RemoveMergedNext(mm, vma, n!);
        if (mergePrev)
        {
            RemoveMergedNext(mm, p!, vma);
            vma = p!;
        }
        Interlocked.Increment(ref mm.VmaSeq);
        return vma;
    }

    // -------------------------------------------------------------------------------------------
    // exit
    // -------------------------------------------------------------------------------------------

    /// <summary>exit_mmap: zap everything with a full-mm gather, free every user page table, drop the VMAs.</summary>
    public static void ExitMmap(Cpu cpu, MmStruct mm)
    {
        mm.MmapLock.WriteLock(cpu.Id);
        try
        {
            Vma? first = mm.Vmas.First;
            if (first is not null)
            {
                MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(mm, fullmm: true);
                Memory.UnmapVmas(cpu, tlb, first, 0, ulong.MaxValue);
                Memory.FreePgtables(cpu, tlb, first, mm.Vmas.Last!, 0, 0);
                tlb.Finish();
            }
            for (Vma? v = mm.Vmas.First; v is not null;)
            {
                Vma? next = v.Next;
                if (HugetlbMapping.IsVmHugetlbPage(v)) HugetlbMapping.HugetlbVmOpClose(v);
                mm.Vmas.Remove(v);
                VmAreaCache.Free(v);
                v = next;
            }
            mm.TotalVm = 0;
            Interlocked.Increment(ref mm.VmaSeq);
            mm.MarkDead();
            mm.Machine.HugeZero.MmPut(cpu, mm); // __mmput: mm_put_huge_zero_folio
            // Any CPU that still has this mm loaded loses its translations now.
            TlbFlush.FlushMm(cpu, mm);
            PgTable.FreeTable(cpu, mm.Machine, mm.PgdPfn); // pgd_free
        }
        finally
        {
            mm.MmapLock.WriteUnlock();
        }
    }
}
