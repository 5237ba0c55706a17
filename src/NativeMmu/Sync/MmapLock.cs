using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace NativeMmu.Sync;

/// <summary>
/// mmap_lock: a reader-writer semaphore whose read side is per CPU (as percpu_rw_semaphore), so page
/// faults on different CPUs of one mm never share a cache line. The kernel avoids that contention in
/// faults with per-VMA locks; per-CPU reader counts give the same scaling with one mechanism.
/// </summary>
/// <remarks>
/// <para>Protocol (asymmetric Dekker, as percpu_rw_semaphore with rcu_sync): a reader bumps its own slot with
/// a plain store and reads <c>_writer</c> - no fence on the fault path. A writer sets <c>_writer</c>, then
/// runs a process-wide barrier (the kernel runs synchronize_rcu), which drains every CPU's store buffer,
/// then reads every slot. Either a reader sees the writer and backs off, or the writer sees the reader
/// and waits for it. Each slot has one writer: the thread running that CPU.</para>
/// <para>The barrier is needed only for CPUs that may have a plain store in flight, so each CPU announces
/// itself once, with a locked OR into <c>_fastReaders</c>, before its first plain-store read. A writer
/// that names its own CPU and finds no other announced skips the barrier: a CPU that announces after
/// the writer read the mask did so after the writer's locked store to <c>_writer</c>, and its fenced
/// announcement comes before its read of <c>_writer</c>, which therefore sees the writer. A process
/// that runs on one CPU takes mmap_lock for write as the kernel's uncontended down_write does, with
/// one atomic, not a barrier that interrupts every CPU.</para>
/// </remarks>
public sealed unsafe class MmapLock : IDisposable
{
    private const int SlotStride = 16; // ints: one 64-byte line per CPU
    private readonly int* _readers;
    private readonly int _cpus;
    // Written under _writerMutex; read by readers without it.
    private int _writer;
    /// <summary>CPUs that have taken the read side with a plain store at least once (set with a locked OR, never cleared).</summary>
    private long _fastReaders;
    /// <summary>Write locks that ran the process-wide barrier (written under _writerMutex).</summary>
    private long _barriers;
    private readonly Lock _writerMutex = new();

    public MmapLock(int cpus)
    {
        _cpus = cpus;
        _readers = (int*)NativeMemory.AlignedAlloc((nuint)(cpus * SlotStride * sizeof(int)), 64);
        NativeMemory.Clear(_readers, (nuint)(cpus * SlotStride * sizeof(int)));
    }

    /// <summary>mmap_read_lock, on behalf of CPU <paramref name="cpu"/>.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadLock(int cpu)
    {
        int* slot = _readers + cpu * SlotStride;
        if ((Volatile.Read(ref _fastReaders) & (1L << cpu)) == 0) Announce(cpu);
        Volatile.Write(ref *slot, *slot + 1);
        if (Volatile.Read(ref _writer) != 0) ReadLockSlow(slot);
    }

    /// <summary>A CPU's first read: join the CPUs a writer must run the barrier for (a full fence).</summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void Announce(int cpu) => Interlocked.Or(ref _fastReaders, 1L << cpu);

    /// <summary>mmap_read_unlock: a release store, so the critical section's accesses stay inside.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadUnlock(int cpu)
    {
        int* slot = _readers + cpu * SlotStride;
        Volatile.Write(ref *slot, *slot - 1);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReadLockSlow(int* slot)
    {
        var spin = new SpinWait();
        do
        {
            Volatile.Write(ref *slot, *slot - 1);
            while (Volatile.Read(ref _writer) != 0)
            {
                Interrupts.Poll(); // the writer may be waiting for this CPU to take a flush
                spin.SpinOnce(sleep1Threshold: -1);
            }
            // Back in: this time with a full fence, since the writer may already be past its barrier.
            Interlocked.Increment(ref *slot);
        }
        while (Volatile.Read(ref _writer) != 0);
    }

    /// <summary>
    /// mmap_write_lock, on behalf of CPU <paramref name="cpu"/> (-1: a thread that is not running one, for
    /// which every CPU that ever read counts).
    /// </summary>
    public void WriteLock(int cpu = -1)
    {
        _writerMutex.Enter();
        Interlocked.Exchange(ref _writer, 1);
        long others = Volatile.Read(ref _fastReaders) & ~(cpu >= 0 ? 1L << cpu : 0);
        if (others != 0)
        {
            Interlocked.MemoryBarrierProcessWide();
            _barriers++;
        }
        var spin = new SpinWait();
        for (int c = 0; c < _cpus; c++)
            while (Volatile.Read(ref _readers[c * SlotStride]) != 0)
            {
                Interrupts.Poll();
                spin.SpinOnce(sleep1Threshold: -1);
            }
    }

    /// <summary>mmap_write_unlock.</summary>
    public void WriteUnlock()
    {
        Volatile.Write(ref _writer, 0);
        _writerMutex.Exit();
    }

    /// <summary>Write locks so far that had to run the process-wide barrier.</summary>
    public long Barriers => Volatile.Read(ref _barriers);

    /// <summary>mmap_assert_write_locked.</summary>
    public bool IsWriteLocked => Volatile.Read(ref _writer) != 0 && _writerMutex.IsHeldByCurrentThread;

    public void Dispose() => NativeMemory.AlignedFree(_readers);
}
