using System.Runtime.CompilerServices;
using System.Runtime.Intrinsics.X86;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Copy-on-write PTE tables (On-Demand-Fork; the COW PTE series, RFC v1 to v5, never merged): fork points
/// the child's PMD at the parent's PTE table and write-protects both PMDs, so any change to the table's
/// entries from either side must first break the sharing. A shared table is recognised by its PMD alone:
/// present, not huge, RW clear (<see cref="IsCowTable"/>); pmd_populate always sets RW, so with
/// <see cref="CowPteMode.Off"/> no PMD ever matches and every check is one predictable branch.
/// <para>
/// The share count is the table page's own _refcount (RFC v2 on: 1 from pagetable_alloc, +1 per extra
/// holder at fork, cow_pte_count() = page_count). It falls only under the table's own ptl, which every
/// holder reaches through its PMD, so two breakers of one table cannot both see "still shared" and leave
/// it without a holder; fork raises it without the ptl in Lazy (<see cref="CowPteShare"/> says why).
/// Lock order: the breaker's PMD lock, then the table's ptl (the normal order).
/// </para>
/// <para>
/// Accounting (docs/cow-pte.md has the full rules): the RSS and the pgtables_bytes of a shared table are
/// charged to one holder only, its owner (PtCowOwner, the mm id that fork shared it from), as the series
/// reports the child's VmRSS and VmPTE; an owner that lets go leaves the table uncharged until the next
/// holder to own it alone reuses it. Lazy leaves mapcount, refcount and PageAnonExclusive as they were
/// before fork (the table counts as one mapping, however many mms hold it) and settles them when a copy
/// makes a second table; Eager accounts every mm's mapping at fork, as copy_pte_range would.
/// </para>
/// </summary>
internal static unsafe partial class PgTable
{
    /// <summary>A PMD that points to a PTE table shared copy-on-write: present, not huge, RW clear.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool IsCowTable(Pmd pmd) => (pmd.Value & (PageTableBits.Present | PageTableBits.Rw | PageTableBits.Pse)) == PageTableBits.Present;

    /// <summary>The shared table's entries changed by the holder that breaks or shares it: its checksum is taken again (invariant mode).</summary>
    private const ulong ChecksumIgnored = PageTableBits.Accessed; // the MMU sets A in the shared table from either mm

    /// <summary>
    /// The checksum the invariant mode keeps of a shared table's entries (FNV-1a over the words, the
    /// Accessed bit masked: the MMU of any holder may set it). Never 0, so 0 means "not recorded".
    /// </summary>
    public static ulong TableChecksum(Machine m, ulong table)
    {
        ulong* t = (ulong*)m.Memory.FrameAddress(table);
        ulong h = 14695981039346656037UL;
        for (int i = 0; i < Geometry.PtrsPerTable; i++)
        {
            h ^= Volatile.Read(ref t[i]) & ~ChecksumIgnored;
            h *= 1099511628211UL;
        }
        return h | 1;
    }

    /// <summary>
    /// Invariant mode: whether the shared table still holds what it held when it was shared; otherwise the
    /// violation is recorded, naming <paramref name="who"/> (the walker that just had it mapped, or the
    /// operation that found it changed). Returns false on a mismatch.
    /// </summary>
    public static bool VerifyCowTable(Machine m, ulong table, ulong address, string who)
    {
        ulong want = m.Vmemmap.PfnToPage(table)->PtCowChecksum;
        if (want == 0 || TableChecksum(m, table) == want) return true;
        m.ReportInvariantViolation($"{who} modified the shared PTE table {table:x} (at {address & Geometry.PmdMask:x}) without breaking its copy-on-write sharing");
        m.Vmemmap.PfnToPage(table)->PtCowChecksum = TableChecksum(m, table); // report each change once
        return false;
    }

    /// <summary>In the invariant mode, after a walker's pass over a table it mapped: a table still shared must be unchanged.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void VerifyAfterWalk(Machine m, Pmd* pmd, ulong address, string walker)
    {
        Pmd v = Get(pmd);
        if (IsCowTable(v)) VerifyCowTable(m, v.Pfn, address, walker);
    }

    // ---- Which tables fork may share ----------------------------------------------------------------

    /// <summary>
    /// Whether fork may share the PTE table *srcPmd points to, for the child of srcVma's mm: Lazy needs the
    /// 2 MiB wholly inside srcVma (the paper's rule); Eager needs every VMA across it to be copied as is
    /// (no VM_DONTCOPY, no VM_WIPEONFORK). Both need a table with entries (an empty one costs nothing to
    /// copy, and with pte_refcount a shared table must never fall to zero), no page that may be pinned
    /// (those are copied, recover_pte_range), and in Lazy no large folio (its per-mm mapping owners are
    /// only settled at the break in Eager). Both mms' mmap_lock held for write.
    /// </summary>
    public static bool CowPteShareable(MmStruct src, Vma srcVma, Pmd pmdval, ulong addr, out bool pinned)
    {
        pinned = false;
        Machine m = src.Machine;
        ulong start = addr & Geometry.PmdMask, end = start + Geometry.PmdSize;
        if (m.Config.CowPte == CowPteMode.Lazy)
        {
            if (srcVma.VmStart > start || srcVma.VmEnd < end) return false;
        }
        else
        {
            for (Vma? v = src.Vmas.FindVma(start); v is not null && v.VmStart < end; v = v.Next)
                if ((v.VmFlags & (VmFlags.DontCopy | VmFlags.WipeOnFork)) != 0) return false;
        }
        Pte* t = PteTable(m.Memory, pmdval.Pfn);
        // Without pins in this mm and (for Lazy) without a large anonymous folio anywhere, no page can
        // disqualify the table: only whether it has an entry is left to see.
        if (!src.HasPinned && (m.Config.CowPte == CowPteMode.Eager || !AnyLargeAnonFolio(m)))
        {
            for (int i = 0; i < Geometry.PtrsPerPte; i++)
                if (!Get(t + i).None) return true;
            return false;
        }
        bool any = false;
        for (int i = 0; i < Geometry.PtrsPerPte; i++)
        {
            Pte e = Get(t + i);
            if (e.None) continue;
            any = true;
            if (!e.Present || e.Special || e.Pfn == m.ZeroPfn) continue;
            Page* page = m.Vmemmap.PfnToPage(e.Pfn);
            if (page->IsCompound)
            {
                if (m.Config.CowPte == CowPteMode.Lazy) return false;
                Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, e.Pfn));
                if (src.HasPinned && Folio.MaybeDmaPinned(head) && page->TestFlag(PG.AnonExclusive)) { pinned = true; return false; }
            }
            else if (src.HasPinned && page->TestFlag(PG.AnonExclusive) && Volatile.Read(ref page->RefCount) >= Gup.GupPinCountingBias)
            {
                pinned = true;
                return false;
            }
        }
        return any;
    }

    /// <summary>How many PMD entries ahead of the one being shared fork starts loading a table's lines.</summary>
    public const int CowPtePrefetchDistance = 16;

    /// <summary>
    /// Fork's look-ahead over the parent's PMD table: the two lines sharing the table *pmd points to will
    /// touch first, its first entries (<see cref="CowPteShareable"/>) and its struct page (the count and the
    /// locks, <see cref="CowPteShare"/>), requested <see cref="CowPtePrefetchDistance"/> tables before they
    /// are needed. Each shared table costs little more than those two cache misses, and the locked
    /// instructions between one table and the next would otherwise make them wait one after another.
    /// A hint only: nothing is read into a decision, and an entry that is not a table is skipped.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void PrefetchCowPteShare(Machine m, Pmd* pmd)
    {
        if (!Sse.IsSupported) return;
        Pmd v = Get(pmd);
        if ((v.Value & (PageTableBits.Present | PageTableBits.Pse)) != PageTableBits.Present) return;
        Sse.Prefetch0(m.Memory.FrameAddress(v.Pfn));
        Sse.Prefetch0(m.Vmemmap.PfnToPage(v.Pfn));
    }

    /// <summary>Whether any large anonymous folio is mapped on the machine (the per-size nr_anon counters).</summary>
    private static bool AnyLargeAnonFolio(Machine m)
    {
        for (int order = 2; order <= Thp.PmdOrder; order++)
            if (m.Thp.Stat(order, MthpStat.NrAnon) != 0) return true;
        return false;
    }

    /// <summary>
    /// The COW PTE series' copy_pmd_range for a shareable table: both PMDs write-protected and pointing at
    /// the one table, its count raised; Eager accounts each mapped page for the child here (mapcount,
    /// refcount, PageAnonExclusive cleared, writable entries write-protected, as copy_pte_range does),
    /// Lazy touches no page. The child's RSS and VmPTE do not grow: the table stays charged to its owner.
    /// Both mms' mmap_lock held for write.
    /// </summary>
    /// <remarks>
    /// No PMD lock, as in the series' copy_pmd_range: every other writer of the parent's PMDs holds its
    /// mmap_lock, and nobody can reach the child's yet. The table's ptl only where fork reads or writes the
    /// table's entries or the pages they map (Eager's accounting, the invariant mode's checksum), against
    /// other holders breaking or zapping it. Lazy otherwise only raises the count (pmd_get_pte), which needs
    /// no ptl: the count falls only under it, and while the parent is a holder that cannot let go (its
    /// mmap_lock is held for write) no other holder can find it at 1, whatever the rise races with.
    /// </remarks>
    public static void CowPteShare(Cpu cpu, Vma dstVma, MmStruct src, Pmd* srcPmd, Pmd* dstPmd, ulong addr)
    {
        Machine m = src.Machine;
        Pmd v = Get(srcPmd);
        ulong table = v.Pfn;
        Page* tp = m.Vmemmap.PfnToPage(table);
        bool locked = m.Config.CowPte == CowPteMode.Eager || m.Config.DebugVm;
        if (locked) Spin.Lock(&tp->Ptl);
        bool first = !IsCowTable(v);
        if (!first && m.Config.DebugVm) VerifyCowTable(m, table, addr, "fork");
        if (m.Config.CowPte == CowPteMode.Eager) AccountTableForNewHolder(cpu, m, dstVma, PteTable(m.Memory, table));
        if (first)
        {
            tp->PtCowOwner = src.MmId;
            SetWrprotect(srcPmd); // pmdp_set_wrprotect (keeps an Accessed bit the MMU sets meanwhile); dup_mmap's flush_tlb_mm follows
        }
        Interlocked.Increment(ref tp->RefCount);              // pmd_get_pte
        if (m.Config.PtReclaim == PtReclaimMode.Refcount) Interlocked.Increment(ref tp->PteRefcount); // the new holder is one more pte_refcount holder
        if (m.Config.DebugVm) tp->PtCowChecksum = TableChecksum(m, table);
        if (locked) Spin.Unlock(&tp->Ptl);
        Bug.On(!Get(dstPmd).None, "fork: the child's PMD at {0:x} is already populated", addr);
        Set(dstPmd, new Pmd(v.Value & ~PageTableBits.Rw)); // set_pmd_at(dst, pmd_wrprotect(src))
        m.Counters.Add(cpu.Id, VmEvent.CowPteShare);
    }

    /// <summary>
    /// Eager's accounting of one more mm mapping every page of the table (copy_pte_range without the new
    /// entries): mapcount and refcount up, PageAnonExclusive cleared, writable entries write-protected.
    /// The table's ptl held.
    /// </summary>
    private static void AccountTableForNewHolder(Cpu cpu, Machine m, Vma dstVma, Pte* t)
    {
        for (int i = 0; i < Geometry.PtrsPerPte; i++)
        {
            Pte e = Get(t + i);
            if (!e.Present) continue;
            if (!e.Special && e.Pfn != m.ZeroPfn)
            {
                Page* page = m.Vmemmap.PfnToPage(e.Pfn);
                if (page->IsCompound)
                {
                    Page* head = m.Vmemmap.PfnToPage(Folio.HeadPfn(m, e.Pfn));
                    Interlocked.Increment(ref head->RefCount);
                    Folio.TryDupAnonRmapPtes(m, head, page, 1, dstVma, maybePinned: false);
                }
                else Rmap.SmallFolioDupAnonRmapPte(page);
            }
            if (e.Write) SetWrprotect(t + i);
        }
    }

    /// <summary>Eager's undoing of one mm's mapping of every page of the table (the zap of a holder that only drops its reference). The table's ptl held.</summary>
    private static void UnaccountTableForHolder(Cpu cpu, Machine m, MmStruct mm, Pte* t)
    {
        for (int i = 0; i < Geometry.PtrsPerPte; i++)
        {
            Pte e = Get(t + i);
            if (!e.Present || e.Special || e.Pfn == m.ZeroPfn) continue;
            Rmap.FolioRemoveRmapPte(cpu, m, e.Pfn, mm);
            Rmap.FolioPut(cpu, m, e.Pfn); // never the last reference: the other holders' mappings keep theirs
        }
    }

    /// <summary>The pages a table maps that RSS counts (vm_normal_page != NULL), and its non-none entries.</summary>
    private static int CountTable(Machine m, Pte* t, out int nonNone)
    {
        int rss = 0;
        nonNone = 0;
        for (int i = 0; i < Geometry.PtrsPerPte; i++)
        {
            Pte e = Get(t + i);
            if (e.None) continue;
            nonNone++;
            if (e.Present && !e.Special && e.Pfn != m.ZeroPfn) rss++;
        }
        return rss;
    }

    // ---- Breaking the sharing -------------------------------------------------------------------------

    /// <summary>
    /// The start that a break and a zap of a shared table have in common, under the PMD lock and then the
    /// table's ptl: false when *pmd no longer points at a shared table, or when this mm was its last holder
    /// and reused it (the PMD made writable, <see cref="VmEvent.CowPteBreakReuse"/> counted); both locks are
    /// then dropped. True: the table is still shared by others, and both locks are held.
    /// </summary>
    private static bool LockSharedTable(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, string who,
        out int* pml, out Pmd v, out Page* tp, out Pte* table)
    {
        Machine m = mm.Machine;
        pml = PmdLock(m, pmd);
        v = Get(pmd);
        tp = null;
        table = null;
        if (!IsCowTable(v))
        {
            Spin.Unlock(pml);
            return false;
        }
        tp = m.Vmemmap.PfnToPage(v.Pfn);
        Spin.Lock(&tp->Ptl);
        if (m.Config.DebugVm) VerifyCowTable(m, v.Pfn, address, who);
        table = PteTable(m.Memory, v.Pfn);
        if (Volatile.Read(ref tp->RefCount) != 1) return true;
        ReuseCowTable(cpu, mm, pmd, v, tp, table);
        Spin.Unlock(&tp->Ptl);
        Spin.Unlock(pml);
        m.Counters.Add(cpu.Id, VmEvent.CowPteBreakReuse);
        return false;
    }

    /// <summary>
    /// break_cow_pte / handle_cow_pte_fault: make the table *pmd points to private to mm. At count 1 it is
    /// reused (the PMD made writable, the holder taking the charge if it was not the owner); otherwise the
    /// entries are copied into a new table installed writable and the shared one loses a holder. Lazy
    /// settles the copied pages' accounting here, as copy_pte_range would have at fork. False: the new table
    /// could not be allocated, and nothing changed. No page-table lock on entry or exit; mmap_lock held.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    public static bool BreakCowPte(Cpu cpu, MmStruct mm, Pmd* pmd, ulong address, string who)
    {
        Machine m = mm.Machine;
        Bug.On(m.Config.CowPte == CowPteMode.Off,
            "{0} is about to change entries of the PTE table under the write-protected PMD at {1:x}, and without copy-on-write page tables no table is shared", who, address);
        if (TestHooks.SkipCowPteBreak is { } skip && skip(mm, who)) return true;
        ulong start = address & Geometry.PmdMask;
        // Not shared: another CPU of this mm broke it first; reused: this mm was its last holder.
        if (!LockSharedTable(cpu, mm, pmd, address, who, out int* pml, out Pmd v, out Page* tp, out Pte* src)) return true;
        ulong fresh = AllocTable(cpu, m);
        if (fresh == 0)
        {
            Spin.Unlock(&tp->Ptl);
            Spin.Unlock(pml);
            return false;
        }
        Pte* dst = PteTable(m.Memory, fresh);
        int rss = 0, nonNone = 0;
        bool lazy = m.Config.CowPte == CowPteMode.Lazy;
        for (int i = 0; i < Geometry.PtrsPerPte; i++)
        {
            Pte e = Get(src + i);
            if (e.None) continue;
            nonNone++;
            if (e.Present && !e.Special && e.Pfn != m.ZeroPfn)
            {
                rss++;
                if (lazy)
                {
                    // copy_pte_range's work, deferred from fork: the page is now mapped by two tables.
                    Rmap.SmallFolioDupAnonRmapPte(m.Vmemmap.PfnToPage(e.Pfn));
                    if (e.Write)
                    {
                        SetWrprotect(src + i); // every anonymous mapping here is private: is_cow_mapping
                        e = Get(src + i);
                    }
                }
            }
            Set(dst + i, e);
        }
        if (lazy && m.Config.DebugVm) tp->PtCowChecksum = TableChecksum(m, v.Pfn); // the deferred write-protect is the holders' own change
        if (tp->PtCowOwner == mm.MmId)
        {
            tp->PtCowOwner = 0; // the owner keeps its charge, now for its own table; the shared one is nobody's until reused
        }
        else
        {
            mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, rss);
            mm.AddPgtablesBytes(TableBytes);
        }
        if (m.Config.PtReclaim == PtReclaimMode.Refcount)
        {
            m.Vmemmap.PfnToPage(fresh)->PteRefcount = nonNone;
            Interlocked.Decrement(ref tp->PteRefcount);
        }
        Interlocked.Decrement(ref tp->RefCount);
        Set(pmd, Pmd.MkTable(fresh)); // release: the copied entries before the table that lets the MMU reach them
        Spin.Unlock(&tp->Ptl);
        Spin.Unlock(pml);
        // The old table stays live for its other holders; this mm's CPUs may cache translations and the
        // paging-structure entry through it.
        TlbFlush.FlushMmRange(cpu, mm, start, start + Geometry.PmdSize, Geometry.PageShift, freedTables: true);
        m.Counters.Add(cpu.Id, VmEvent.CowPteBreakCopy);
        return true;
    }

    /// <summary>The table's last holder takes it over: the charge moves to it if it was not the owner, the PMD becomes writable. PMD lock and the table's ptl held.</summary>
    private static void ReuseCowTable(Cpu cpu, MmStruct mm, Pmd* pmd, Pmd v, Page* tp, Pte* t)
    {
        if (tp->PtCowOwner != mm.MmId)
        {
            mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, CountTable(mm.Machine, t, out _));
            mm.AddPgtablesBytes(TableBytes);
        }
        tp->PtCowOwner = 0;
        tp->PtCowChecksum = 0;
        Set(pmd, new Pmd(v.Value | PageTableBits.Rw)); // pmd_mkwrite: only more permissive, no flush needed
    }

    /// <summary>
    /// The zap of a shared table that covers it whole (or of a dying mm): with other holders left, this mm
    /// only drops its reference and clears its PMD (Eager also drops its mappings' accounting); as the last
    /// holder it reuses the table and the ordinary zap follows. True: the reference was dropped, nothing
    /// left to zap here. The caller's gather flushes the range. mmap_lock held; no page-table lock.
    /// </summary>
    public static bool ZapCowPte(Cpu cpu, MmuGather tlb, MmStruct mm, Pmd* pmd, ulong addr)
    {
        Machine m = mm.Machine;
        ulong start = addr & Geometry.PmdMask;
        // Not shared, or reused by this last holder: the ordinary zap follows.
        if (!LockSharedTable(cpu, mm, pmd, addr, "zap", out int* pml, out _, out Page* tp, out Pte* t)) return false;
        if (m.Config.CowPte == CowPteMode.Eager) UnaccountTableForHolder(cpu, m, mm, t);
        if (tp->PtCowOwner == mm.MmId)
        {
            mm.AddMmCounter(cpu.Id, MmCounter.AnonPages, -CountTable(m, t, out _));
            mm.AddPgtablesBytes(-TableBytes);
            tp->PtCowOwner = 0;
        }
        if (m.Config.PtReclaim == PtReclaimMode.Refcount) Interlocked.Decrement(ref tp->PteRefcount);
        Interlocked.Decrement(ref tp->RefCount);
        Set(pmd, default); // pmd_clear: the table is the other holders' now
        Spin.Unlock(&tp->Ptl);
        Spin.Unlock(pml);
        tlb.AdjustRange(start, Geometry.PmdSize);
        tlb.FreedTables = true; // the paging-structure caches may hold this PMD's table
        m.Counters.Add(cpu.Id, VmEvent.CowPteDrop);
        return true;
    }

    /// <summary>
    /// Break every shared table in [start, end) of mm before an operation changes their entries, so that a
    /// failure is ENOMEM before anything changed (the review's second objection). mmap_lock held.
    /// </summary>
    public static bool BreakCowPteRange(Cpu cpu, MmStruct mm, ulong start, ulong end, string who)
    {
        if (mm.Machine.Config.CowPte == CowPteMode.Off || start >= end) return true;
        for (ulong a = start & Geometry.PmdMask; a < end; a += Geometry.PmdSize)
        {
            Pmd* pmd = WalkToPmd(mm, a);
            if (pmd != null && IsCowTable(Get(pmd)) && !BreakCowPte(cpu, mm, pmd, a, who)) return false;
            if (a + Geometry.PmdSize < a) break;
        }
        return true;
    }

    /// <summary>
    /// Break the shared tables an operation over [start, end) would cover only in part: the ones across
    /// its two ends and across every VMA boundary inside it (munmap, MADV_DONTNEED/FREE, whose zap drops a
    /// whole shared table but cannot copy one half-way). mmap_lock held.
    /// </summary>
    public static bool BreakCowPteBoundaries(Cpu cpu, MmStruct mm, ulong start, ulong end, string who)
    {
        if (mm.Machine.Config.CowPte == CowPteMode.Off || start >= end) return true;
        if (!BreakCowPteAt(cpu, mm, start, who) || !BreakCowPteAt(cpu, mm, end, who)) return false;
        for (Vma? v = mm.Vmas.FindVma(start); v is not null && v.VmStart < end; v = v.Next)
        {
            if (v.VmStart > start && !BreakCowPteAt(cpu, mm, v.VmStart, who)) return false;
            if (v.VmEnd < end && !BreakCowPteAt(cpu, mm, v.VmEnd, who)) return false;
        }
        return true;
    }

    private static bool BreakCowPteAt(Cpu cpu, MmStruct mm, ulong address, string who)
    {
        if ((address & ~Geometry.PmdMask) == 0) return true;
        Pmd* pmd = WalkToPmd(mm, address);
        return pmd == null || !IsCowTable(Get(pmd)) || BreakCowPte(cpu, mm, pmd, address, who);
    }
}
