using NativeMmu.Arch.X86;
using NativeMmu.Cpu;

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

    /// <summary>mmap(2) for anonymous memory (ksys_mmap_pgoff → vm_mmap_pgoff → do_mmap → mmap_region).</summary>
    public static Errno DoMmap(Cpu.Cpu cpu, MmStruct mm, ulong addr, ulong len, Prot prot, MapFlags flags, out ulong result)
    {
        result = 0;
        MapFlags type = flags & MapFlags.Type;
        if (type is not (MapFlags.Private or MapFlags.Shared or MapFlags.SharedValidate)) return Errno.EINVAL;
        if ((flags & MapFlags.Anonymous) == 0) return Errno.EBADF; // a file mapping needs a file descriptor
        if (type != MapFlags.Private) return Errno.EINVAL; // shared anonymous memory (shmem) is not emulated
        if ((flags & MapFlags.HugeTlb) != 0) return Errno.EINVAL;
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

        mm.MmapLock.WriteLock();
        try
        {
            if (mm.Vmas.Count > MaxMapCount) return Errno.ENOMEM;
            Errno err = GetUnmappedArea(mm, addr, alignedLen, flags, out ulong start);
            if (err != Errno.Success) return err;
            if ((flags & MapFlags.FixedNoReplace) != 0 && mm.Vmas.FindVmaIntersection(start, start + alignedLen) is not null)
                return Errno.EEXIST;

            VmFlags vmFlags = CalcVmProtBits(prot) | VmFlags.MayRead | VmFlags.MayWrite | VmFlags.MayExec;
            if ((flags & MapFlags.GrowsDown) != 0) vmFlags |= VmFlags.GrowsDown;
            if ((flags & MapFlags.Locked) != 0) vmFlags |= VmFlags.Locked;
            if ((flags & MapFlags.NoReserve) != 0) vmFlags |= VmFlags.NoReserve;
            if ((vmFlags & (VmFlags.Write | VmFlags.Shared | VmFlags.NoReserve)) == VmFlags.Write) vmFlags |= VmFlags.Account; // accountable_mapping

            err = MmapRegion(cpu, mm, start, alignedLen, vmFlags);
            if (err != Errno.Success) return err;
            result = start;
        }
        finally
        {
            mm.MmapLock.WriteUnlock();
        }
        if ((flags & (MapFlags.Populate | MapFlags.NonBlock)) == MapFlags.Populate || (flags & MapFlags.Locked) != 0)
            MmPopulate(cpu, mm, result, alignedLen);
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

    /// <summary>arch_get_unmapped_area_topdown: the highest gap below mmap_base, then bottom-up as a fallback.</summary>
    private static bool FindArea(MmStruct mm, ulong len, out ulong start)
    {
        ulong low = Math.Max(Geometry.PageSize, MmapMinAddr);
        if (UnmappedAreaTopdown(mm, len, low, mm.MmapBase, out start)) return true;
        return UnmappedAreaBottomUp(mm, len, Geometry.PageAlign(mm.TaskSize / 3), mm.TaskSize, out start);
    }

    private static bool UnmappedAreaTopdown(MmStruct mm, ulong len, ulong low, ulong high, out ulong start)
    {
        start = 0;
        if (high < low + len) return false;
        Vma? next = mm.Vmas.FindVma(high - 1);
        Vma? prev = next is not null ? next.Prev : mm.Vmas.Last;
        ulong gapEnd = next is not null ? Math.Min(high, next.VmStart) : high;
        while (true)
        {
            ulong gapStart = Math.Max(prev?.VmEnd ?? low, low);
            if (gapEnd >= gapStart && gapEnd - gapStart >= len)
            {
                start = gapEnd - len;
                return true;
            }
            if (prev is null || prev.VmStart <= low) return false;
            gapEnd = prev.VmStart;
            prev = prev.Prev;
        }
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

    /// <summary>mmap_region: unmap what MAP_FIXED covers, then extend a neighbour or insert a new VMA. mmap_lock held for write.</summary>
    private static Errno MmapRegion(Cpu.Cpu cpu, MmStruct mm, ulong addr, ulong len, VmFlags vmFlags)
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
        if (mergePrev && mergeNext && !AnonVmaCompatible(prev!.AnonVma, next!.AnonVma)) mergeNext = false;

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
            vma.VmPgoff = pgoff;
            mm.Vmas.Insert(vma);
        }
        mm.TotalVm += (long)(len >> Geometry.PageShift);
        if (mm.TotalVm > mm.HiwaterVm) mm.HiwaterVm = mm.TotalVm;
        Interlocked.Increment(ref mm.VmaSeq);
        return Errno.Success;
    }

    /// <summary>is_mergeable_vma + is_mergeable_anon_vma, for anonymous VMAs (VM_SOFTDIRTY ignored).</summary>
    private static bool CanMerge(Vma vma, VmFlags flags, AnonVma? anonVma)
        => ((vma.VmFlags ^ flags) & ~VmFlags.SoftDirty) == 0 && (flags & VmFlags.Special) == 0 && AnonVmaCompatible(vma.AnonVma, anonVma);

    private static bool AnonVmaCompatible(AnonVma? a, AnonVma? b) => a is null || b is null || ReferenceEquals(a, b);

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

    /// <summary>__mm_populate: fault in every page like GUP would (a write fault for private writable memory).</summary>
    public static void MmPopulate(Cpu.Cpu cpu, MmStruct mm, ulong start, ulong len)
    {
        ulong end = start + len;
        mm.MmapLock.ReadLock(cpu.Id);
        try
        {
            for (Vma? v = mm.Vmas.FindVma(start); v is not null && v.VmStart < end; v = v.Next)
            {
                if ((v.VmFlags & (VmFlags.Io | VmFlags.PfnMap)) != 0 || !v.IsAccessible) continue;
                bool write = (v.VmFlags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
                FaultFlags ff = FaultFlags.Remote | (write ? FaultFlags.Write : 0);
                for (ulong a = Math.Max(v.VmStart, start); a < Math.Min(v.VmEnd, end); a += Geometry.PageSize)
                {
                    if (Populated(cpu, mm, a, write)) continue;
                    if ((PageFaultHandler.HandleMmFault(cpu, v, a, ff) & VmFaultT.Error) != 0) return;
                }
            }
        }
        finally
        {
            mm.MmapLock.ReadUnlock(cpu.Id);
        }
    }

    /// <summary>Whether the page is already mapped well enough (GUP's follow_page); a lockless look under RCU.</summary>
    private static bool Populated(Cpu.Cpu cpu, MmStruct mm, ulong address, bool write)
    {
        cpu.RcuReadLock();
        ulong* pmd = PgTable.WalkToPmd(mm, address);
        var pmdval = pmd == null ? default : new Pmd(PgTable.Get(pmd));
        var e = pmdval.None || pmdval.Leaf ? default : new Pte(PgTable.Get(PgTable.PteOffset(mm.Machine.Memory, pmdval.Value, address)));
        cpu.RcuReadUnlock();
        if (pmdval.Leaf) return (pmdval.Value & PageTableBits.Present) != 0 && (!write || pmdval.Write); // follow_huge_pmd
        return e.Present && (!write || e.Write);
    }

    // -------------------------------------------------------------------------------------------
    // munmap
    // -------------------------------------------------------------------------------------------

    /// <summary>munmap(2) → do_vmi_munmap.</summary>
    public static Errno DoMunmap(Cpu.Cpu cpu, MmStruct mm, ulong start, ulong len)
    {
        if ((start & (Geometry.PageSize - 1)) != 0 || start > mm.TaskSize || len > mm.TaskSize - start) return Errno.EINVAL;
        ulong end = start + Geometry.PageAlign(len);
        if (end == start) return Errno.EINVAL;
        mm.MmapLock.WriteLock();
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
    internal static Errno DoVmiAlignMunmap(Cpu.Cpu cpu, MmStruct mm, ulong start, ulong end)
    {
        Vma? first = mm.Vmas.FindVmaIntersection(start, end);
        if (first is null) return Errno.Success;
        if (start > first.VmStart)
        {
            if (end < first.VmEnd && mm.Vmas.Count >= MaxMapCount) return Errno.ENOMEM;
            first = SplitVma(cpu, mm, first, start);
        }
        Vma last = first;
        while (last.Next is { } n && n.VmStart < end) last = n;
        if (last.VmEnd > end)
        {
            if (mm.Vmas.Count >= MaxMapCount) return Errno.ENOMEM;
            SplitVma(cpu, mm, last, end);
        }
        Vma? prev = first.Prev, next = last.Next;

        MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(mm, fullmm: false);
        mm.UpdateHiwaterRss();
        Zap.UnmapVmas(cpu, tlb, first, start, end);
        Zap.FreePgtables(cpu, tlb, first, last, prev?.VmEnd ?? 0, next?.VmStart ?? 0);
        tlb.Finish();

        for (Vma? v = first; v is not null;)
        {
            Vma? following = ReferenceEquals(v, last) ? null : v.Next;
            mm.TotalVm -= (long)v.Pages;
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
    internal static Vma SplitVma(Cpu.Cpu cpu, MmStruct mm, Vma vma, ulong addr)
    {
        if ((addr & ~Geometry.PmdMask) != 0) HugeMemory.SplitHugePmdAddress(cpu, vma, addr);
        Vma upper = VmAreaCache.Alloc(mm, addr, vma.VmEnd, vma.VmFlags);
        upper.VmPageProt = vma.VmPageProt;
        upper.VmPgoff = vma.VmPgoff + ((addr - vma.VmStart) >> Geometry.PageShift);
        if (vma.AnonVma is { } av)
        {
            upper.AnonVma = av;
            Interlocked.Increment(ref av.Users);
        }
        vma.VmEnd = addr;
        mm.Vmas.Insert(upper);
        Interlocked.Increment(ref mm.VmaSeq);
        return upper;
    }

    /// <summary>
    /// vma_modify_flags: give [start, end) of vma the new flags, splitting at the edges and merging with
    /// neighbours that end up identical. Returns the VMA now covering the range's start.
    /// </summary>
    internal static Vma VmaModifyFlags(Cpu.Cpu cpu, MmStruct mm, Vma vma, ulong start, ulong end, VmFlags newFlags)
    {
        if (start > vma.VmStart) vma = SplitVma(cpu, mm, vma, start);
        if (end < vma.VmEnd) SplitVma(cpu, mm, vma, end);
        vma.VmFlags = newFlags;
        vma.VmPageProt = Vma.VmGetPageProt(newFlags);
        Vma? n = vma.Next, p = vma.Prev;
        bool mergeNext = n is not null && n.VmStart == vma.VmEnd && CanMerge(n, vma.VmFlags, vma.AnonVma) && vma.VmPgoff + vma.Pages == n.VmPgoff;
        bool mergePrev = p is not null && p.VmEnd == vma.VmStart && CanMerge(p, vma.VmFlags, vma.AnonVma) && p.VmPgoff + p.Pages == vma.VmPgoff;
        // can_vma_merge_right: merging all three needs prev's and next's anon_vmas to agree; otherwise only prev merges.
        if (mergePrev && mergeNext && !AnonVmaCompatible(p!.AnonVma, n!.AnonVma)) mergeNext = false;
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
    // mprotect
    // -------------------------------------------------------------------------------------------

    /// <summary>mprotect(2) → do_mprotect_pkey: the VMAs before a hole are changed, then ENOMEM.</summary>
    public static Errno DoMprotect(Cpu.Cpu cpu, MmStruct mm, ulong start, ulong len, Prot prot)
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
                VmFlags newFlags = CalcVmProtBits(prot) | (vma.VmFlags & ~VmFlags.AccessFlags);
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
    private static Vma MprotectFixup(Cpu.Cpu cpu, MmuGather tlb, MmStruct mm, Vma vma, ulong start, ulong end, VmFlags newFlags)
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
        vma = VmaModifyFlags(cpu, mm, vma, start, end, newFlags);
        // MM_CP_TRY_CHANGE_WRITABLE: a private writable VMA may make exclusive anon pages writable now.
        bool tryWritable = (newFlags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
        ChangeProtection(cpu, tlb, vma, start, end, vma.VmPageProt, tryWritable);
        return vma;
    }

    /// <summary>change_protection → change_pte_range: every present PTE rewritten with pte_modify, flushed as needed.</summary>
    private static void ChangeProtection(Cpu.Cpu cpu, MmuGather tlb, Vma vma, ulong start, ulong end, ulong newprot, bool tryWritable)
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

    // -------------------------------------------------------------------------------------------
    // madvise
    // -------------------------------------------------------------------------------------------

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
    public static Errno DoMadvise(Cpu.Cpu cpu, MmStruct mm, ulong start, ulong lenIn, Advice behavior)
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
    private static Errno MadviseVmaBehavior(Cpu.Cpu cpu, MmStruct mm, Vma vma, out Vma? prev, ulong start, ulong end, Advice behavior)
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
                Zap.ZapPageRangeSingle(cpu, vma, start, end - start, reclaimPt: true);
                return Errno.Success;
            }
            case Advice.WillNeed:
            case Advice.Cold:
            case Advice.PageOut:
                return Errno.Success; // no swap and no reclaim: nothing to read ahead or age
            case Advice.PopulateRead:
            case Advice.PopulateWrite:
                return MadvisePopulate(cpu, mm, vma, start, end, behavior == Advice.PopulateWrite);
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
        if (newFlags != vma.VmFlags) prev = VmaModifyFlags(cpu, mm, vma, start, end, newFlags);
        return Errno.Success;
    }

    private static Errno MadvisePopulate(Cpu.Cpu cpu, MmStruct mm, Vma vma, ulong start, ulong end, bool write)
    {
        if (write && (vma.VmFlags & VmFlags.Write) == 0) return Errno.EFAULT;
        if (!vma.IsAccessible) return Errno.EFAULT;
        FaultFlags ff = FaultFlags.Remote | (write ? FaultFlags.Write : 0);
        for (ulong a = start; a < end; a += Geometry.PageSize)
        {
            if (Populated(cpu, mm, a, write)) continue;
            VmFaultT r = PageFaultHandler.HandleMmFault(cpu, vma, a, ff);
            if ((r & VmFaultT.Oom) != 0) return Errno.ENOMEM;
            if ((r & VmFaultT.Error) != 0) return Errno.EFAULT;
        }
        return Errno.Success;
    }

    // -------------------------------------------------------------------------------------------
    // exit
    // -------------------------------------------------------------------------------------------

    /// <summary>exit_mmap: zap everything with a full-mm gather, free every user page table, drop the VMAs.</summary>
    public static void ExitMmap(Cpu.Cpu cpu, MmStruct mm)
    {
        mm.MmapLock.WriteLock();
        try
        {
            Vma? first = mm.Vmas.First;
            if (first is not null)
            {
                MmuGather tlb = MmPerCpu.Of(cpu).RentGather(cpu).Gather(mm, fullmm: true);
                Zap.UnmapVmas(cpu, tlb, first, 0, ulong.MaxValue);
                Zap.FreePgtables(cpu, tlb, first, mm.Vmas.Last!, 0, 0);
                tlb.Finish();
            }
            for (Vma? v = mm.Vmas.First; v is not null;)
            {
                Vma? next = v.Next;
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
