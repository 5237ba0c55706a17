using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Physical;

namespace NativeMmu.Cpus;

/// <summary>
/// One emulated x86-64 CPU, run by the thread that attached it. User-mode loads and stores go through
/// its TLB; a miss walks the paging structures as the hardware does (setting Accessed, and Dirty on
/// writes, with a locked read-modify-write); a walk that finds no valid translation raises #PF with the
/// real error code into the kernel, and the access is retried.
/// </summary>
/// <remarks>
/// <para>The parts, one file each: this file (attach, CR3, the user-mode access entry points), Tlb.cs
/// (the TLB and the paging-structure cache, INVLPG and CR3 flushes), PageWalker.cs (the hardware walk,
/// its A/D updates and the #PF it raises), Ipi.cs (the access boundaries and the flush mailbox other
/// CPUs post to), RcuReadSide.cs (rcu_read_lock for kernel code), CpuChecks.cs (the invariant mode's
/// TLB checks). They are one class, so the access fast path reaches every word with no indirection.</para>
/// <para>Shootdown. Another CPU that changes this CPU's translations posts a flush to this CPU's mailbox.
/// The mailbox is drained at the start of every access, so a translation is never used after its flush
/// is posted - except by an access already in flight. The sender therefore waits for the in-flight
/// access to retire: the access sequence is odd while an access (TLB lookup, walk, host memory
/// operation) is in flight. This is the IPI protocol of flush_tlb_mm_range with the interrupt taken at
/// the next instruction boundary; a CPU outside an access (in the kernel, or its thread blocked
/// elsewhere) never holds anyone up, so no CPU can deadlock waiting on one that waits for it.</para>
/// <para>The same odd/even word is the CPU's RCU read-side state for the lockless hardware walk: a CPU
/// with an even count is quiescent.</para>
/// </remarks>
public sealed unsafe partial class Cpu : IDisposable
{
    private readonly PhysicalMemory _phys;
    private readonly Vmemmap _vmemmap;
    private readonly PagingMode _paging;
    private readonly PerCpuCounters _counters;
    // What the walk reads per level, copied out of the platform once: the arena's base and size, the
    // paging mode's PGD shift and level count, the top of the user half.
    private readonly byte* _physBase;
    private readonly ulong _physBytes;
    private readonly int _pgdirShift;
    private readonly bool _l5;
    private readonly ulong _userVaLast;
    /// <summary>CR4.PKE: the walk checks user data accesses against <see cref="Pkru"/>.</summary>
    private readonly bool _pku;

    /// <summary>
    /// init_pkru_value: every key but 0 access-disabled (PKRU_AD_KEY(1) | ... | PKRU_AD_KEY(15)), the
    /// value a task starts with, so that memory under a key it did not ask for stays out of its reach.
    /// </summary>
    public const uint InitPkruValue = 0x55555554;

    /// <summary>
    /// PKRU, the task's protection-key rights: two bits per key, AD (bit 2k) denies every data access to
    /// pages of key k and WD (bit 2k+1) denies writes. read_pkru() is 0 without OSPKE.
    /// </summary>
    public uint Pkru { get; }

    /// <summary>CR4.PKE: protection keys are on (X86_FEATURE_OSPKE).</summary>
    public bool Pku => _pku;

    /// <summary>
    /// The PKRU rights of one key for a data access: AD (bit 2k) denies every access, WD (bit 2k+1) writes.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool PkruPermits(uint pkru, int pkey, bool write)
    {
        uint rights = pkru >> (2 * pkey);
        return (rights & 1) == 0 && (!write || (rights & 2) == 0);
    }

    // Words only this CPU reads and writes, on a cache line of their own: CPU objects sit side by side
    // on the managed heap, and a per-access store next to another CPU's fields would bounce the line.
    private readonly ulong* _local;
    /// <summary>_local: the TLB generation (every TLB tag carries it: a full flush is one increment).</summary>
    private const int LocalTlbGen = 0;
    /// <summary>_local: the paging-structure-cache generation.</summary>
    private const int LocalPscGen = 1;
    /// <summary>_local: rcu_read_lock nesting of kernel code on this CPU.</summary>
    private const int LocalRcuNesting = 2;
    /// <summary>_local: nonzero while the interrupt handler runs (interrupts off, no nesting).</summary>
    private const int LocalInInterrupt = 3;

    // Per-CPU words other CPUs read: the sequences on the first line, the flush mailbox on the second.
    private readonly long* _shared;
    /// <summary>_shared: the access sequence (odd = an access in flight). Written by the owner only.</summary>
    private const int SharedAccessSeq = 0;
    /// <summary>_shared: the RCU read-side sequence (odd = inside rcu_read_lock). Written by the owner only.</summary>
    private const int SharedRcuSeq = 1;
    /// <summary>_shared: the mailbox's spinlock word (an int in the low half).</summary>
    private const int MailboxLock = 8;
    /// <summary>_shared: a flush is pending. Set by posters under the mailbox lock, cleared by the owner under it.</summary>
    private const int MailboxPending = 9;
    /// <summary>_shared: start and end of the merged range pending (under the mailbox lock).</summary>
    private const int MailboxStart = 10, MailboxEnd = 11;
    /// <summary>_shared: flush requests posted (under the mailbox lock).</summary>
    private const int MailboxPosted = 12;
    /// <summary>_shared: requests drained, the acknowledgement. Written by the owner only, after the flush.</summary>
    private const int MailboxDrained = 13;

    /// <summary>The managed thread id of the owner, 0 when free; claimed with a CAS, released with a Volatile store.</summary>
    private int _ownerThread;

    internal Cpu(Platform platform, int id)
    {
        Platform = platform;
        Id = id;
        _phys = platform.Memory;
        _vmemmap = platform.Vmemmap;
        _paging = platform.Paging;
        _counters = platform.Counters;
        _physBase = _phys.Base;
        _physBytes = _phys.Bytes;
        _pgdirShift = _paging.PgdirShift;
        _l5 = _paging.L5Enabled;
        _userVaLast = _paging.TaskSizeMax + Geometry.PageSize - 1;
        _tlbMask = (ulong)platform.Config.TlbEntries - 1;
        _tlbHugeMask = (ulong)platform.Config.TlbHugeEntries - 1;
        _tlb = (TlbEntry*)NativeMemory.AlignedAlloc((nuint)(platform.Config.TlbEntries * sizeof(TlbEntry)), 64);
        _tlbHuge = (TlbEntry*)NativeMemory.AlignedAlloc((nuint)(platform.Config.TlbHugeEntries * sizeof(TlbEntry)), 64);
        NativeMemory.Clear(_tlb, (nuint)(platform.Config.TlbEntries * sizeof(TlbEntry)));
        NativeMemory.Clear(_tlbHuge, (nuint)(platform.Config.TlbHugeEntries * sizeof(TlbEntry)));
        _tlbGiga = (TlbEntry*)NativeMemory.AlignedAlloc((nuint)(TlbGigaEntries * sizeof(TlbEntry)), 64);
        NativeMemory.Clear(_tlbGiga, (nuint)(TlbGigaEntries * sizeof(TlbEntry)));
        _local = (ulong*)NativeMemory.AlignedAlloc(64, 64);
        NativeMemory.Clear(_local, 64);
        _local[LocalTlbGen] = 1;
        _local[LocalPscGen] = 1;
        _shared = (long*)NativeMemory.AlignedAlloc(128, 64);
        NativeMemory.Clear(_shared, 128);
        _psc = (PscEntry*)NativeMemory.AlignedAlloc((nuint)(PscEntries * sizeof(PscEntry)), 64);
        NativeMemory.Clear(_psc, (nuint)(PscEntries * sizeof(PscEntry)));
        _checkTlb = platform.Config.DebugVm;
        _pku = platform.Config.Pku;
        Pkru = _pku ? InitPkruValue : 0;
    }

    /// <summary>The machine this CPU belongs to.</summary>
    public Platform Platform { get; }
    /// <summary>smp_processor_id().</summary>
    public int Id { get; }
    /// <summary>The mm whose PGD is in CR3 (loaded_mm). Written by the owner only (switch_mm).</summary>
    public MmContext? LoadedMm { get; private set; }
    /// <summary>The per-CPU area of the kernel layers above (per_cpu variables).</summary>
    public object? KernelData { get; set; }
    internal Cpu? PreviousOnThread { get; set; }
    internal Action? PreviousInterruptHandler { get; set; }

    internal bool TryClaim(int threadId) => Interlocked.CompareExchange(ref _ownerThread, threadId, 0) == 0;

    /// <summary>Releases the CPU: unloads the mm (its translations go with it) and detaches from the thread.</summary>
    public void Dispose()
    {
        if (Volatile.Read(ref _ownerThread) == 0) return;
        SwitchMm(null);
        Platform.DetachCpu(this);
        // Release: the next owner's CAS sees every store this owner made to the CPU's words.
        Volatile.Write(ref _ownerThread, 0);
    }

    internal void Free()
    {
        if (_tlb == null) return;
        NativeMemory.AlignedFree(_tlb);
        NativeMemory.AlignedFree(_tlbHuge);
        NativeMemory.AlignedFree(_tlbGiga);
        NativeMemory.AlignedFree(_shared);
        NativeMemory.AlignedFree(_local);
        NativeMemory.AlignedFree(_psc);
        _tlb = _tlbHuge = _tlbGiga = null;
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
            ulong vpn = address >> Geometry.PageShift;
            TlbEntry* e = TlbSlot(vpn);
            if (e->Tag == TlbTag(vpn))
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
            ulong vpn = address >> Geometry.PageShift;
            TlbEntry* e = TlbSlot(vpn);
            if (e->Tag == TlbTag(vpn) && (e->Perm & TlbWrite) != 0)
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
                if (write) CopyBytes(host, buffer, chunk);
                else CopyBytes(buffer, host, chunk);
                ExitAccess();
                return FaultResult.Retry;
            }
            ExitAccess();
            FaultResult r = RaisePageFault(va, error, attempt);
            if (r != FaultResult.Retry) return r;
        }
    }

    /// <summary>The copy of an access: a scalar of 1, 2, 4 or 8 bytes is one move, as the instruction makes it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void CopyBytes(byte* destination, byte* source, int length)
    {
        switch (length)
        {
            case 1: *destination = *source; break;
            case 2: Unsafe.WriteUnaligned(destination, Unsafe.ReadUnaligned<ushort>(source)); break;
            case 4: Unsafe.WriteUnaligned(destination, Unsafe.ReadUnaligned<uint>(source)); break;
            case 8: Unsafe.WriteUnaligned(destination, Unsafe.ReadUnaligned<ulong>(source)); break;
            default: Buffer.MemoryCopy(source, destination, length, length); break;
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

    public override string ToString() => $"cpu{Id}";
}
