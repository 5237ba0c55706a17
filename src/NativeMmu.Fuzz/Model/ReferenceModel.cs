namespace NativeMmu.Fuzz.Model;

/// <summary>The signal a user access gets: none, SIGSEGV with SEGV_MAPERR, or SIGSEGV with SEGV_ACCERR.</summary>
public enum ModelFault
{
    None,
    MapErr,
    AccErr,
}

/// <summary>What a load or store did: the fault (if any) and the address it reports (si_addr).</summary>
public readonly record struct AccessOutcome(ModelFault Fault, ulong FaultAddress)
{
    public static readonly AccessOutcome Ok = new(ModelFault.None, 0);
    public override string ToString() => Fault switch
    {
        ModelFault.None => "ok",
        ModelFault.MapErr => $"SIGSEGV (SEGV_MAPERR) at {FaultAddress:x}",
        _ => $"SIGSEGV (SEGV_ACCERR) at {FaultAddress:x}",
    };
}

/// <summary>
/// What mmap returns: errno (0 on success) and the address. For a placement the kernel chooses,
/// <see cref="PlacementError"/> says why the address the emulator chose is not one Linux could return.
/// </summary>
public readonly record struct MmapOutcome(int Errno, ulong Address, string? PlacementError = null);

/// <summary>
/// A reference model of the Linux x86-64 system-call surface for private anonymous memory, written from
/// the kernel's rules rather than from the emulator: mmap (hint, MAP_FIXED, MAP_FIXED_NOREPLACE,
/// MAP_POPULATE), munmap, mprotect, madvise, user loads and stores, fork and exit, one
/// <see cref="ModelProcess"/> per process.
/// </summary>
/// <remarks>
/// <para>Modelled configuration: 4-level paging (TASK_SIZE = 2^47 - 4 KiB), vm.mmap_min_addr = 65536
/// and a task without CAP_SYS_RAWIO, THP enabled (for MADV_HUGEPAGE and the 2 MiB placement of
/// anonymous mappings), no KSM, no memory-failure, no swap, no reclaim, no memory pressure (so MADV_FREE discards nothing), a CPU without protection keys
/// (PROT_EXEC alone is readable, PROT_WRITE implies read, as x86 page tables can express no less).</para>
/// <para>Not modelled (the fuzzer does not generate them; a replayed program that uses them fails with
/// category "model"): shared or file mappings, MAP_LOCKED and mlock (so every page is DONTNEED-able),
/// MAP_GROWSDOWN (so no mapping grows; PROT_GROWSDOWN and PROT_GROWSUP are refused), MADV_POPULATE_*, MADV_COLLAPSE, MADV_PAGEOUT of pages MADV_FREE lazily freed, rlimits, overcommit accounting and vm.max_map_count.</para>
/// <para>Top-down placement is implementation-defined: for a mapping the kernel places, the model takes
/// the address the emulator returned and checks that Linux could have returned it: page aligned,
/// inside [mmap_min_addr, TASK_SIZE), free, the hint itself when the hint was usable, and 2 MiB aligned
/// when there was no hint and the length is a multiple of 2 MiB (thp_get_unmapped_area).</para>
/// <para>RSS bounds. RssAnon (MM_ANONPAGES) counts the anonymous frames a process maps. Reads never
/// allocate one (they map the shared zero page); a write fault does, and only DONTNEED, munmap, a
/// MAP_FIXED over the page, and exit take it away (mprotect keeps present pages, fork keeps the parent's).
/// Hence, per process:
/// <c>WrittenPages &lt;= RssAnon &lt;= MaybeResidentPages</c>, where WrittenPages counts the mapped pages a
/// store completed on (or MAP_POPULATE filled writable) since they were last mapped or discarded, and
/// MaybeResidentPages counts those plus the pages a write reached without completing: a store crossing
/// a page boundary faults in its first page before it finds that the second faults, so the first may
/// hold a frame although nothing was written. The bounds assume 4 KiB faults; once a PMD-sized THP has
/// been faulted in (MADV_HUGEPAGE under the default "madvise" mode), any mapped page may be resident
/// as part of a 2 MiB extent, and the upper bound widens to every mapped page.</para>
/// <para>Copy-on-write page tables (CowPteKernel). Fork may share PTE tables; contents, faults and
/// total_vm are as without them, and so is RssAnon but for one rule: the RSS of a shared table is
/// charged to one holder, its owner (docs/cow-pte.md). A child of such a fork may therefore hold tables
/// charged to another mm (or to nobody), and its lower bound counts only the written pages of the 2 MiB
/// extents it wrote to itself: its write breaks a shared table first, and the copy (or the reuse) charges
/// it for every page of the table. The upper bound holds as it is.</para>
/// <para>Faulting accesses. A scalar (at most 16 bytes) is all or nothing: when it crosses into a page
/// that faults, nothing is written and the reported address is the start of that page; when its first
/// page faults, the access's own address. A longer span (Cpu.Read/Cpu.Write) is copied page by page
/// in address order and stops at the first page that faults: earlier pages are read or written, and
/// the reported address is the start of the faulting chunk (the span's own address for the first).</para>
/// </remarks>
public class ReferenceModel
{
    private readonly Dictionary<int, ModelProcess> _processes = [];

    /// <summary>The kernel has copy-on-write page tables (the COW PTE series; KernelConfig.CowPte Lazy or Eager): prctl(PR_SET_COW_PTE) succeeds. Set before the first process.</summary>
    public bool CowPteKernel { get; set; }

    /// <summary>Every process shares its tables at its next fork, as if it had called prctl(PR_SET_COW_PTE) (KernelConfig.CowPteAllProcesses).</summary>
    public bool CowPteAllProcesses { get; set; }

    public ModelProcess CreateProcess(int id)
    {
        if (_processes.ContainsKey(id)) throw new InvalidOperationException($"model: process {id} exists");
        var p = new ModelProcess(id);
        _processes.Add(id, p);
        return p;
    }

    /// <summary>The live process with this id, or null (never created, or exited).</summary>
    public ModelProcess? Process(int id) => _processes.TryGetValue(id, out ModelProcess? p) && !p.Exited ? p : null;

    public IEnumerable<ModelProcess> LiveProcesses => _processes.Values.Where(p => !p.Exited);

    private ModelProcess Live(int id) => Process(id) ?? throw new InvalidOperationException($"model: process {id} is not running");

    // ---------------------------------------------------------------------------------------------
    // mmap
    // ---------------------------------------------------------------------------------------------

    /// <summary>round_hint_to_min: a hint below mmap_min_addr is raised to it; the hint loses its page offset first.</summary>
    public static ulong RoundHintToMin(ulong hint)
    {
        hint &= Linux.PageMask;
        if (hint != 0 && hint < Linux.MmapMinAddr) return Linux.PageAlign(Linux.MmapMinAddr);
        return hint;
    }

    /// <summary>
    /// mmap(addr, len, prot, MAP_PRIVATE | MAP_ANONYMOUS | flags) in process pid. <paramref name="placed"/>
    /// is the address the emulator returned when it succeeded (null when it failed); it is consulted only
    /// for mappings whose address the kernel chooses.
    /// </summary>
    public virtual MmapOutcome Mmap(int pid, ulong addr, ulong len, int prot, int flags, ulong? placed)
    {
        ModelProcess p = Live(pid);
        if ((flags & Linux.MapType) != Linux.MapPrivate || (flags & Linux.MapAnonymous) == 0)
            throw new NotSupportedException("model: only private anonymous mappings are modelled");
        if ((flags & Linux.MapGrowsDown) != 0)
            throw new NotSupportedException("model: MAP_GROWSDOWN is not modelled");

        // ksys_mmap_pgoff: MAP_HUGETLB takes its hstate (2 MiB by default or with MAP_HUGE_2MB; this
        // machine has no other pool a mapping could reserve from) and rounds the length up to a huge page.
        bool hugetlb = (flags & Linux.MapHugeTlb) != 0;
        if (hugetlb)
        {
            int log = (flags >> Linux.MapHugeShift) & Linux.MapHugeMask;
            if (log == 30) return new(Linux.ENOMEM, 0); // the 1 GiB hstate exists, its pool is empty: no reservation
            if (log is not (0 or 21)) return new(Linux.EINVAL, 0); // hstate_sizelog
            len = unchecked(len + Linux.PmdSize - 1) & ~(Linux.PmdSize - 1);
        }
        // do_mmap. Unknown prot bits, PROT_GROWSDOWN and PROT_GROWSUP among them, are ignored
        // (calc_vm_prot_bits takes R, W and X).
        if (len == 0) return new(Linux.EINVAL, 0);
        if ((flags & Linux.MapFixedNoReplace) != 0) flags |= Linux.MapFixed;
        bool isFixed = (flags & Linux.MapFixed) != 0;
        if (!isFixed) addr = RoundHintToMin(addr);
        ulong alen = Linux.PageAlign(len);
        if (alen == 0) return new(Linux.ENOMEM, 0);

        // __get_unmapped_area
        if (alen > Linux.TaskSize) return new(Linux.ENOMEM, 0);
        ulong start;
        if (isFixed)
        {
            if (hugetlb && (addr & (Linux.PmdSize - 1)) != 0) return new(Linux.EINVAL, 0); // prepare_hugepage_range
            start = addr;
        }
        else
        {
            if (hugetlb) addr = unchecked(addr + Linux.PmdSize - 1) & ~(Linux.PmdSize - 1); // hugetlb_get_unmapped_area
            bool hintUsable = addr != 0 && addr <= Linux.TaskSize - alen && p.IsFree(addr, addr + alen);
            if (!hintUsable && !p.HasGap(alen, Linux.MmapMinAddr, Linux.TaskSize)) return new(Linux.ENOMEM, 0);
            if (placed is not { } chosen) return new(0, 0); // success expected; the caller reports the emulator's errno
            string? why = CheckPlacement(p, addr, alen, hintUsable, chosen)
                ?? (hugetlb && (chosen & (Linux.PmdSize - 1)) != 0 ? $"a hugetlb mapping went to {chosen:x}, which is not 2 MiB aligned" : null);
            if (why is not null) return new(0, chosen, why);
            start = chosen;
        }
        if (start > Linux.TaskSize - alen) return new(Linux.ENOMEM, 0);
        if (!Linux.PageAligned(start)) return new(Linux.EINVAL, 0);
        if (start < Linux.MmapMinAddr) return new(Linux.EPERM, 0); // security_mmap_addr → cap_mmap_addr
        ulong end = start + alen;
        if ((flags & Linux.MapFixedNoReplace) != 0 && !p.IsFree(start, end)) return new(Linux.EEXIST, 0);

        // mmap_region: MAP_FIXED replaces whatever was there (its munmap refuses to split a huge page).
        if (SplitsInsideHugePage(p, start) || SplitsInsideHugePage(p, end)) return new(Linux.EINVAL, 0);
        p.Unmap(start, end);
        p.Map(start, end, prot, hugetlb ? PageAttrs.Hugetlb : PageAttrs.None);
        // calc_vm_flag_bits: "_calc_vm_trans(flags, MAP_STACK, VM_NOHUGEPAGE)" (CONFIG_TRANSPARENT_HUGEPAGE).
        if ((flags & Linux.MapStack) != 0) p.ChangeAttrs(start, end, a => a | PageAttrs.NoHugePage);
        bool populate = (flags & (Linux.MapPopulate | Linux.MapNonBlock)) == Linux.MapPopulate;
        if (populate && (prot & Linux.ProtWrite) != 0)
        {
            // __mm_populate of private writable memory write-faults every page.
            for (ulong a = start; a < end; a += Linux.PageSize) p.MarkWritten(a >> Linux.PageShift);
        }
        return new(0, start);
    }

    private static string? CheckPlacement(ModelProcess p, ulong hint, ulong alen, bool hintUsable, ulong chosen)
    {
        if (!Linux.PageAligned(chosen)) return $"address {chosen:x} is not page aligned";
        if (chosen < Linux.MmapMinAddr) return $"address {chosen:x} is below mmap_min_addr";
        if (chosen > Linux.TaskSize - alen) return $"range {chosen:x}+{alen:x} ends above TASK_SIZE";
        if (!p.IsFree(chosen, chosen + alen)) return $"range {chosen:x}-{chosen + alen:x} overlaps a mapping";
        if (hintUsable && chosen != hint) return $"the hint {hint:x} was free but the mapping went to {chosen:x}";
        if (hint == 0 && (alen & (Linux.PmdSize - 1)) == 0 && (chosen & (Linux.PmdSize - 1)) != 0)
            return $"a {alen:x}-byte mapping (a multiple of 2 MiB) without a hint went to {chosen:x}, which is not 2 MiB aligned";
        return null;
    }

    // ---------------------------------------------------------------------------------------------
    // munmap, mprotect, madvise
    // ---------------------------------------------------------------------------------------------

    /// <summary>munmap: EINVAL for an unaligned start, a range beyond TASK_SIZE or a zero length; unmapped parts are fine.</summary>
    public virtual int Munmap(int pid, ulong start, ulong len)
    {
        ModelProcess p = Live(pid);
        if (!Linux.PageAligned(start) || start > Linux.TaskSize || len > Linux.TaskSize - start) return Linux.EINVAL;
        ulong end = start + Linux.PageAlign(len);
        if (end == start) return Linux.EINVAL;
        // hugetlb_vm_op_split: a hugetlb VMA splits only at a huge-page boundary (the split at start, if
        // made, is not observable in the maps, which show maximal runs).
        if (SplitsInsideHugePage(p, start) || SplitsInsideHugePage(p, end)) return Linux.EINVAL;
        p.Unmap(start, end);
        return 0;
    }

    /// <summary>Whether a VMA split at addr falls inside a huge page of a hugetlb mapping.</summary>
    private static bool SplitsInsideHugePage(ModelProcess p, ulong addr)
        => (addr & (Linux.PmdSize - 1)) != 0 && p.RegionAt(addr) is { } r && r.Start < addr && (r.Attrs & PageAttrs.Hugetlb) != 0;

    /// <summary>
    /// mprotect: EINVAL for an unaligned start, 0 for a zero length, ENOMEM when the rounded range wraps,
    /// EINVAL for prot bits beyond R/W/X/SEM; ENOMEM with nothing changed when start is unmapped; else
    /// the mapped run from start changes, and ENOMEM when a hole cut it short of the end.
    /// </summary>
    public virtual int Mprotect(int pid, ulong start, ulong len, int prot)
    {
        ModelProcess p = Live(pid);
        // do_mprotect_pkey: PROT_GROWSDOWN | PROT_GROWSUP together are refused before anything else.
        int grows = prot & (Linux.ProtGrowsDown | Linux.ProtGrowsUp);
        prot &= ~(Linux.ProtGrowsDown | Linux.ProtGrowsUp);
        if (grows == (Linux.ProtGrowsDown | Linux.ProtGrowsUp)) return Linux.EINVAL;
        if (!Linux.PageAligned(start)) return Linux.EINVAL;
        if (len == 0) return 0;
        ulong end = start + Linux.PageAlign(len);
        if (end <= start) return Linux.ENOMEM;
        if ((prot & ~(Linux.ProtAccess | Linux.ProtSem)) != 0) return Linux.EINVAL;
        if (grows != 0)
        {
            // No mapping here grows: PROT_GROWSDOWN needs the first mapping in the range to be
            // VM_GROWSDOWN, PROT_GROWSUP needs VM_GROWSUP (which x86 has not) at start; ENOMEM when
            // there is none to ask.
            if (p.RegionsIn(start, end).Count == 0) return Linux.ENOMEM;
            if (grows == Linux.ProtGrowsUp && p.RegionAt(start) is null) return Linux.ENOMEM;
            return Linux.EINVAL;
        }
        ulong reach = p.MappedReach(start, end);
        if (reach == start) return Linux.ENOMEM;
        // mprotect_fixup splits only a VMA whose flags change; a hugetlb split inside a huge page is
        // EINVAL: at start before anything changed, at end after the VMAs before it changed.
        int newProt = prot & Linux.ProtAccess;
        if (p.RegionAt(start) is { } first && first.Prot != newProt && SplitsInsideHugePage(p, start)) return Linux.EINVAL;
        if (reach == end && p.RegionAt(end) is { } last && last.Start < end && last.Prot != newProt && SplitsInsideHugePage(p, end))
        {
            if (last.Start > start) p.Protect(start, last.Start, prot);
            return Linux.EINVAL;
        }
        p.Protect(start, reach, prot);
        return reach < end ? Linux.ENOMEM : 0;
    }

    /// <summary>
    /// madvise: EINVAL for unknown advice (before anything else), an unaligned start, or a length that
    /// rounds or wraps; 0 for a zero length; then every mapped part of the range gets the advice in
    /// address order (an advice that fails on a part returns its error at once), and ENOMEM at the end
    /// when part of the range was unmapped.
    /// </summary>
    public virtual int Madvise(int pid, ulong start, ulong lenIn, int advice)
    {
        ModelProcess p = Live(pid);
        if (!Linux.AdviceValid(advice)) return Linux.EINVAL;
        if (!Linux.PageAligned(start)) return Linux.EINVAL;
        ulong len = Linux.PageAlign(lenIn);
        if (lenIn != 0 && len == 0) return Linux.EINVAL;
        ulong end = start + len;
        if (end < start) return Linux.EINVAL;
        if (end == start) return 0;

        List<ModelRegion> parts = p.RegionsIn(start, end);
        if (parts.Count == 0) return Linux.ENOMEM;
        ulong covered = 0;
        foreach (ModelRegion r in parts)
        {
            ulong s = Math.Max(r.Start, start), e = Math.Min(r.End, end);
            covered += e - s;
            int err = Advise(p, s, e, advice);
            if (err != 0) return err;
        }
        return covered < end - start ? Linux.ENOMEM : 0;
    }

    /// <summary>
    /// MADV_FREE, MADV_COLD and MADV_PAGEOUT split a THP they cover in part, and the split maps every
    /// subpage whose contents are all zero to the shared zero page (RMP_USE_SHARED_ZEROPAGE): such a page,
    /// in a 2 MiB extent the range reaches, is no longer certain to hold a frame. (Whether it was a THP
    /// is not modelled, so the lower RssAnon bound only loosens.)
    /// </summary>
    private static void SplitThps(ModelProcess p, ulong start, ulong end)
    {
        ulong lo = start & ~(Linux.PmdSize - 1), hi = Math.Min(Linux.PageAlign(end) + Linux.PmdSize - 1, Linux.CanonicalEnd) & ~(Linux.PmdSize - 1);
        if (hi <= lo) return;
        foreach (var (_, pg) in p.PagesIn(lo, hi).ToList())
            if (pg.Data is null || pg.Data.AsSpan().IndexOfAnyExcept((byte)0) < 0) p.Unwritten(pg);
    }

    /// <summary>madvise_vma_behavior for one mapped part [start, end) of an anonymous private mapping.</summary>
    private static int Advise(ModelProcess p, ulong start, ulong end, int advice)
    {
        if (p.RegionAt(start) is { } region && (region.Attrs & PageAttrs.Hugetlb) != 0) return AdviseHugetlb(p, region, start, end, advice);
        switch (advice)
        {
            case Linux.MadvDontNeed:
            case Linux.MadvDontNeedLocked:
                p.DiscardPages(start, end);
                return 0;
            case Linux.MadvRemove:
                return Linux.EINVAL; // madvise_remove: no file behind anonymous memory
            case Linux.MadvWillNeed:
                return 0; // nothing to read ahead
            case Linux.MadvCold:
            case Linux.MadvPageOut:
                // Nothing to age, no swap to page out to. Reclaim would discard a clean lazily freed page:
                // whether the kernel may (is the page still shared with a fork relative, part of a THP?)
                // is not modelled.
                if (advice == Linux.MadvPageOut && p.PagesIn(start, end).Any(x => x.Page.Lazyfree))
                    throw new NotSupportedException("model: MADV_PAGEOUT of lazily freed (MADV_FREE) pages is not modelled");
                SplitThps(p, start, end);
                return 0;
            case Linux.MadvFree:
                // madvise_free_pte_range marks the pages clean and lazily freed but leaves them mapped:
                // only reclaim discards them, and there is none. Contents and RssAnon stay.
                foreach (var (_, pg) in p.PagesIn(start, end)) pg.Lazyfree = true;
                SplitThps(p, start, end);
                return 0;
            case Linux.MadvNormal: Change(~(PageAttrs.SeqRead | PageAttrs.RandRead), 0); return 0;
            case Linux.MadvSequential: Change(~PageAttrs.RandRead, PageAttrs.SeqRead); return 0;
            case Linux.MadvRandom: Change(~PageAttrs.SeqRead, PageAttrs.RandRead); return 0;
            case Linux.MadvDontFork: Change(~PageAttrs.None, PageAttrs.DontFork); return 0;
            case Linux.MadvDoFork: Change(~PageAttrs.DontFork, 0); return 0;
            case Linux.MadvWipeOnFork: Change(~PageAttrs.None, PageAttrs.WipeOnFork); return 0;
            case Linux.MadvKeepOnFork: Change(~PageAttrs.WipeOnFork, 0); return 0;
            case Linux.MadvDontDump: Change(~PageAttrs.None, PageAttrs.DontDump); return 0;
            case Linux.MadvDoDump: Change(~PageAttrs.DontDump, 0); return 0;
            case Linux.MadvHugePage: Change(~PageAttrs.NoHugePage, PageAttrs.HugePage); return 0;
            case Linux.MadvNoHugePage: Change(~PageAttrs.HugePage, PageAttrs.NoHugePage); return 0;
            default:
                // MADV_POPULATE_*, MADV_COLLAPSE: not modelled.
                throw new NotSupportedException($"model: madvise advice {Linux.AdviceName(advice)} is not modelled");
        }

        void Change(PageAttrs keep, PageAttrs set) => p.ChangeAttrs(start, end, a => (a & keep) | set);
    }

    /// <summary>
    /// The advices on a part of a hugetlb mapping (a hugetlbfs file VMA): MADV_DONTNEED needs an aligned
    /// start and frees whole huge pages up to the end rounded down; MADV_FREE, COLD, PAGEOUT, WIPEONFORK
    /// and COLLAPSE are EINVAL, MADV_REMOVE EACCES (private), WILLNEED a no-op; flag changes are refused
    /// (EINVAL) where they would split inside a huge page.
    /// </summary>
    private static int AdviseHugetlb(ModelProcess p, ModelRegion region, ulong start, ulong end, int advice)
    {
        switch (advice)
        {
            case Linux.MadvDontNeed:
            case Linux.MadvDontNeedLocked:
                if ((start & (Linux.PmdSize - 1)) != 0) return Linux.EINVAL;
                end &= ~(Linux.PmdSize - 1);
                if (end > start) p.DiscardPages(start, end);
                return 0;
            case Linux.MadvFree:
            case Linux.MadvCold:
            case Linux.MadvPageOut:
            case Linux.MadvWipeOnFork:
            case Linux.MadvCollapse:
                return Linux.EINVAL;
            case Linux.MadvRemove:
                return Linux.EACCES;
            case Linux.MadvWillNeed:
                return 0;
        }
        PageAttrs before = region.Attrs;
        PageAttrs after = advice switch
        {
            Linux.MadvNormal => before & ~(PageAttrs.SeqRead | PageAttrs.RandRead),
            Linux.MadvSequential => (before & ~PageAttrs.RandRead) | PageAttrs.SeqRead,
            Linux.MadvRandom => (before & ~PageAttrs.SeqRead) | PageAttrs.RandRead,
            Linux.MadvDontFork => before | PageAttrs.DontFork,
            Linux.MadvDoFork => before & ~PageAttrs.DontFork,
            Linux.MadvKeepOnFork => before & ~PageAttrs.WipeOnFork,
            Linux.MadvDontDump => before | PageAttrs.DontDump,
            Linux.MadvDoDump => before & ~PageAttrs.DontDump,
            Linux.MadvHugePage => (before & ~PageAttrs.NoHugePage) | PageAttrs.HugePage,
            Linux.MadvNoHugePage => (before & ~PageAttrs.HugePage) | PageAttrs.NoHugePage,
            _ => throw new NotSupportedException($"model: madvise advice {Linux.AdviceName(advice)} on hugetlb is not modelled"),
        };
        if (after == before) return 0;
        if (start > region.Start && (start & (Linux.PmdSize - 1)) != 0) return Linux.EINVAL;
        if (end < region.End && (end & (Linux.PmdSize - 1)) != 0) return Linux.EINVAL;
        p.ChangeAttrs(start, end, _ => after);
        return 0;
    }

    // ---------------------------------------------------------------------------------------------
    // Loads and stores
    // ---------------------------------------------------------------------------------------------

    /// <summary>What a user access to a page would get from the page-fault handler.</summary>
    private static ModelFault Check(ModelProcess p, ulong address, bool write)
    {
        if (address >= Linux.TaskSize) return ModelFault.MapErr;
        ModelRegion? r = p.RegionAt(address);
        if (r is null) return ModelFault.MapErr;
        if (write) return (r.Prot & Linux.ProtWrite) != 0 ? ModelFault.None : ModelFault.AccErr;
        return (r.Prot & Linux.ProtAccess) != 0 ? ModelFault.None : ModelFault.AccErr;
    }

    /// <summary>
    /// A user access of buffer.Length bytes at address: a load fills buffer, a store takes its bytes from
    /// it. Accesses of at most 16 bytes are scalars (all or nothing), longer ones spans (page by page).
    /// The range must lie below the end of the canonical user half.
    /// </summary>
    public virtual AccessOutcome Access(int pid, ulong address, Span<byte> buffer, bool write)
    {
        ModelProcess p = Live(pid);
        int length = buffer.Length;
        if (length == 0) return AccessOutcome.Ok;
        if (address >= Linux.CanonicalEnd || (ulong)length > Linux.CanonicalEnd - address)
            throw new NotSupportedException("model: accesses beyond the canonical user half are not modelled");
        if (!write) buffer.Clear();

        if (length <= 16)
        {
            int first = (int)Math.Min((ulong)length, Linux.PageSize - (address & (Linux.PageSize - 1)));
            ulong second = address + (ulong)first;
            ModelFault f = Check(p, address, write);
            if (f != ModelFault.None) return new(f, address);
            if (write) p.Touch(address >> Linux.PageShift);
            if (first < length)
            {
                f = Check(p, second, write);
                if (f != ModelFault.None) return new(f, second);
            }
            Copy(p, address, buffer[..first], write);
            if (first < length) Copy(p, second, buffer[first..], write);
            return AccessOutcome.Ok;
        }

        int done = 0;
        while (done < length)
        {
            ulong va = address + (ulong)done;
            int chunk = (int)Math.Min((ulong)(length - done), Linux.PageSize - (va & (Linux.PageSize - 1)));
            ModelFault f = Check(p, va, write);
            if (f != ModelFault.None) return new(f, va);
            Copy(p, va, buffer.Slice(done, chunk), write);
            done += chunk;
        }
        return AccessOutcome.Ok;
    }

    private static void Copy(ModelProcess p, ulong address, Span<byte> bytes, bool write)
    {
        if (write) p.WritePage(address, bytes);
        else p.ReadPage(address, bytes);
    }

    // ---------------------------------------------------------------------------------------------
    // fork, exit, observables
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// fork: the child gets a copy of the parent's address space (see <see cref="ModelProcess.Fork"/>). With
    /// copy-on-write page tables, MMF_COW_PTE_READY (or the all-processes switch) becomes MMF_COW_PTE at
    /// this fork, and the child inherits MMF_COW_PTE; such a fork shares tables, which the contents never
    /// show, only the child's RssAnon (see <see cref="ModelProcess.MayHoldUnchargedTables"/>).
    /// </summary>
    public virtual void Fork(int parent, int child)
    {
        if (_processes.ContainsKey(child)) throw new InvalidOperationException($"model: process {child} exists");
        ModelProcess p = Live(parent);
        if (CowPteKernel && (p.CowPteReady || CowPteAllProcesses))
        {
            p.CowPte = true;
            p.CowPteReady = false;
        }
        ModelProcess c = p.Fork(child);
        c.CowPte = p.CowPte;
        c.MayHoldUnchargedTables = p.CowPte;
        _processes.Add(child, c);
    }

    /// <summary>
    /// prctl(option, arg2, 0, 0, 0). PR_SET_COW_PTE is the series' prctl_set_cow_pte (v5, kernel/sys.c):
    /// EINVAL when the mm already has MMF_COW_PTE, else MMF_COW_PTE_READY is set and 0 returned; it takes
    /// the mm only, so arg2 plays no part. Without copy-on-write page tables the option does not exist, and
    /// an unknown option is EINVAL (the switch's default).
    /// </summary>
    public virtual int Prctl(int pid, int option, ulong arg2)
    {
        ModelProcess p = Live(pid);
        if (option != Linux.PrSetCowPte || !CowPteKernel) return Linux.EINVAL;
        if (p.CowPte) return Linux.EINVAL;
        p.CowPteReady = true;
        return 0;
    }

    public virtual void Exit(int pid) => Live(pid).Exit();

    /// <summary>The bounds RssAnon must lie within (see the remarks on the class).</summary>
    public (long Min, long Max) RssBounds(int pid)
    {
        ModelProcess p = Live(pid);
        return (p.RssLowerBound, p.MaybeResidentPages);
    }
}
