using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm.Huge;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>The FOLL_* flags of include/linux/mm_types.h that get_user_pages callers pass (and FOLL_PIN, which pin_user_pages sets).</summary>
[Flags]
public enum Foll : uint
{
    None = 0,
    Write = 1 << 0,
    Get = 1 << 1,
    Force = 1 << 3,
    Longterm = 1 << 8,
    /// <summary>Internal to mm/gup.c: set by pin_user_pages*, never by callers.</summary>
    Pin = 1 << 18,
}

/// <summary>
/// Pages taken by <see cref="Process.GetUserPages"/> or <see cref="Process.PinUserPages"/>: the frames as
/// they were when looked up. Reads go to the frames themselves, as a device doing DMA would see them.
/// Disposing drops the references (put_page / unpin_user_pages).
/// </summary>
public sealed unsafe class UserPages : IDisposable
{
    private readonly Machine _m;
    private readonly ulong[] _pfns;
    private bool _released;

    internal UserPages(Machine m, ulong[] pfns, Foll flags)
    {
        _m = m;
        _pfns = pfns;
        Flags = flags;
    }

    public Foll Flags { get; }
    public int Count => _pfns.Length;
    public ulong Pfn(int index) => _pfns[index];

    /// <summary>Reads a value at an offset inside the index-th page, straight from the frame.</summary>
    public T Read<T>(int index, int offset = 0) where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_released, this);
        if ((uint)offset > Geometry.PageSize - (uint)sizeof(T)) throw new ArgumentOutOfRangeException(nameof(offset));
        return *(T*)(_m.Memory.FrameAddress(_pfns[index]) + offset);
    }

    /// <summary>Writes through the reference (a device writing into a FOLL_WRITE pin).</summary>
    public void Write<T>(int index, int offset, T value) where T : unmanaged
    {
        ObjectDisposedException.ThrowIf(_released, this);
        if ((Flags & Foll.Write) == 0) throw new InvalidOperationException("the pages were not taken with FOLL_WRITE");
        *(T*)(_m.Memory.FrameAddress(_pfns[index]) + offset) = value;
    }

    /// <summary>unpin_user_pages / put_page for every page.</summary>
    public void Dispose()
    {
        if (_released) return;
        _released = true;
        using CpuScope s = _m.EnterCpu();
        foreach (ulong pfn in _pfns) Gup.Release(s.Cpu, _m, pfn, Flags);
    }
}

/// <summary>mm/gup.c: __get_user_pages (the slow path: follow_page_mask, faultin_page) and the pin accounting.</summary>
internal static unsafe class Gup
{
    /// <summary>GUP_PIN_COUNTING_BIAS: a pin adds this much to the refcount of a small folio.</summary>
    public const int GupPinCountingBias = 1024;

    /// <summary>
    /// __get_user_pages under mmap_lock for read: for each page, follow the page tables; when the entry is
    /// missing, not writable for FOLL_WRITE, or must be unshared for a read-only pin, fault it in
    /// (handle_mm_fault with FAULT_FLAG_WRITE or FAULT_FLAG_UNSHARE) and look again.
    /// </summary>
    public static Errno GetUserPages(Cpu cpu, MmStruct mm, ulong start, int nrPages, Foll flags, out ulong[] pfns)
    {
        pfns = new ulong[nrPages];
        Machine m = mm.Machine;
        mm.MmapLock.ReadLock(cpu.Id);
        int got = 0;
        Errno err = Errno.Success;
        try
        {
            for (; got < nrPages; got++)
            {
                ulong address = (start & Geometry.PageMask) + (ulong)got * Geometry.PageSize;
                Vma? vma = mm.Vmas.FindVma(address);
                if (vma is null || vma.VmStart > address) { err = Errno.EFAULT; break; }
                if (CheckVmaFlags(cpu, vma, flags) is var e && e != Errno.Success) { err = e; break; }
                while (true)
                {
                    ulong pfn = FollowPage(cpu, vma, address, flags, out FaultFlags need);
                    if (pfn != 0)
                    {
                        pfns[got] = pfn;
                        break;
                    }
                    // faultin_page
                    VmFaultT ret = PageFaultHandler.HandleMmFault(cpu, vma, address, need | FaultFlags.Remote);
                    if ((ret & VmFaultT.Oom) != 0) { err = Errno.ENOMEM; break; }
                    if ((ret & VmFaultT.Error) != 0) { err = Errno.EFAULT; break; }
                }
                if (err != Errno.Success) break;
            }
        }
        finally
        {
            mm.MmapLock.ReadUnlock(cpu.Id);
        }
        if (err != Errno.Success)
        {
            for (int i = 0; i < got; i++) Release(cpu, m, pfns[i], flags);
            pfns = [];
        }
        else if ((flags & Foll.Pin) != 0)
        {
            mm.HasPinned = true; // MMF_HAS_PINNED
        }
        return err;
    }

    /// <summary>
    /// check_vma_flags: FOLL_WRITE needs VM_WRITE (or FOLL_FORCE on a COW mapping, never on hugetlb); reads
    /// need VM_READ; and GUP's accesses are data accesses, which the caller's PKRU must allow.
    /// </summary>
    private static Errno CheckVmaFlags(Cpu cpu, Vma vma, Foll flags)
    {
        if ((flags & Foll.Write) != 0)
        {
            if ((vma.VmFlags & VmFlags.Write) == 0
                && ((flags & Foll.Force) == 0 || HugetlbMapping.IsVmHugetlbPage(vma)
                    || (vma.VmFlags & (VmFlags.Shared | VmFlags.MayWrite)) != VmFlags.MayWrite))
                return Errno.EFAULT;
        }
        else if ((vma.VmFlags & VmFlags.Read) == 0)
        {
            return Errno.EFAULT;
        }
        if (!Pkeys.VmaAccessPermitted(cpu, vma, (flags & Foll.Write) != 0)) return Errno.EFAULT;
        return Errno.Success;
    }

    /// <summary>
    /// follow_page_mask for one page, mmap_lock held for read: the PFN with its reference taken
    /// (try_grab_folio), or 0 with the fault that would make it followable. The page tables are walked
    /// with the generic walker: a huge PMD under its lock (follow_huge_pmd), a PTE under the PTL
    /// (follow_page_pte). No lock is held on return.
    /// </summary>
    private static ulong FollowPage(Cpu cpu, Vma vma, ulong address, Foll flags, out FaultFlags need)
    {
        if (HugetlbMapping.IsVmHugetlbPage(vma)) return HugetlbMapping.HugetlbFollowPageMask(vma, address, flags, out need);
        var follow = new FollowWalk(cpu, vma, flags);
        PageWalk.WalkRange(cpu, vma.Mm, address, address + Geometry.PageSize, ref follow);
        need = follow.Need;
        return follow.Pfn;
    }

    /// <summary>follow_pmd_mask and follow_page_pte as walk callbacks, for one page.</summary>
    private struct FollowWalk(Cpu cpu, Vma vma, Foll flags) : IPageWalkOps
    {
        private readonly Cpu cpu = cpu;
        private readonly Vma vma = vma;
        private readonly Foll flags = flags;
        /// <summary>The page found, its reference taken; 0 when it must be faulted in first.</summary>
        public ulong Pfn;
        /// <summary>The fault that makes it followable (a write fault for FOLL_WRITE unless told otherwise).</summary>
        public FaultFlags Need = (flags & Foll.Write) != 0 ? FaultFlags.Write : FaultFlags.None;

        public readonly PteWalk PteWalk => PteWalk.Read;
        public readonly MmuGather? Tlb => null;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>follow_pmd_mask: a huge PMD is followed under its lock; one split meanwhile is read again.</summary>
        public WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (!pmdval.Leaf)
            {
                // follow_pfn_pte's -EMLINK in the COW PTE series: a write or a pin under a shared PTE table
                // faults first, and the fault makes the table private (a pinned page must not sit in a
                // table another mm maps, nor be write-protected by its later copy).
                if (PgTable.IsCowTable(pmdval) && (flags & (Foll.Write | Foll.Pin)) != 0) return WalkAction.Continue;
                return WalkAction.Subtree;
            }
            Pfn = HugeMemory.FollowHugePmd(cpu, vma, pmd, addr, flags, out Need, out bool split);
            if (!split) return WalkAction.Continue;
            // Split meanwhile: its PTEs are followed. A huge PMD that is not present (PROT_NONE) is not
            // followable at all: the fault decides what happens.
            return PgTable.Get(pmd).Leaf ? WalkAction.Continue : WalkAction.Again;
        }

        /// <summary>follow_page_pte, under the PTL.</summary>
        public int PteEntry(ref PteMapping map, Pte* pte, Pte entry, ulong addr, ulong end)
        {
            if (!entry.Present) return 1;
            Machine m = vma.Mm.Machine;
            ulong pfn = entry.Pfn;
            bool zero = entry.Special || pfn == m.ZeroPfn;
            Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, pfn));
            Page* page = m.Vmemmap.PfnToPage(pfn);
            if ((flags & Foll.Write) != 0 && !CanFollowWrite(entry.Write, vma, flags, zero, head, page)) return 1; // COW first
            if (!entry.Write && MustUnshare(vma, flags, zero, head, page))
            {
                Need = FaultFlags.Unshare;
                return 1;
            }
            if (!zero) Grab(head, flags); // the shared zero page: no reference to take (it is never freed)
            Pfn = pfn;
            return 1;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }
    }

    /// <summary>
    /// can_follow_write_pte / can_follow_write_pmd: a writable entry, or - for FOLL_FORCE on a private
    /// mapping that may be written but is not writable now (ptrace's poke) - an exclusive anonymous page,
    /// which the write fault (a COW) has just made it. Without the second case such a GUP would fault forever.
    /// </summary>
    internal static bool CanFollowWrite(bool writable, Vma vma, Foll flags, bool zero, Page* head, Page* page)
    {
        if (writable) return true;
        if ((flags & Foll.Force) == 0) return false;
        if ((vma.VmFlags & (VmFlags.Shared | VmFlags.MayShare | VmFlags.MayWrite | VmFlags.Write)) != VmFlags.MayWrite) return false;
        return !zero && (head->Mapping & PageTypes.MappingAnon) != 0 && page->TestFlag(PG.AnonExclusive);
    }

    /// <summary>
    /// gup_must_unshare: only FOLL_PIN without FOLL_WRITE. An anonymous page that is not PageAnonExclusive
    /// must be unshared first; the zero page only for a long-term pin in a COW mapping.
    /// </summary>
    internal static bool MustUnshare(Vma vma, Foll flags, bool zero, Page* head, Page* page)
    {
        if ((flags & (Foll.Write | Foll.Pin)) != Foll.Pin) return false;
        if (zero || (head->Mapping & PageTypes.MappingAnon) == 0)
            return (flags & Foll.Longterm) != 0 && (vma.VmFlags & (VmFlags.Shared | VmFlags.MayWrite)) == VmFlags.MayWrite;
        return !page->TestFlag(PG.AnonExclusive);
    }

    /// <summary>try_grab_folio: FOLL_GET takes a reference; FOLL_PIN adds GUP_PIN_COUNTING_BIAS (small) or a reference and a _pincount (large).</summary>
    internal static void Grab(Page* head, Foll flags)
    {
        if ((flags & Foll.Pin) == 0)
        {
            Interlocked.Increment(ref head->RefCount);
            return;
        }
        if (Folio.IsLarge(head))
        {
            Interlocked.Increment(ref head->RefCount);
            Interlocked.Increment(ref Folio.Pincount(head));
        }
        else
        {
            Interlocked.Add(ref head->RefCount, GupPinCountingBias);
        }
    }

    /// <summary>put_page / unpin_user_page (gup_put_folio): the last reference frees the folio.</summary>
    internal static void Release(Cpu cpu, Machine m, ulong pfn, Foll flags)
    {
        if (pfn == m.ZeroPfn) return;
        ulong headPfn = Folio.HeadPfn(m, pfn);
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        if (m.HugeZero.IsHead(headPfn))
        {
            if ((flags & Foll.Pin) != 0) Interlocked.Decrement(ref Folio.Pincount(head));
            m.HugeZero.Put(cpu);
            return;
        }
        int refs = 1;
        if ((flags & Foll.Pin) != 0)
        {
            if (Folio.IsLarge(head)) Interlocked.Decrement(ref Folio.Pincount(head));
            else refs = GupPinCountingBias;
        }
        if (Folio.IsLarge(head)) Folio.PutRefs(cpu, m, headPfn, refs);
        else
        {
            if (refs > 1) Interlocked.Add(ref head->RefCount, -(refs - 1));
            Rmap.FolioPut(cpu, m, headPfn);
        }
    }

    /// <summary>__mm_populate: fault in every page like GUP would (a write fault for private writable memory).</summary>
    public static void MmPopulate(Cpu cpu, MmStruct mm, ulong start, ulong len)
    {
        ulong end = start + len;
        mm.MmapLock.ReadLock(cpu.Id);
        try
        {
            for (Vma? v = mm.Vmas.FindVma(start); v is not null && v.VmStart < end; v = v.Next)
            {
                if ((v.VmFlags & (VmFlags.Io | VmFlags.PfnMap)) != 0 || !v.IsAccessible) continue;
                bool write = (v.VmFlags & (VmFlags.Write | VmFlags.Shared)) == VmFlags.Write;
                // check_vma_flags refuses a VMA whose key the task's PKRU denies (an execute-only one):
                // -EFAULT, which mm_populate ignores and goes on at the next VMA.
                if (!Pkeys.VmaAccessPermitted(cpu, v, write)) continue;
                FaultFlags ff = FaultFlags.Remote | (write ? FaultFlags.Write : 0);
                // GUP advances by the page mask it is given: a whole huge page at a time for hugetlb.
                ulong step = HugetlbMapping.IsVmHugetlbPage(v) ? HugetlbMapping.HugePageSize(HugetlbMapping.HstateVma(v)) : Geometry.PageSize;
                for (ulong a = Math.Max(v.VmStart, start); a < Math.Min(v.VmEnd, end); a = (a + step) & ~(step - 1))
                {
                    if (Populated(cpu, mm, v, a, write)) continue;
                    if ((PageFaultHandler.HandleMmFault(cpu, v, a, ff) & VmFaultT.Error) != 0) return;
                }
            }
        }
        finally
        {
            mm.MmapLock.ReadUnlock(cpu.Id);
        }
    }

    /// <summary>
    /// Whether the page is already mapped well enough (GUP's follow_page): a lockless look, the PTE read
    /// inside an RCU read-side section (pte_offset_map_ro_nolock). mmap_lock held for read.
    /// </summary>
    internal static bool Populated(Cpu cpu, MmStruct mm, Vma vma, ulong address, bool write)
    {
        if (HugetlbMapping.IsVmHugetlbPage(vma)) return HugetlbMapping.Populated(vma, address, write);
        var look = new PopulatedWalk(write);
        PageWalk.WalkRange(cpu, mm, address, address + Geometry.PageSize, ref look);
        return look.Mapped;
    }

    /// <summary>The populate look as walk callbacks: a huge PMD or a PTE, present (and writable for a write).</summary>
    private struct PopulatedWalk(bool write) : IPageWalkOps
    {
        private readonly bool write = write;
        public bool Mapped;

        public readonly PteWalk PteWalk => PteWalk.RoNolock;
        public readonly MmuGather? Tlb => null;

        public readonly WalkAction PgdEntry(Pgd* pgd, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction P4dEntry(P4d* p4d, P4d p4dval, ulong addr, ulong next) => WalkAction.Subtree;
        public readonly WalkAction PudEntry(Pud* pud, Pud pudval, ulong addr, ulong next) => WalkAction.Subtree;

        /// <summary>follow_huge_pmd's test, without its lock.</summary>
        public WalkAction PmdEntry(Pmd* pmd, Pmd pmdval, ulong addr, ulong next)
        {
            if (!pmdval.Leaf)
            {
                if (!write || !PgTable.IsCowTable(pmdval)) return WalkAction.Subtree;
                Mapped = false; // a shared PTE table: the write fault makes it private first
                return WalkAction.Continue;
            }
            Mapped = (pmdval.Value & PageTableBits.Present) != 0 && (!write || pmdval.Write);
            return WalkAction.Continue;
        }

        public int PteEntry(ref PteMapping map, Pte* pte, Pte ptent, ulong addr, ulong end)
        {
            Mapped = ptent.Present && (!write || ptent.Write);
            return 1;
        }

        public readonly void PteTableLocked(ref PteMapping map, Pmd* pmd, ulong start, ulong addr, ulong end) { }
        public readonly void PteTableUnlocked(Pmd* pmd, ulong start, ulong addr, ulong end) { }
    }
}
