using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// One emulated x86-64 CPU, run by the thread that attached it. User-mode loads and stores go through
/// its TLB; a miss walks the paging structures as the hardware does (setting Accessed, and Dirty on
/// writes, with a locked read-modify-write); a walk that finds no valid translation raises #PF with the
/// real error code into the kernel, and the access is retried.
/// </summary>
/// <remarks>
/// <para>Shootdown. Another CPU that changes this CPU's translations posts a flush to this CPU's mailbox.
/// The mailbox is drained at the start of every access, so a translation is never used after its flush
/// is posted - except by an access already in flight. The sender therefore waits for the in-flight
/// access to retire: <c>_access</c> is odd while an access (TLB lookup, walk, host memory operation) is
/// in flight. This is the IPI protocol of flush_tlb_mm_range with the interrupt taken at the next
/// instruction boundary; a CPU outside an access (in the kernel, or its thread blocked elsewhere) never
/// holds anyone up, so no CPU can deadlock waiting on one that waits for it.</para>
/// <para>The same odd/even word is the CPU's RCU read-side state for the lockless hardware walk: a CPU
/// with an even count is quiescent.</para>
/// </remarks>
public sealed unsafe partial class Cpu : IDisposable
{
    private const ulong TagValidGens = 0xFFFF;
    private const uint TlbRead = 1;          // translation valid for reads
    private const uint TlbWrite = 2;         // writable at every level and Dirty already set

    private readonly PhysicalMemory _phys;
    private readonly Vmemmap _vmemmap;
    private readonly PagingMode _paging;
    private readonly PerCpuCounters _counters;

    // TLB: direct-mapped arrays in native memory, touched only by the owning thread.
    private TlbEntry* _tlb;
    private readonly ulong _tlbMask;
    private TlbEntry* _tlbHuge;
    private readonly ulong _tlbHugeMask;
    // Words only this CPU writes, on a cache line of their own: CPU objects sit side by side on the
    // managed heap, and a per-access store next to another CPU's fields would bounce the line.
    //   _local[0] TLB generation (tags carry it: a full flush is one increment)
    //   _local[1] paging-structure-cache generation   _local[2] RCU read-side nesting
    //   _local[3] inside the interrupt handler
    private readonly ulong* _local;
    // Paging-structure cache: PMD-level translations (2 MiB region → PTE table), as the PDE cache of
    // x86 keeps them. Its own generation, because INVLPG drops it whole while the TLB loses one page.
    private PscEntry* _psc;
    private const int PscEntries = 32;

    // Per-CPU words shared with other CPUs, each on its own line:
    //   _shared[0]  access sequence (odd = access in flight); written by the owner only
    //   _shared[1]  RCU read-side sequence (odd = inside rcu_read_lock); written by the owner only
    //   _shared[8]  mailbox lock word;  _shared[9] pending flag;  [10] start, [11] end of the merged range
    //   _shared[12] flush requests posted (under the mailbox lock);  _shared[13] requests drained (owner)
    private readonly long* _shared;

    private int _ownerThread;

    internal Cpu(Machine machine, int id)
    {
        Machine = machine;
        Id = id;
        _phys = machine.Memory;
        _vmemmap = machine.Vmemmap;
        _paging = machine.Paging;
        _counters = machine.Counters;
        _tlbMask = (ulong)machine.Config.TlbEntries - 1;
        _tlbHugeMask = (ulong)machine.Config.TlbHugeEntries - 1;
        _tlb = (TlbEntry*)NativeMemory.AlignedAlloc((nuint)(machine.Config.TlbEntries * sizeof(TlbEntry)), 64);
        _tlbHuge = (TlbEntry*)NativeMemory.AlignedAlloc((nuint)(machine.Config.TlbHugeEntries * sizeof(TlbEntry)), 64);
        NativeMemory.Clear(_tlb, (nuint)(machine.Config.TlbEntries * sizeof(TlbEntry)));
        NativeMemory.Clear(_tlbHuge, (nuint)(machine.Config.TlbHugeEntries * sizeof(TlbEntry)));
        _local = (ulong*)NativeMemory.AlignedAlloc(64, 64);
        NativeMemory.Clear(_local, 64);
        _local[0] = 1;
        _local[1] = 1;
        _shared = (long*)NativeMemory.AlignedAlloc(128, 64);
        NativeMemory.Clear(_shared, 128);
        _psc = (PscEntry*)NativeMemory.AlignedAlloc((nuint)(PscEntries * sizeof(PscEntry)), 64);
        NativeMemory.Clear(_psc, (nuint)(PscEntries * sizeof(PscEntry)));
        _checkTlb = machine.Config.DebugVm;
    }

    public Machine Machine { get; }
    /// <summary>smp_processor_id().</summary>
    public int Id { get; }
    /// <summary>The mm whose PGD is in CR3 (loaded_mm).</summary>
    public MmContext? LoadedMm { get; private set; }
    /// <summary>The per-CPU area of the kernel layers above (per_cpu variables).</summary>
    public object? KernelData { get; set; }
    internal Cpu? PreviousOnThread { get; set; }
    internal Action? PreviousInterruptHandler { get; set; }
    /// <summary>This CPU's interrupt entry for waits in kernel code (one delegate, made once).</summary>
    internal Action InterruptHandler => _interruptHandler ??= ServiceInterrupts;
    private Action? _interruptHandler;

    [StructLayout(LayoutKind.Sequential)]
    private struct TlbEntry
    {
        public ulong Tag;      // (vpn << 16) | generation; 0 never matches
        public byte* Host;     // host address of the 4 KiB (or 2 MiB) frame
        public uint Perm;      // TlbRead | TlbWrite
        public uint TablePfn;  // the PTE table the 4 KiB translation came through (for the checker)
        public ulong Pfn;
    }

    [StructLayout(LayoutKind.Sequential)]
    private struct PscEntry
    {
        public ulong Tag;       // (va >> 21 << 16) | psc generation
        public ulong TablePfn;  // the PTE table the PMD entry pointed to
        public uint Writable;   // R/W ANDed over the upper levels
        public uint Pad;
    }

    internal bool TryClaim(int threadId) => Interlocked.CompareExchange(ref _ownerThread, threadId, 0) == 0;

    /// <summary>Releases the CPU: unloads the mm (its translations go with it) and detaches from the thread.</summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _ownerThread) == 0) return;
        SwitchMm(null);
        Machine.DetachCpu(this);
        Volatile.Write(ref _ownerThread, 0);
    }

    internal void Free()
    {
        if (_tlb == null) return;
        NativeMemory.AlignedFree(_tlb);
        NativeMemory.AlignedFree(_tlbHuge);
        NativeMemory.AlignedFree(_shared);
        NativeMemory.AlignedFree(_local);
        NativeMemory.AlignedFree(_psc);
        _tlb = _tlbHuge = null;
        _psc = null;
    }

    /// <summary>switch_mm: load next's PGD into CR3. Without PCID the whole TLB goes.</summary>
    public void SwitchMm(MmContext? next)
    {
        if (ReferenceEquals(LoadedMm, next)) return;
        ulong bit = 1UL << Id;
        if (LoadedMm is { } prev) Interlocked.And(ref prev.CpuMask, ~bit);
        // Join the mask before the first walk: a flusher that misses the bit changed the tables
        // before this locked operation, so the walks below see the change.
        if (next is not null) Interlocked.Or(ref next.CpuMask, bit);
        LoadedMm = next;
        FlushAllLocal();
    }

    // ------------------------------------------------------------------------------------------
    // User-mode accesses
    // ------------------------------------------------------------------------------------------

    /// <summary>A user-mode load of T at address (may cross a page boundary). Throws <see cref="SegmentationFault"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public T Load<T>(ulong address) where T : unmanaged
    {
        ulong off = address & (Geometry.PageSize - 1);
        if (off + (ulong)sizeof(T) <= Geometry.PageSize)
        {
            EnterAccess();
            TlbEntry* e = _tlb + ((address >> Geometry.PageShift) & _tlbMask);
            if (e->Tag == (((address >> Geometry.PageShift) << 16) | _local[0]))
            {
                T v = Unsafe.ReadUnaligned<T>(e->Host + off);
                ExitAccess();
                return v;
            }
            ExitAccess();
        }
        T value;
        AccessSlow(address, (byte*)&value, sizeof(T), write: false, throwOnFault: true);
        return value;
    }

    /// <summary>A user-mode store of T at address (may cross a page boundary). Throws <see cref="SegmentationFault"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Store<T>(ulong address, T value) where T : unmanaged
    {
        ulong off = address & (Geometry.PageSize - 1);
        if (off + (ulong)sizeof(T) <= Geometry.PageSize)
        {
            EnterAccess();
            TlbEntry* e = _tlb + ((address >> Geometry.PageShift) & _tlbMask);
            if (e->Tag == (((address >> Geometry.PageShift) << 16) | _local[0]) && (e->Perm & TlbWrite) != 0)
            {
                Unsafe.WriteUnaligned(e->Host + off, value);
                ExitAccess();
                return;
            }
            ExitAccess();
        }
        AccessSlow(address, (byte*)&value, sizeof(T), write: true, throwOnFault: true);
    }

    /// <summary>A load that reports a fault instead of throwing.</summary>
    public FaultResult TryLoad<T>(ulong address, out T value) where T : unmanaged
    {
        T v = default;
        FaultResult r = AccessSlow(address, (byte*)&v, sizeof(T), write: false, throwOnFault: false);
        value = v;
        return r;
    }

    /// <summary>A store that reports a fault instead of throwing; on a fault nothing is written.</summary>
    public FaultResult TryStore<T>(ulong address, T value) where T : unmanaged
        => AccessSlow(address, (byte*)&value, sizeof(T), write: true, throwOnFault: false);

    /// <summary>Reads bytes from user memory, page by page (a fault part-way leaves the earlier pages read).</summary>
    public void Read(ulong address, Span<byte> destination)
    {
        fixed (byte* p = destination) AccessSlow(address, p, destination.Length, write: false, throwOnFault: true);
    }

    /// <summary>Writes bytes to user memory, page by page (a fault part-way leaves the earlier pages written).</summary>
    public void Write(ulong address, ReadOnlySpan<byte> source)
    {
        fixed (byte* p = source) AccessSlow(address, p, source.Length, write: true, throwOnFault: true);
    }

    /// <summary>
    /// The general access: each page is translated (faulting as needed) and copied. A scalar that crosses
    /// a page boundary is translated on both pages before any byte moves, as the CPU does.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private FaultResult AccessSlow(ulong address, byte* buffer, int length, bool write, bool throwOnFault)
    {
        int done = 0;
        bool scalar = length <= 16;
        while (done < length)
        {
            ulong va = address + (ulong)done;
            int chunk = (int)Math.Min((ulong)(length - done), Geometry.PageSize - (va & (Geometry.PageSize - 1)));
            if (scalar && chunk < length - done)
            {
                // A scalar crossing into the next page: both translations must be valid together.
                FaultResult r = CrossPageScalar(va, buffer + done, length - done, chunk, write, out ulong cr2);
                if (r != FaultResult.Retry) return Fail(cr2, r, throwOnFault);
                return FaultResult.Retry;
            }
            FaultResult res = CopyOnePage(va, buffer + done, chunk, write);
            if (res != FaultResult.Retry) return Fail(va, res, throwOnFault);
            done += chunk;
        }
        return FaultResult.Retry;
    }

    private static FaultResult Fail(ulong va, FaultResult r, bool throwOnFault)
        => throwOnFault ? throw new SegmentationFault(va, r) : r;

    private FaultResult CopyOnePage(ulong va, byte* buffer, int chunk, bool write)
    {
        for (int attempt = 0; ; attempt++)
        {
            EnterAccess();
            byte* host = Translate(va, write, out X86PfError error);
            if (host != null)
            {
                if (write) Buffer.MemoryCopy(buffer, host, chunk, chunk);
                else Buffer.MemoryCopy(host, buffer, chunk, chunk);
                ExitAccess();
                return FaultResult.Retry;
            }
            ExitAccess();
            FaultResult r = RaisePageFault(va, error, attempt);
            if (r != FaultResult.Retry) return r;
        }
    }

    /// <summary>A scalar split across two pages; on a fault, <paramref name="cr2"/> is the address on the page that faulted.</summary>
    private FaultResult CrossPageScalar(ulong va, byte* buffer, int length, int first, bool write, out ulong cr2)
    {
        cr2 = va;
        ulong second = va + (ulong)first;
        for (int attempt = 0; ; attempt++)
        {
            EnterAccess();
            byte* h1 = Translate(va, write, out X86PfError e1);
            byte* h2 = h1 == null ? null : Translate(second, write, out e1);
            if (h1 != null && h2 != null)
            {
                if (write)
                {
                    Buffer.MemoryCopy(buffer, h1, first, first);
                    Buffer.MemoryCopy(buffer + first, h2, length - first, length - first);
                }
                else
                {
                    Buffer.MemoryCopy(h1, buffer, first, first);
                    Buffer.MemoryCopy(h2, buffer + first, length - first, length - first);
                }
                ExitAccess();
                return FaultResult.Retry;
            }
            ExitAccess();
            cr2 = h1 == null ? va : second;
            FaultResult r = RaisePageFault(cr2, e1, attempt);
            if (r != FaultResult.Retry) return r;
        }
    }

    /// <summary>
    /// Delivers #PF to the kernel. A fault that never resolves is a kernel bug, not a hang. As the SDM
    /// requires (4.10.4.1), the CPU first drops the TLB entry and the paging-structure-cache entry it
    /// used for the faulting address, so the retry walks the tables afresh.
    /// </summary>
    private FaultResult RaisePageFault(ulong address, X86PfError error, int attempt)
    {
        FlushOneLocal(address);
        ulong hpn = address >> Geometry.PmdShift;
        PscEntry* psc = _psc + (hpn & (PscEntries - 1));
        if ((psc->Tag >> 16) == hpn) psc->Tag = 0;
        Bug.On(attempt > 10_000, "page fault at {0:x} (error {1}) retried 10000 times without progress", address, error);
        IPageFaultHandler handler = Machine.FaultHandler ?? throw new InvalidOperationException("no page-fault handler is installed");
        return handler.HandleUserFault(this, address, error | X86PfError.User);
    }

    // ------------------------------------------------------------------------------------------
    // Translation: TLB, then the hardware walk
    // ------------------------------------------------------------------------------------------

    /// <summary>Translates a user address for a read or write; null with the #PF error code when the walk fails.</summary>
    private byte* Translate(ulong va, bool write, out X86PfError error)
    {
        ulong vpn = va >> Geometry.PageShift;
        error = X86PfError.None;
        uint need = write ? TlbWrite : TlbRead;
        TlbEntry* e = _tlb + (vpn & _tlbMask);
        if (e->Tag == ((vpn << 16) | _local[0]) && (e->Perm & need) != 0)
            return e->Host + (va & (Geometry.PageSize - 1));
        TlbEntry* h = _tlbHuge + ((va >> Geometry.PmdShift) & _tlbHugeMask);
        if (h->Tag == (((va >> Geometry.PmdShift) << 16) | _local[0]) && (h->Perm & need) != 0)
            return h->Host + (va & (Geometry.PmdSize - 1));
        return Walk(va, write, out error);
    }

    /// <summary>
    /// The page walk of the MMU: 4 or 5 levels from CR3, U/S and R/W ANDed across levels, Accessed set
    /// on every entry used and Dirty on the leaf of a write, each with a locked cmpxchg that starts over
    /// when the entry changed under it. Fills the TLB on success.
    /// </summary>
    private byte* Walk(ulong va, bool write, out X86PfError error)
    {
        MmContext? mm = LoadedMm;
        if (mm is null || mm.IsDead) ThrowNoMm();
        error = write ? X86PfError.Write : X86PfError.None;
        if (!IsCanonicalUser(va)) { error |= X86PfError.Prot; return null; }
    restart:
        bool writable = true;
        ulong* table;
        ulong* slot;
        ulong entry;
        ulong hpn = va >> Geometry.PmdShift;
        PscEntry* psc = _psc + (hpn & (PscEntries - 1));
        if (psc->Tag == ((hpn << 16) | _local[1]))
        {
            // The paging-structure cache skips the upper levels, as the hardware's PDE cache does.
            writable = psc->Writable != 0;
            table = (ulong*)_phys.FrameAddress(psc->TablePfn);
            slot = table + Geometry.PteIndex(va);
            goto leaf;
        }
        table = (ulong*)_phys.FrameAddress(mm!.PgdPfn);
        slot = table + _paging.PgdIndex(va);
        if (_paging.L5Enabled)
        {
            if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
            if (RejectTable(entry, ref error)) return null;
            table = (ulong*)_phys.FrameAddress(new Pgd(entry).Pfn);
            slot = table + Geometry.P4dIndex(va);
        }
        if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
        if (RejectTable(entry, ref error)) return null;
        table = (ulong*)_phys.FrameAddress(new P4d(entry).Pfn);
        slot = table + Geometry.PudIndex(va);
        if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
        if ((entry & PageTableBits.Pse) != 0) { error |= X86PfError.Rsvd | X86PfError.Prot; return null; } // no 1 GiB user leaves
        if (RejectTable(entry, ref error)) return null;
        table = (ulong*)_phys.FrameAddress(new Pud(entry).Pfn);
        slot = table + Geometry.PmdIndex(va);
        if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
        if ((entry & PageTableBits.Pse) != 0)
        {
            // 2 MiB leaf: bits 13..20 are reserved.
            if ((entry & (Geometry.PmdSize - 1) & ~(Geometry.PageSize - 1) & ~PageTableBits.PatLarge) != 0)
            { error |= X86PfError.Rsvd | X86PfError.Prot; return null; }
            if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
            if (!SetLeafAccessDirty(slot, ref entry, write)) goto restart;
            ulong pfn2m = new Pmd(entry).Pfn;
            byte* base2m = _phys.FrameAddress(pfn2m);
            if (_checkTlb) CheckTlbFill2M(va);
            TlbEntry* h = _tlbHuge + ((va >> Geometry.PmdShift) & _tlbHugeMask);
            h->Tag = ((va >> Geometry.PmdShift) << 16) | _local[0];
            h->Host = base2m;
            h->Pfn = pfn2m;
            h->Perm = TlbRead | (writable && (entry & PageTableBits.Rw) != 0 && (entry & PageTableBits.Dirty) != 0 ? TlbWrite : 0);
            return base2m + (va & (Geometry.PmdSize - 1));
        }
        if (RejectTable(entry, ref error)) return null;
        ulong ptePfn = new Pmd(entry).Pfn;
        if (_checkTlb) CheckPscFill(hpn, ptePfn);
        psc->Tag = (hpn << 16) | _local[1];
        psc->TablePfn = ptePfn;
        psc->Writable = writable ? 1u : 0u;
        table = (ulong*)_phys.FrameAddress(ptePfn);
        slot = table + Geometry.PteIndex(va);
    leaf:
        entry = Volatile.Read(ref *slot);
        if (_checkTlb && entry == FreedTablePoison) TableReadAfterFree(va, slot);
        if ((entry & PageTableBits.Present) == 0) return NotPresent(ref error, entry);
        if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
        if (!SetLeafAccessDirty(slot, ref entry, write)) goto restart;
        ulong pfn = (entry & PageTableBits.PtePfnMask) >> Geometry.PageShift;
        Bug.On(pfn >= _phys.Frames, "PTE {0:x16} for {1:x} points beyond physical memory", entry, va);
        byte* host = _phys.FrameAddress(pfn);
        uint tablePfn = (uint)(((byte*)slot - _phys.Base) >> Geometry.PageShift);
        if (_checkTlb) CheckTlbFill4K(va, tablePfn);
        TlbEntry* e = _tlb + ((va >> Geometry.PageShift) & _tlbMask);
        e->Tag = ((va >> Geometry.PageShift) << 16) | _local[0];
        e->Host = host;
        e->Pfn = pfn;
        e->TablePfn = tablePfn;
        e->Perm = TlbRead | (writable && (entry & PageTableBits.Rw) != 0 && (entry & PageTableBits.Dirty) != 0 ? TlbWrite : 0);
        return host + (va & (Geometry.PageSize - 1));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNoMm() => throw new InvalidOperationException(
        LoadedMm is null ? $"CPU {Id} has no mm loaded (Process.Enter)" : $"CPU {Id} runs an mm that has exited");

    private bool IsCanonicalUser(ulong va) => va <= _paging.TaskSizeMax + Geometry.PageSize - 1;

    /// <summary>Reads a non-leaf entry, sets its Accessed bit if clear, and folds its R/W and U/S into the walk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool WalkTableEntry(ulong* slot, ref bool writable, out ulong entry)
    {
        entry = Volatile.Read(ref *slot);
        if ((entry & PageTableBits.Present) == 0) return false;
        if ((entry & PageTableBits.Accessed) == 0)
            entry = Interlocked.Or(ref *slot, PageTableBits.Accessed) | PageTableBits.Accessed;
        writable &= (entry & PageTableBits.Rw) != 0;
        return true;
    }

    /// <summary>A non-leaf entry must be a user table pointing inside physical memory.</summary>
    private bool RejectTable(ulong entry, ref X86PfError error)
    {
        if ((entry & PageTableBits.User) == 0) { error |= X86PfError.Prot; return true; }
        Bug.On(((entry & PageTableBits.PtePfnMask) >> Geometry.PageShift) >= _phys.Frames, "paging-structure entry {0:x16} points beyond physical memory", entry);
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool LeafPermits(ulong entry, bool writable, bool write)
        => (entry & PageTableBits.User) != 0 && (!write || (writable && (entry & PageTableBits.Rw) != 0));

    /// <summary>The locked A/D update; false when the entry changed under the walk (start over).</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SetLeafAccessDirty(ulong* slot, ref ulong entry, bool write)
    {
        ulong want = entry | PageTableBits.Accessed | (write ? PageTableBits.Dirty : 0);
        if (want == entry) return true;
        if (Interlocked.CompareExchange(ref *slot, want, entry) != entry) return false;
        entry = want;
        return true;
    }

    private static byte* NotPresent(ref X86PfError error, ulong entry) => null;

    // ------------------------------------------------------------------------------------------
    // Access boundaries and the shootdown mailbox
    // ------------------------------------------------------------------------------------------

    /// <summary>
    /// Start of an access: odd sequence, then drain the mailbox. No fence here: the store may still sit
    /// in this CPU's store buffer when the mailbox is read, so a flusher first posts, then runs a
    /// process-wide barrier (membarrier), which drains every CPU's store buffer, then reads the sequence.
    /// Either the flusher sees the odd sequence and waits, or this CPU's read sees the posted flush.
    /// Volatile accesses are not reordered with each other by the JIT, only by the hardware, which is
    /// what the barrier covers (the runtime's own GC suspension relies on the same pairing).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EnterAccess()
    {
        Volatile.Write(ref _shared[0], _shared[0] + 1);
        if (Volatile.Read(ref _shared[9]) != 0) DrainMailbox();
    }

    /// <summary>End of an access: even sequence, released after the access's memory operations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ExitAccess() => Volatile.Write(ref _shared[0], _shared[0] + 1);

    /// <summary>
    /// rcu_read_lock for software walkers that read page tables without their lock (pte_offset_map):
    /// a table they can reach is not freed until they leave. Same unfenced protocol as EnterAccess;
    /// the grace period's process-wide barrier supplies the other half.
    /// </summary>
    public void RcuReadLock()
    {
        if (_local[2]++ == 0) Volatile.Write(ref _shared[1], _shared[1] + 1);
    }

    /// <summary>rcu_read_unlock.</summary>
    public void RcuReadUnlock()
    {
        Bug.On(_local[2] == 0, "rcu_read_unlock without rcu_read_lock");
        if (--_local[2] == 0) Volatile.Write(ref _shared[1], _shared[1] + 1);
    }

    internal bool InRcuReadSide => _local[2] != 0;

    /// <summary>The RCU read-side sequence (odd inside a read-side section).</summary>
    internal long RcuSequence => Volatile.Read(ref _shared[1]);

    /// <summary>Whether an access is in flight, and its sequence number.</summary>
    internal long AccessSequence => Volatile.Read(ref _shared[0]);

    /// <summary>
    /// Posts a flush of [start, end) (end == ulong.MaxValue: everything) to this CPU. Called by another CPU;
    /// returns the request number that <see cref="FlushAcked"/> reports once this CPU has drained it.
    /// </summary>
    internal long PostFlush(ulong start, ulong end)
    {
        int* lockWord = (int*)&_shared[8];
        Spin.LockIrqsave(lockWord);
        if (_shared[9] != 0)
        {
            _shared[10] = (long)Math.Min((ulong)_shared[10], start);
            _shared[11] = (long)Math.Max((ulong)_shared[11], end);
        }
        else
        {
            _shared[10] = (long)start;
            _shared[11] = (long)end;
        }
        long request = ++_shared[12];
        Volatile.Write(ref _shared[9], 1);
        Spin.Unlock(lockWord);
        return request;
    }

    /// <summary>
    /// Whether this CPU has drained flush request <paramref name="request"/>. It drains at its next
    /// access boundary (or where its kernel code takes interrupts), so an acknowledged flush also means
    /// any access that was in flight when it was posted has retired.
    /// </summary>
    internal bool FlushAcked(long request) => Volatile.Read(ref _shared[13]) >= request;

    /// <summary>flush_tlb_func on the receiving CPU.</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DrainMailbox()
    {
        int* lockWord = (int*)&_shared[8];
        Spin.LockIrqsave(lockWord);
        ulong start = (ulong)_shared[10], end = (ulong)_shared[11];
        long request = _shared[12];
        Volatile.Write(ref _shared[9], 0);
        Spin.Unlock(lockWord);
        _counters.Add(Id, VmEvent.NrTlbRemoteFlushReceived);
        FlushRangeLocal(start, end, Geometry.PageShift);
        Volatile.Write(ref _shared[13], request); // the acknowledgement, after the flush
    }

    /// <summary>
    /// Takes pending flush IPIs now: called where kernel code runs with interrupts enabled (fault entry,
    /// between zapped tables) and while waiting on other CPUs. Only the owning thread may call it.
    /// </summary>
    public void ServiceInterrupts()
    {
        if (Volatile.Read(ref _shared[9]) == 0 || _local[3] != 0) return;
        _local[3] = 1; // interrupts are off while the handler runs: no nesting
        DrainMailbox();
        _local[3] = 0;
    }

    /// <summary>tlb_single_page_flush_ceiling: above this many pages a range flush becomes a full flush.</summary>
    public const int TlbSinglePageFlushCeiling = 33;

    /// <summary>The local half of flush_tlb_mm_range: INVLPG per page, or a full flush past the ceiling.</summary>
    public void FlushRangeLocal(ulong start, ulong end, int strideShift)
    {
        if (end == ulong.MaxValue || ((end - start) >> strideShift) > TlbSinglePageFlushCeiling)
        {
            FlushAllLocal();
            return;
        }
        ulong stride = 1UL << strideShift;
        for (ulong a = start; a < end; a += stride) FlushOneLocal(a);
        FlushPagingStructureCache();
        _counters.Add(Id, VmEvent.NrTlbLocalFlushOne, (long)((end - start) >> strideShift));
    }

    /// <summary>INVLPG also drops every paging-structure-cache entry (SDM 4.10.4.1); one generation step.</summary>
    public void FlushPagingStructureCache()
    {
        if (++_local[1] > TagValidGens)
        {
            _local[1] = 1;
            NativeMemory.Clear(_psc, (nuint)(PscEntries * sizeof(PscEntry)));
        }
    }

    /// <summary>INVLPG: drops the 4 KiB and 2 MiB translations of one address.</summary>
    public void FlushOneLocal(ulong va)
    {
        ulong vpn = va >> Geometry.PageShift;
        TlbEntry* e = _tlb + (vpn & _tlbMask);
        if ((e->Tag >> 16) == vpn) e->Tag = 0;
        ulong hpn = va >> Geometry.PmdShift;
        TlbEntry* h = _tlbHuge + (hpn & _tlbHugeMask);
        if ((h->Tag >> 16) == hpn) h->Tag = 0;
    }

    /// <summary>A CR3 reload: every translation goes. One generation step; a real clear when the tag wraps.</summary>
    public void FlushAllLocal()
    {
        _counters.Add(Id, VmEvent.NrTlbLocalFlushAll);
        FlushPagingStructureCache();
        if (++_local[0] > TagValidGens)
        {
            _local[0] = 1;
            NativeMemory.Clear(_tlb, (nuint)((_tlbMask + 1) * (ulong)sizeof(TlbEntry)));
            NativeMemory.Clear(_tlbHuge, (nuint)((_tlbHugeMask + 1) * (ulong)sizeof(TlbEntry)));
        }
    }

    /// <summary>Whether this CPU's TLB holds a translation for va (4 KiB or 2 MiB); for tests and checkers.</summary>
    public bool TlbHolds(ulong va, out ulong pfn, out bool huge)
    {
        TlbEntry* e = _tlb + ((va >> Geometry.PageShift) & _tlbMask);
        if (e->Tag == (((va >> Geometry.PageShift) << 16) | _local[0])) { pfn = e->Pfn; huge = false; return true; }
        TlbEntry* h = _tlbHuge + ((va >> Geometry.PmdShift) & _tlbHugeMask);
        if (h->Tag == (((va >> Geometry.PmdShift) << 16) | _local[0])) { pfn = h->Pfn + (ulong)Geometry.PteIndex(va); huge = true; return true; }
        pfn = 0; huge = false;
        return false;
    }

    public override string ToString() => $"cpu{Id}";
}
