using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>The per-mm RSS counters (enum of include/linux/mm_types_task.h).</summary>
public enum MmCounter
{
    FilePages = 0,
    AnonPages = 1,
    SwapEnts = 2,
    ShmemPages = 3,
}

/// <summary>
/// mm_struct: an address space. The PGD and the mm_cpumask live in <see cref="MmContext"/> (what the
/// MMU sees); the VMA tree, the counters and the locks live here.
/// </summary>
public sealed unsafe partial class MmStruct : MmContext, IDisposable
{
    private const int RssStride = 8; // longs: one 64-byte row per CPU
    private readonly long* _rss;
    // mm->page_table_lock guards the PUD and higher levels; own cache line.
    private readonly int* _pageTableLock;
    // mm->pgtables_bytes: atomic, as mm_inc_nr_ptes and friends update it.
    private long _pgtablesBytes;

    public MmStruct(Machine machine)
    {
        Machine = machine;
        Paging = machine.Paging;
        MmapLock = new MmapLock(machine.Config.Cpus);
        _rss = (long*)NativeMemory.AlignedAlloc((nuint)(machine.Config.Cpus * RssStride * sizeof(long)), 64);
        NativeMemory.Clear(_rss, (nuint)(machine.Config.Cpus * RssStride * sizeof(long)));
        _pageTableLock = (int*)NativeMemory.AlignedAlloc(64, 64);
        *_pageTableLock = 0;
        TaskSize = Geometry.DefaultMapWindow;
        MmapBase = MmapLayout.MmapBase(TaskSize);
        using CpuScope scope = machine.EnterCpu();
        PgdPfn = PgTable.PgdAlloc(scope.Cpu, machine);
        if (PgdPfn == 0) throw new OutOfMemoryException("pgd_alloc: the emulated machine is out of memory");
    }

    public Machine Machine { get; }
    public PagingMode Paging { get; }
    /// <summary>mm->mm_id (CONFIG_MM_ID): the owner id large folios record per mapping mm; 1..2^31-1.</summary>
    public uint MmId { get; } = (uint)(Interlocked.Increment(ref s_nextMmId) & 0x7fff_ffff) is var id && id != 0 ? id : 1;
    private static long s_nextMmId;
    /// <summary>MMF_HAS_PINNED: pin_user_pages has pinned a page of this mm at least once.</summary>
    public bool HasPinned { get; internal set; }
    /// <summary>MMF_COW_PTE_READY: prctl(PR_SET_COW_PTE) asked for copy-on-write PTE tables at the next fork. Under mmap_lock for write.</summary>
    public bool CowPteReady { get; internal set; }
    /// <summary>MMF_COW_PTE: fork shares this mm's PTE tables (set by the first fork after PR_SET_COW_PTE, inherited by the child). Under mmap_lock for write.</summary>
    public bool CowPte { get; internal set; }
    /// <summary>mm->context.pkey_allocation_map: the protection keys in use (key 0 always). Under mmap_lock for write.</summary>
    internal ushort PkeyAllocationMap = 1;
    /// <summary>mm->context.execute_only_pkey: -1 until a PROT_EXEC-only mapping needs one. Under mmap_lock for write.</summary>
    internal int ExecuteOnlyPkey = -1;
    /// <summary>MMF_HUGE_ZERO_PAGE: this mm holds a reference on the huge zero folio.</summary>
    internal bool HugeZeroPage;
    /// <summary>mmap_lock.</summary>
    public MmapLock MmapLock { get; }
    /// <summary>The VMAs, under mmap_lock.</summary>
    public VmaTree Vmas { get; } = new();
    /// <summary>TASK_SIZE for this mm.</summary>
    public ulong TaskSize { get; }
    /// <summary>mm->mmap_base: where top-down placement starts.</summary>
    public ulong MmapBase { get; }
    /// <summary>Bumped under mmap_lock for write whenever the VMA set changes; validates per-CPU VMA caches.</summary>
    internal long VmaSeq;
    /// <summary>total_vm in pages (VmSize), under mmap_lock for write.</summary>
    public long TotalVm { get; internal set; }
    /// <summary>hiwater_vm (VmPeak).</summary>
    public long HiwaterVm { get; internal set; }
    /// <summary>hiwater_rss (VmHWM), updated by update_hiwater_rss.</summary>
    public long HiwaterRss { get; private set; }

    internal int* PageTableLock => _pageTableLock;

    /// <summary>mm_pgtables_bytes: what VmPTE reports.</summary>
    public long PgtablesBytes => Volatile.Read(ref _pgtablesBytes);

    /// <summary>mm_inc_nr_ptes / mm_inc_nr_pmds / mm_inc_nr_puds: one table's worth of entries.</summary>
    internal void AddPgtablesBytes(long delta) => Interlocked.Add(ref _pgtablesBytes, delta);

    // ---- PMDs cleared by a page-table reclaim whose TLB flush is still to come (x86 PT reclaim, 2024) -
    //
    // A reclaim registers the 2 MiB range under the PMD lock as it clears the PMD, and unregisters it
    // once its flush is done; installing a table or huge PMD (under the same lock) flushes first only
    // when its own range is registered. Each registration holds a slot (start + 1) or, when all are
    // taken, counts as an overflow that makes every range look pending until it goes.

    private readonly long[] _reclaimSlots = new long[8];
    private int _reclaimPending, _reclaimOverflow;

    internal void NoteReclaimedPmd(ulong start)
    {
        Interlocked.Increment(ref _reclaimPending);
        long tag = (long)start + 1;
        for (int i = 0; i < _reclaimSlots.Length; i++)
            if (Interlocked.CompareExchange(ref _reclaimSlots[i], tag, 0) == 0) return;
        Interlocked.Increment(ref _reclaimOverflow);
    }

    internal void ReclaimedPmdFlushed(ulong start)
    {
        long tag = (long)start + 1;
        bool found = false;
        for (int i = 0; i < _reclaimSlots.Length && !found; i++)
            found = Volatile.Read(ref _reclaimSlots[i]) == tag && Interlocked.CompareExchange(ref _reclaimSlots[i], 0, tag) == tag;
        if (!found) Interlocked.Decrement(ref _reclaimOverflow);
        Interlocked.Decrement(ref _reclaimPending);
    }

    /// <summary>Whether a reclaim cleared the PMD of the 2 MiB at start and has not flushed yet. PMD lock held.</summary>
    internal bool ReclaimFlushPending(ulong start)
    {
        if (Volatile.Read(ref _reclaimPending) == 0) return false;
        if (Volatile.Read(ref _reclaimOverflow) != 0) return true;
        long tag = (long)start + 1;
        for (int i = 0; i < _reclaimSlots.Length; i++)
            if (Volatile.Read(ref _reclaimSlots[i]) == tag) return true;
        return false;
    }

    /// <summary>add_mm_counter: a per-CPU delta, summed when read (percpu_counter).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal void AddMmCounter(int cpu, MmCounter member, long value) => _rss[cpu * RssStride + (int)member] += value;

    /// <summary>get_mm_counter (percpu_counter_sum).</summary>
    public long GetMmCounter(MmCounter member)
    {
        if (_disposed) throw new ObjectDisposedException(nameof(MmStruct), "the address space was torn down at exit");
        long total = 0;
        for (int c = 0; c < Machine.Config.Cpus; c++) total += Volatile.Read(ref _rss[c * RssStride + (int)member]);
        return total;
    }

    /// <summary>get_mm_rss: file + anon + shmem pages.</summary>
    public long GetMmRss() => GetMmCounter(MmCounter.FilePages) + GetMmCounter(MmCounter.AnonPages) + GetMmCounter(MmCounter.ShmemPages);

    /// <summary>update_hiwater_rss.</summary>
    internal void UpdateHiwaterRss()
    {
        long rss = GetMmRss();
        if (HiwaterRss < rss) HiwaterRss = rss;
    }

    /// <summary>Marks the address space gone: a CPU that still has it loaded may not walk it again.</summary>
    internal void MarkDead() => Volatile.Write(ref Dead, 1);

    private bool _disposed;

    public void Dispose()
    {
        if (_disposed) return;
        _disposed = true;
        NativeMemory.AlignedFree(_rss);
        NativeMemory.AlignedFree(_pageTableLock);
        MmapLock.Dispose();
    }
}

/// <summary>arch/x86/mm/mmap.c: where the top-down allocator starts.</summary>
public static class MmapLayout
{
    /// <summary>SIZE_128M: the minimum gap left below the stack.</summary>
    public const ulong MinGap = 128UL << 20;

    /// <summary>
    /// mmap_base without randomization: TASK_SIZE minus the stack gap, clamped to at least 128 MiB
    /// (the 8 MiB stack rlimit plus the guard gap is below that), page aligned: 0x7ffff7fff000.
    /// </summary>
    public static ulong MmapBase(ulong taskSize)
    {
        ulong gap = (8UL << 20) + (256UL << Geometry.PageShift); // RLIMIT_STACK + stack_guard_gap
        ulong maxGap = taskSize / 6 * 5;
        if (gap < MinGap) gap = MinGap;
        else if (gap > maxGap) gap = maxGap;
        return Geometry.PageAlign(taskSize - gap);
    }
}
