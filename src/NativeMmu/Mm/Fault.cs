using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Diagnostics;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>FAULT_FLAG_* of include/linux/mm_types.h.</summary>
[Flags]
public enum FaultFlags : uint
{
    None = 0,
    Write = 1 << 0,
    MkWrite = 1 << 1,
    AllowRetry = 1 << 2,
    RetryNowait = 1 << 3,
    Killable = 1 << 4,
    Tried = 1 << 5,
    User = 1 << 6,
    Remote = 1 << 7,
    Instruction = 1 << 8,
    Interruptible = 1 << 9,
    Unshare = 1 << 10,
    OrigPteValid = 1 << 11,
    VmaLock = 1 << 12,
}

/// <summary>vm_fault_t bits.</summary>
[Flags]
public enum VmFaultT : uint
{
    None = 0,
    Oom = 0x000001,
    Sigbus = 0x000002,
    Major = 0x000004,
    Hwpoison = 0x000010,
    /// <summary>VM_FAULT_HWPOISON_LARGE: a hwpoison entry of a huge page (hugetlb).</summary>
    HwpoisonLarge = 0x000020,
    Sigsegv = 0x000040,
    NoPage = 0x000100,
    Locked = 0x000200,
    Retry = 0x000400,
    Fallback = 0x000800,
    DoneCow = 0x001000,
    Completed = 0x004000,
    Error = Oom | Sigbus | Sigsegv | Hwpoison | HwpoisonLarge,
}

/// <summary>
/// struct vm_fault: the state of one fault as it travels down the handlers. Lock state travels with
/// it: <see cref="Ptl"/> is non-null exactly while the PTE table lock is held (the page-table layer's
/// PteOffsetMapLock sets it, PteUnmapUnlock clears it).
/// </summary>
internal unsafe ref struct VmFault
{
    public Cpu Cpu;
    public MmStruct Mm;
    public Vma Vma;
    /// <summary>The faulting address, page aligned.</summary>
    public ulong Address;
    /// <summary>The faulting address as the CPU reported it (CR2).</summary>
    public ulong RealAddress;
    public FaultFlags Flags;
    public Pmd* Pmd;
    public Pte* Pte;
    /// <summary>The PTE as read before the lock was taken; re-checked with pte_same under it.</summary>
    public Pte OrigPte;
    /// <summary>The PTE table's lock: non-null exactly while it is held.</summary>
    public int* Ptl;
    /// <summary>What the fault turned out to be, and the PFN it left mapped (for counters and events).</summary>
    public FaultKind Kind;
    public ulong MappedPfn;
    /// <summary>PtReclaim = Refcount: the PTE table this walker holds a pte_refcount on (0 otherwise).</summary>
    public ulong PteTable;
    /// <summary>Its struct page (null when no table is held): the walker locks the ptl there.</summary>
    public Page* PteTablePage;
    /// <summary>The walker's reference became the reference of the entry it installed (nothing left to put).</summary>
    public bool PteRefTransferred;
    /// <summary>The shared PTE table under the fault could not be broken: no memory for its copy (VM_FAULT_OOM).</summary>
    public bool CowPteOom;
}

/// <summary>
/// The anonymous fault path of mm/memory.c (and arch/x86/mm/fault.c's do_user_addr_fault above it).
/// Lock state on entry to each handler is stated in its summary.
/// </summary>
public sealed unsafe class PageFaultHandler : IPageFaultHandler
{
    /// <summary>exc_page_fault → do_user_addr_fault: find the VMA under mmap_lock, check access, handle_mm_fault.</summary>
    public FaultResult HandleUserFault(Cpu cpu, ulong address, X86PfError error)
    {
        MmStruct mm = Unsafe.As<MmStruct>(cpu.LoadedMm!);
        cpu.ServiceInterrupts(); // exceptions run with interrupts enabled: a pending flush IPI is taken here
        Bug.On((error & X86PfError.Rsvd) != 0, "pgtable_bad: reserved bit set in a paging entry for {0:x}", address);
        if (address >= mm.TaskSize) return FaultResult.SegvMaperr; // a user access to kernel space

        FaultFlags flags = FaultFlags.User | FaultFlags.AllowRetry | FaultFlags.Killable;
        if ((error & X86PfError.Write) != 0) flags |= FaultFlags.Write;
        if ((error & X86PfError.Instr) != 0) flags |= FaultFlags.Instruction;

        mm.MmapLock.ReadLock(cpu.Id);
        Vma? vma = MmPerCpu.Of(cpu).FindVmaCached(mm, address);
        if (vma is null || vma.VmStart > address)
        {
            mm.MmapLock.ReadUnlock(cpu.Id);
            return FaultResult.SegvMaperr; // bad_area
        }
        if (AccessError(cpu, error, vma))
        {
            bool pkey = Pkeys.BadAreaAccessFromPkeys(cpu, error, vma); // bad_area_access_error
            mm.MmapLock.ReadUnlock(cpu.Id);
            return pkey ? FaultResult.SegvPkuerr : FaultResult.SegvAccerr;
        }
        VmFaultT fault = HandleMmFault(cpu, vma, address, flags, error);
        mm.MmapLock.ReadUnlock(cpu.Id);
        // Out of memory with partially mapped large folios queued: the deferred-split shrinker frees
        // their unmapped pages (as reclaim would run it), and the access is retried once.
        if ((fault & VmFaultT.Oom) != 0 && mm.Machine.SplitQueue.Length > 0 && mm.Machine.SplitQueue.Scan(cpu) > 0)
            return FaultResult.Retry;

        if ((fault & VmFaultT.Error) == 0) return FaultResult.Retry;
        if ((fault & VmFaultT.Oom) != 0) return FaultResult.Oom;
        if ((fault & (VmFaultT.Hwpoison | VmFaultT.HwpoisonLarge)) != 0) return FaultResult.SigbusMceErrAr; // do_sigbus → force_sig_mceerr
        if ((fault & VmFaultT.Sigbus) != 0) return FaultResult.Sigbus;
        return FaultResult.SegvMaperr; // VM_FAULT_SIGSEGV → bad_area_nosemaphore
    }

    /// <summary>access_error (arch/x86/mm/fault.c): does the VMA allow this kind of access at all?</summary>
    internal static bool AccessError(Cpu cpu, X86PfError error, Vma vma)
    {
        // A read or write blocked by protection keys can never be resolved by the fault.
        if ((error & X86PfError.Pk) != 0) return true;
        // Checked on the VMA too, so that a fault does not fill in a page only to hit X86_PF_PK on it.
        if (!Pkeys.VmaAccessPermitted(cpu, vma, (error & X86PfError.Write) != 0)) return true;
        if ((error & X86PfError.Write) != 0) return (vma.VmFlags & VmFlags.Write) == 0;
        if ((error & X86PfError.Prot) != 0) return true;  // read, present: the entry forbids it
        return !vma.IsAccessible;                        // read, not present
    }

    /// <summary>handle_mm_fault: __handle_mm_fault, then mm_account_fault. Caller holds mmap_lock for read.</summary>
    internal static VmFaultT HandleMmFault(Cpu cpu, Vma vma, ulong address, FaultFlags flags, X86PfError error = X86PfError.None)
    {
        FaultKind kind = 0;
        ulong pfn = 0;
        VmFaultT ret = (vma.VmFlags & VmFlags.HugeTlb) != 0
            ? Huge.HugetlbFault.Fault(cpu, vma, address, flags)
            : Memory.HandleMmFaultInner(cpu, vma, address, flags, out kind, out pfn);
        // mm_account_fault: every fault but a retried one counts, failed ones included.
        // (min_flt is per task in the kernel; a shared per-mm count would bounce between CPUs.)
        if ((ret & VmFaultT.Retry) != 0) return ret;
        PerCpuCounters counters = vma.Mm.Machine.Counters;
        counters.Add(cpu.Id, VmEvent.Pgfault);
        if (kind != 0) counters.Add(cpu.Id, VmEvent.FaultAnonZeroFill + ((int)kind - 1));
#if !NATIVEMMU_NO_EVENTS
        if (NativeMmuEventSource.Log.FaultEventsEnabled) NativeMmuEventSource.Log.Fault(address, pfn, (uint)error, (int)kind, cpu.Id);
#endif
        return ret;
    }
}

/// <summary>
/// mm/memory.c: one partial class over the fault path (this file), zap (Zap.cs) and fork's copy
/// (Copy.cs), as memory.c is one file. Here __handle_mm_fault and the anonymous-memory handlers below it;
/// each handler's lock state on entry and exit is in its summary.
/// </summary>
internal static unsafe partial class Memory
{
    /// <summary>__handle_mm_fault: walk, allocating upper tables as needed, down to the PMD; then handle_pte_fault. mmap_lock held for read.</summary>
    internal static VmFaultT HandleMmFaultInner(Cpu cpu, Vma vma, ulong address, FaultFlags flags, out FaultKind kind, out ulong pfn)
    {
        VmFaultT ret = HandleMmFaultInner(cpu, vma, address, flags, out VmFault vmf);
        kind = vmf.Kind;
        pfn = vmf.MappedPfn;
        return ret;
    }

    private static VmFaultT HandleMmFaultInner(Cpu cpu, Vma vma, ulong address, FaultFlags flags, out VmFault vmf)
    {
        MmStruct mm = vma.Mm;
        vmf = new VmFault
        {
            Cpu = cpu,
            Mm = mm,
            Vma = vma,
            Address = address & Geometry.PageMask,
            RealAddress = address,
            Flags = flags,
            Kind = FaultKind.Spurious,
        };
        Pgd* pgd = PgTable.PgdOffset(mm, address);
        P4d* p4d = PgTable.P4dAllocOffset(cpu, mm, pgd, address);
        if (p4d == null) return VmFaultT.Oom;
        Pud* pud = PgTable.PudAllocOffset(cpu, mm, p4d, address);
        if (pud == null) return VmFaultT.Oom;
        vmf.Pmd = PgTable.PmdAllocOffset(cpu, mm, pud, address);
        if (vmf.Pmd == null) return VmFaultT.Oom;
        // A none PMD where PMD-sized THPs may be allowed goes to create_huge_pmd, a huge PMD to the huge
        // handlers; either may fall back to the PTE level.
        Pmd pmdval = PgTable.Get(vmf.Pmd);
        if (pmdval.Leaf || (pmdval.None && mm.Machine.Thp.PmdOrderPossible))
        {
            VmFaultT huge = HugeMemory.HugePmdFault(ref vmf, pmdval);
            if ((huge & VmFaultT.Fallback) == 0) return huge;
        }
        VmFaultT ret = HandlePteFault(ref vmf);
        PgTable.PteFaultDone(ref vmf, address);
        return ret;
    }

    /// <summary>
    /// handle_pte_fault: classify. Entered without the PTL; a missing PTE goes to do_pte_missing, a present
    /// one is re-checked under the PTL (pte_same) and becomes do_wp_page or an access-flag update. Returns
    /// without the PTL.
    /// </summary>
    private static VmFaultT HandlePteFault(ref VmFault vmf)
    {
        Machine m = vmf.Mm.Machine;
        // pte_offset_map_rw_nolock: the PTE is read without its lock, inside an RCU read-side section,
        // because a reclaim on another CPU may free the table; the PMD is re-checked once locked.
        Pte* pte = PgTable.PteOffsetMapRwNolock(ref vmf, out Pmd pmdval);
        if (pte == null && (pmdval.Leaf || vmf.CowPteOom))
        {
            PgTable.PteUnmap(vmf.Cpu); // a huge PMD appeared meanwhile (pte_offset_map fails): retry the access
            return vmf.CowPteOom ? VmFaultT.Oom : VmFaultT.None; // or a shared table could not be broken
        }
        if (pte != null)
        {
            vmf.OrigPte = PgTable.Get(pte);
            vmf.Flags |= FaultFlags.OrigPteValid;
            if (!vmf.OrigPte.None) vmf.Pte = pte;
        }
        if (vmf.Pte == null)
        {
            PgTable.PteUnmap(vmf.Cpu);
            return DoAnonymousPage(ref vmf); // do_pte_missing: anonymous VMAs only
        }

        if (!vmf.OrigPte.Present)
            Bug.Throw($"do_swap_page: non-present entry {vmf.OrigPte.Value:x16} at {vmf.Address:x}, and this kernel has no swap");

        vmf.Ptl = PgTable.PteLockptr(m, pmdval);
        Spin.Lock(vmf.Ptl);
        PgTable.PteUnmap(vmf.Cpu);
        Pte entry = vmf.OrigPte;
        if (PgTable.Get(vmf.Pmd) != pmdval || PgTable.Get(vmf.Pte) != entry)
        {
            // The table was reclaimed or the entry changed: let the CPU retry the access.
            PgTable.PteUnmapUnlock(ref vmf);
            return VmFaultT.None;
        }
        bool write = (vmf.Flags & (FaultFlags.Write | FaultFlags.Unshare)) != 0;
        if (write)
        {
            if (!entry.Write) return DoWpPage(ref vmf);
            if ((vmf.Flags & FaultFlags.Write) != 0) entry = entry.MkDirty();
        }
        entry = entry.MkYoung();
        PtepSetAccessFlags(vmf.Pte, entry, (vmf.Flags & FaultFlags.Write) != 0);
        PgTable.PteUnmapUnlock(ref vmf);
        return VmFaultT.None;
    }

    /// <summary>ptep_set_access_flags (x86): only a dirty update is written; A alone the MMU sets itself. PTL held.</summary>
    private static bool PtepSetAccessFlags(Pte* ptep, Pte entry, bool dirty)
    {
        bool changed = PgTable.Get(ptep) != entry;
        if (changed && dirty) PgTable.Set(ptep, entry);
        return changed;
    }

    /// <summary>
    /// do_anonymous_page: a read maps the shared zero page read-only (special); a write maps a fresh
    /// zeroed page, writable and dirty. Entered without the PTL; allocates the PTE table if needed;
    /// returns without the PTL.
    /// </summary>
    private static VmFaultT DoAnonymousPage(ref VmFault vmf)
    {
        Vma vma = vmf.Vma;
        MmStruct mm = vmf.Mm;
        Machine m = mm.Machine;
        if ((vma.VmFlags & VmFlags.Shared) != 0) return VmFaultT.Sigbus;
        if (!PgTable.PteAlloc(ref vmf, out VmFaultT fail)) return fail;

        // Use the zero-page for reads (unless the kernel maps none: ForbidZeroPage).
        if ((vmf.Flags & FaultFlags.Write) == 0 && !m.Config.ForbidZeroPage)
        {
            Pte zero = Pte.PfnPte(m.ZeroPfn, vma.VmPageProt).MkSpecial();
            if (!PgTable.PteOffsetMapLock(ref vmf, vmf.Address)) return VmFaultT.None;
            if (!PgTable.Get(vmf.Pte).None)
            {
                PgTable.PteUnmapUnlock(ref vmf); // vmf_pte_changed: someone else populated it
                return VmFaultT.None;
            }
            PgTable.Set(vmf.Pte, zero);
            PgTable.PteInstalled(ref vmf, 1);
            PgTable.PteUnmapUnlock(ref vmf);
            vmf.Kind = FaultKind.ZeroPage;
            vmf.MappedPfn = m.ZeroPfn;
            return VmFaultT.None;
        }

        // vmf_anon_prepare: the VMA needs its anon_vma before a page can point at it.
        AnonVma anonVma = vma.AnonVma ?? AnonVmaPrepare(vma);
        if (m.Thp.AnyAnonOrderPossible) return DoAnonymousLargePage(ref vmf, anonVma);
        // alloc_anon_folio → folio_prealloc: a zeroed order-0 folio.
        ulong pfn = m.Allocator.AllocPages(vmf.Cpu.Id, 0, Gfp.Zero);
        if (pfn == 0) return VmFaultT.Oom;
        Page* page = m.Vmemmap.PfnToPage(pfn);
        page->SetFlag(PG.Uptodate); // __folio_mark_uptodate: the zeroing is complete before the PTE is visible

        Pte entry = Pte.PfnPte(pfn, vma.VmPageProt);
        if ((vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkDirty().MkWrite();

        if (!PgTable.PteOffsetMapLock(ref vmf, vmf.Address))
        {
            Rmap.FolioPut(vmf.Cpu, m, pfn);
            return VmFaultT.None;
        }
        if (!PgTable.Get(vmf.Pte).None)
        {
            PgTable.PteUnmapUnlock(ref vmf);
            Rmap.FolioPut(vmf.Cpu, m, pfn);
            return VmFaultT.None;
        }
        mm.AddMmCounter(vmf.Cpu.Id, MmCounter.AnonPages, 1);
        Rmap.FolioAddNewAnonRmap(vmf.Cpu, m, page, vma, anonVma, vmf.Address);
        PgTable.Set(vmf.Pte, entry); // set_ptes: publishes the zeroed, rmapped page
        PgTable.PteInstalled(ref vmf, 1);
        PgTable.PteUnmapUnlock(ref vmf);
        // A host-cache hint, not kernel work: the frame the next fault will zero is fetched while the
        // rest of this one runs (see FrameAllocator.PrefetchNextFrame).
        m.Allocator.PrefetchNextFrame(vmf.Cpu.Id);
        vmf.Kind = FaultKind.AnonZeroFill;
        vmf.MappedPfn = pfn;
        return VmFaultT.None;
    }

    /// <summary>
    /// alloc_anon_folio: the highest allowable mTHP order below PMD order whose aligned range lies inside
    /// the VMA and is all pte_none, falling back order by order (anon_fault_fallback) to a 4 KiB folio.
    /// Returns the folio's head PFN (0: out of memory) and its order. No PTL; the none test is rechecked
    /// under it.
    /// </summary>
    private static ulong AllocAnonFolio(ref VmFault vmf, out int order)
    {
        Machine m = vmf.Mm.Machine;
        Vma vma = vmf.Vma;
        uint orders = m.Thp.AllowableOrders(vma.VmFlags) & ((1u << Thp.PmdOrder) - 1);
        Pmd pmdval = PgTable.Get(vmf.Pmd);
        Pte* ptes = pmdval.None || pmdval.Leaf ? null : PgTable.PteOffset(m.Memory, pmdval, vmf.Address & Geometry.PmdMask);
        for (order = Thp.PmdOrder - 1; order >= 2; order--)
        {
            if ((orders & (1u << order)) == 0) continue;
            ulong size = Geometry.PageSize << order;
            ulong haddr = vmf.Address & ~(size - 1);
            if (haddr < vma.VmStart || haddr + size > vma.VmEnd) continue; // thp_vma_suitable_order
            if (ptes != null && !PteRangeNone(ptes + Geometry.PteIndex(haddr), 1 << order)) continue;
            ulong folio = m.Allocator.AllocPages(vmf.Cpu.Id, order, Gfp.Zero | Gfp.Comp);
            if (folio != 0) return folio;
            m.Thp.Count(order, MthpStat.AnonFaultFallback);
        }
        order = 0;
        return m.Allocator.AllocPages(vmf.Cpu.Id, 0, Gfp.Zero);
    }

    private static bool PteRangeNone(Pte* pte, int nr)
    {
        for (int i = 0; i < nr; i++)
            if (!PgTable.Get(pte + i).None) return false;
        return true;
    }

    /// <summary>do_anonymous_page's write path when mTHP orders may be enabled: nr PTEs map one new folio. Entered and left without the PTL.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private static VmFaultT DoAnonymousLargePage(ref VmFault vmf, AnonVma anonVma)
    {
        Vma vma = vmf.Vma;
        MmStruct mm = vmf.Mm;
        Machine m = mm.Machine;
        ulong pfn = AllocAnonFolio(ref vmf, out int order);
        if (pfn == 0) return VmFaultT.Oom;
        int nr = 1 << order;
        ulong addr = vmf.Address & ~((Geometry.PageSize << order) - 1);
        Page* page = m.Vmemmap.PfnToPage(pfn);
        page->SetFlag(PG.Uptodate);
        if (!PgTable.PteOffsetMapLock(ref vmf, addr))
        {
            Rmap.FolioPut(vmf.Cpu, m, pfn);
            return VmFaultT.None;
        }
        if (!PteRangeNone(vmf.Pte, nr))
        {
            PgTable.PteUnmapUnlock(ref vmf);
            Rmap.FolioPut(vmf.Cpu, m, pfn);
            return VmFaultT.None;
        }
        if (order == 0) Rmap.FolioAddNewAnonRmap(vmf.Cpu, m, page, vma, anonVma, addr);
        else
        {
            page->RefCount += nr - 1; // folio_ref_add(nr - 1): one reference per PTE
            m.Thp.Count(order, MthpStat.AnonFaultAlloc);
            Folio.AddNewAnonRmap(vmf.Cpu, m, pfn, vma, anonVma, addr);
        }
        mm.AddMmCounter(vmf.Cpu.Id, MmCounter.AnonPages, nr);
        for (int i = 0; i < nr; i++) // set_ptes
        {
            Pte entry = Pte.PfnPte(pfn + (ulong)i, vma.VmPageProt);
            if ((vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkDirty().MkWrite();
            PgTable.Set(vmf.Pte + i, entry);
        }
        PgTable.PteInstalled(ref vmf, nr);
        PgTable.PteUnmapUnlock(ref vmf);
        vmf.Kind = FaultKind.AnonZeroFill;
        vmf.MappedPfn = pfn + ((vmf.Address - addr) >> Geometry.PageShift);
        return VmFaultT.None;
    }

    /// <summary>
    /// anon_vma_prepare: first anonymous page of a VMA. Racing CPUs agree on one anon_vma. No page-table
    /// lock. As __anon_vma_prepare, it first tries find_mergeable_anon_vma, so that neighbours differing
    /// only in protection share one anon_vma and can merge later.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    internal static AnonVma AnonVmaPrepare(Vma vma)
    {
        AnonVma fresh;
        if (FindMergeableAnonVma(vma) is { } shared)
        {
            Interlocked.Increment(ref shared.Users);
            fresh = shared;
        }
        else
        {
            fresh = AnonVma.Alloc();
        }
        AnonVma? winner = Interlocked.CompareExchange(ref vma.AnonVma, fresh, null);
        if (winner is null) return fresh;
        AnonVma.Put(fresh); // another CPU prepared it first
        return winner;
    }

    /// <summary>
    /// find_mergeable_anon_vma (mm/vma.c): the next VMA's anon_vma, else the previous one's, when that VMA
    /// is adjacent, differs only in VM_ACCESS_FLAGS and VM_SOFTDIRTY, continues the page offsets
    /// (anon_vma_compatible) and is no fork child (reusable_anon_vma: list_is_singular of its chain).
    /// Under mmap_lock for read: the neighbours are stable, their anon_vma is read once.
    /// </summary>
    private static AnonVma? FindMergeableAnonVma(Vma vma)
    {
        static bool Compatible(Vma a, Vma b)
            => a.VmEnd == b.VmStart && ((a.VmFlags ^ b.VmFlags) & ~(VmFlags.AccessFlags | VmFlags.SoftDirty)) == 0
               && b.VmPgoff == a.VmPgoff + ((b.VmStart - a.VmStart) >> Geometry.PageShift);
        static AnonVma? Reusable(Vma old, Vma a, Vma b)
            => Compatible(a, b) && Volatile.Read(ref old.AnonVma) is { Forked: false } av ? av : null;
        if (vma.Next is { } next && Reusable(next, vma, next) is { } n) return n;
        return vma.Prev is { } prev ? Reusable(prev, prev, vma) : null;
    }

    /// <summary>
    /// do_wp_page: a write (or unshare) hit a present, read-only PTE. Entered with the PTL held; reuses an
    /// exclusively owned anonymous page in place, otherwise drops the lock and copies. Returns without the PTL.
    /// </summary>
    private static VmFaultT DoWpPage(ref VmFault vmf)
    {
        Machine m = vmf.Mm.Machine;
        bool unshare = (vmf.Flags & FaultFlags.Unshare) != 0;
        ulong pfn = VmNormalPage(m, vmf.OrigPte);
        if (pfn != 0)
        {
            Page* page = m.Vmemmap.PfnToPage(pfn);
            ulong headPfn = (page->CompoundHead & 1) != 0 ? Folio.HeadPfn(m, pfn) : pfn;
            Page* head = m.Vmemmap.PfnToPage(headPfn);
            if ((head->Mapping & PageTypes.MappingAnon) != 0)
            {
                bool large = Folio.IsLarge(head);
                if (!unshare && large && !page->TestFlag(PG.AnonExclusive)
                    && m.Config.WpLargeFolio == LargeFolioWp.ReuseWholeFolio && WpCanReuseWholeFolio(ref vmf, headPfn))
                    return VmFaultT.None;
                if (page->TestFlag(PG.AnonExclusive)
                    || (large ? m.Config.WpLargeFolio == LargeFolioWp.ReuseSubpage && WpCanReuseLargeAnonFolio(head)
                              : WpCanReuseAnonFolio(page, vmf.Vma)))
                {
                    // PageAnonExclusive before the entry becomes writable, both under the PTL: a writable
                    // anonymous entry never maps a page that is not exclusive (page_table_check's rule),
                    // and whoever reads the entry under the lock sees the flag with it.
                    if (!page->TestFlag(PG.AnonExclusive)) page->SetFlagAtomic(PG.AnonExclusive);
                    if (unshare)
                    {
                        PgTable.PteUnmapUnlock(ref vmf);
                        return VmFaultT.None;
                    }
                    WpPageReuse(ref vmf);
                    return VmFaultT.None;
                }
            }
            Interlocked.Increment(ref head->RefCount); // folio_get: hold the old folio across the copy
        }
        PgTable.PteUnmapUnlock(ref vmf);
        return WpPageCopy(ref vmf, pfn);
    }

    /// <summary>vm_normal_page: 0 for special mappings (the zero page), else the PFN.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong VmNormalPage(Machine m, Pte pte)
    {
        if (pte.Special) return 0;
        ulong pfn = pte.Pfn;
        return pfn == m.ZeroPfn ? 0 : pfn;
    }

    /// <summary>wp_can_reuse_anon_folio for a small folio: the only reference is our mapping. PTL held; takes and drops the folio lock (trylock).</summary>
    private static bool WpCanReuseAnonFolio(Page* page, Vma vma)
    {
        if (page->IsHead) return false; // large folios: not reused by this rule
        if (Volatile.Read(ref page->RefCount) > 3) return false;
        int swapcache = page->TestFlag(PG.Swapcache) ? 1 : 0;
        if (Volatile.Read(ref page->RefCount) > 1 + swapcache) return false;
        if (!Rmap.FolioTryLock(page)) return false;
        bool ok = Volatile.Read(ref page->RefCount) == 1;
        if (ok && vma.AnonVma is { } av) page->Mapping = Rmap.AnonMapping(av); // folio_move_anon_rmap
        Rmap.FolioUnlock(page);
        return ok;
    }

    /// <summary>
    /// __wp_can_reuse_large_anon_folio (6.15): a large folio is reused when every reference to it is a
    /// mapping and every mapping is in this mm; a folio with a single mapping left is copied instead, so
    /// that it can be freed. PTL held; the final test under folio_lock_large_mapcount.
    /// </summary>
    private static bool WpCanReuseLargeAnonFolio(Page* head)
    {
        if (Folio.Mapcount(head) <= 1) return false;
        if (Folio.MaybeMappedShared(head)) return false;
        if (head->TestFlag(PG.Swapcache)) return false; // no swap here: never set
        if (Folio.Mapcount(head) != Volatile.Read(ref head->RefCount)) return false;
        return Folio.ExclusiveToOneMm(head); // stabilised under folio_lock_large_mapcount
    }

    /// <summary>
    /// The RFC's whole-folio reuse: when the folio is not mapped shared, lies inside one PMD and one VMA,
    /// every one of its nr PTEs is present and maps it in order, its mapcount is nr and every reference
    /// is one of those mappings, mark all nr pages PageAnonExclusive and make all nr PTEs young, dirty and
    /// writable at once, counting PGREUSE once. Called with the PTL held; releases it on success (true),
    /// keeps it otherwise.
    /// </summary>
    private static bool WpCanReuseWholeFolio(ref VmFault vmf, ulong headPfn)
    {
        Machine m = vmf.Mm.Machine;
        Page* head = m.Vmemmap.PfnToPage(headPfn);
        int nr = Folio.NrPages(head);
        if (Folio.MaybeMappedShared(head)) return false;
        ulong idx = vmf.OrigPte.Pfn - headPfn;
        ulong start = vmf.Address - idx * Geometry.PageSize;
        ulong end = start + (ulong)nr * Geometry.PageSize;
        ulong lo = Math.Max(vmf.Address & Geometry.PmdMask, vmf.Vma.VmStart);
        ulong hi = Math.Min((vmf.Address & Geometry.PmdMask) + Geometry.PmdSize, vmf.Vma.VmEnd);
        if (start < lo || end > hi) return false;
        Pte* first = vmf.Pte - idx;
        Pte firstPte = PgTable.Get(first);
        if (!firstPte.Present || firstPte.Pfn != headPfn) return false;
        // folio_pte_batch: consecutive PFNs, the same bits but for dirty and young (write counts).
        if (FolioPteBatch(first, firstPte, headPfn + (ulong)nr, nr, FpbFlags.RespectWrite) != nr) return false;
        if (Folio.Mapcount(head) != nr) return false;
        // The RFC's bounds (refcount <= nr + 2, then <= nr + swapcache) reduce to <= nr without swap.
        if (Volatile.Read(ref head->RefCount) > nr) return false;
        if (!Rmap.FolioTryLock(head)) return false;
        bool ok = Volatile.Read(ref head->RefCount) == nr && !Folio.MaybeMappedShared(head);
        if (ok)
        {
            for (int i = 0; i < nr; i++)
            {
                Page* p = head + i;
                if (!p->TestFlag(PG.AnonExclusive)) p->SetFlagAtomic(PG.AnonExclusive);
                Pte entry = PgTable.Get(first + i).MkYoung().MkDirty();
                if ((vmf.Vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkWrite();
                PtepSetAccessFlags(first + i, entry, true);
            }
        }
        Rmap.FolioUnlock(head);
        if (!ok) return false;
        PgTable.PteUnmapUnlock(ref vmf);
        m.Counters.Add(vmf.Cpu.Id, VmEvent.Pgreuse);
        vmf.Kind = FaultKind.WpReuse;
        vmf.MappedPfn = vmf.OrigPte.Pfn;
        return true;
    }

    /// <summary>wp_page_reuse: make the PTE young, dirty and writable in place; count PGREUSE. Entered with the PTL held; releases it.</summary>
    private static void WpPageReuse(ref VmFault vmf)
    {
        Bug.On((vmf.Flags & FaultFlags.Write) == 0, "wp_page_reuse without FAULT_FLAG_WRITE");
        Pte entry = vmf.OrigPte.MkYoung().MkDirty();
        if ((vmf.Vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkWrite(); // maybe_mkwrite
        PtepSetAccessFlags(vmf.Pte, entry, true);
        PgTable.PteUnmapUnlock(ref vmf);
        vmf.Mm.Machine.Counters.Add(vmf.Cpu.Id, VmEvent.Pgreuse);
        vmf.Kind = FaultKind.WpReuse;
        vmf.MappedPfn = entry.Pfn;
    }

    /// <summary>
    /// wp_page_copy: a private copy (zeroed for the zero page). Entered without the PTL, with a reference
    /// on the old folio (do_wp_page's folio_get); takes the PTL to switch the entry and returns without it.
    /// </summary>
    private static VmFaultT WpPageCopy(ref VmFault vmf, ulong oldPfn)
    {
        MmStruct mm = vmf.Mm;
        Machine m = mm.Machine;
        Vma vma = vmf.Vma;
        AnonVma anonVma = vma.AnonVma ?? AnonVmaPrepare(vma);
        ulong newPfn = m.Allocator.AllocPages(vmf.Cpu.Id, 0, oldPfn == 0 ? Gfp.Zero : Gfp.None);
        if (newPfn == 0)
        {
            if (oldPfn != 0) Rmap.FolioPut(vmf.Cpu, m, oldPfn);
            return VmFaultT.Oom;
        }
        if (oldPfn != 0) m.Memory.CopyFrame(newPfn, oldPfn);
        Page* newPage = m.Vmemmap.PfnToPage(newPfn);
        newPage->SetFlag(PG.Uptodate);

        bool copied = false;
        if (PgTable.PteOffsetMapLock(ref vmf, vmf.Address) && PgTable.Get(vmf.Pte) == vmf.OrigPte)
        {
            if (oldPfn == 0) mm.AddMmCounter(vmf.Cpu.Id, MmCounter.AnonPages, 1);
            Pte entry = Pte.PfnPte(newPfn, vma.VmPageProt);
            if ((vmf.Flags & FaultFlags.Unshare) != 0)
            {
                if (vmf.OrigPte.SoftDirty) entry = entry.MkSoftDirty();
                if (vmf.OrigPte.UffdWp) entry = entry.MkUffdWp();
            }
            else
            {
                entry = entry.MkDirty();
                if ((vma.VmFlags & VmFlags.Write) != 0) entry = entry.MkWrite();
            }
            // ptep_clear_flush: no CPU may keep writing the old page once the new one is visible.
            PgTable.GetAndClear(vmf.Pte);
            TlbFlush.FlushPage(vmf.Cpu, mm, vmf.Address);
            Rmap.FolioAddNewAnonRmap(vmf.Cpu, m, newPage, vma, anonVma, vmf.Address);
            PgTable.Set(vmf.Pte, entry);
            // folio_remove_rmap_pte only now, after the flush and the new entry's store: until the old
            // entry is gone from every TLB the old page is still mapped (a CPU may still write through a
            // stale translation), so its mapcount may not yet drop to where reuse or freeing could see it
            // unmapped. The PTL orders this against any other mapper of this entry.
            if (oldPfn != 0) Rmap.FolioRemoveRmapPte(vmf.Cpu, m, oldPfn, mm);
            copied = true;
            vmf.Kind = FaultKind.WpCopy;
            vmf.MappedPfn = newPfn;
        }
        if (vmf.Ptl != null) PgTable.PteUnmapUnlock(ref vmf);
        // "Free the old page": once copied, the old page loses the reference its PTE held; either way
        // the reference do_wp_page took for the copy goes too.
        if (!copied) Rmap.FolioPut(vmf.Cpu, m, newPfn);
        else if (oldPfn != 0) Rmap.FolioPut(vmf.Cpu, m, oldPfn);
        if (oldPfn != 0) Rmap.FolioPut(vmf.Cpu, m, oldPfn);
        return VmFaultT.None;
    }
}
