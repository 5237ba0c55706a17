using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace NativeMmu.Sync;

/// <summary>
/// mmap_lock: a reader-writer semaphore whose read side is per CPU (as percpu_rw_semaphore), so page
/// faults on different CPUs of one mm never share a cache line. The kernel avoids that contention in
/// faults with per-VMA locks; per-CPU reader counts give the same scaling with one mechanism.
/// </summary>
/// <remarks>
/// Protocol (Dekker-style, both sides fenced): a reader increments its own slot with a locked
/// instruction and then reads <c>_writer</c>; a writer sets <c>_writer</c> with a locked instruction
/// and then reads every slot. Either the reader sees the writer and backs off, or the writer sees
/// the reader and waits for it.
/// </remarks>
public sealed unsafe class MmapLock : IDisposable
{
    private const int SlotStride = 16; // ints: one 64-byte line per CPU
    private readonly int* _readers;
    private readonly int _cpus;
    // Written under _writerMutex; read by readers without it.
    private int _writer;
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
        Interlocked.Increment(ref *slot);
        if (Volatile.Read(ref _writer) != 0) ReadLockSlow(slot);
    }

    /// <summary>mmap_read_unlock.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void ReadUnlock(int cpu) => Interlocked.Decrement(ref *(_readers + cpu * SlotStride));

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ReadLockSlow(int* slot)
    {
        var spin = new SpinWait();
        do
        {
            Interlocked.Decrement(ref *slot);
            while (Volatile.Read(ref _writer) != 0) spin.SpinOnce(sleep1Threshold: -1);
            Interlocked.Increment(ref *slot);
        }
        while (Volatile.Read(ref _writer) != 0);
    }

    /// <summary>mmap_write_lock.</summary>
    public void WriteLock()
    {
        _writerMutex.Enter();
        Interlocked.Exchange(ref _writer, 1);
        var spin = new SpinWait();
        for (int c = 0; c < _cpus; c++)
            while (Volatile.Read(ref _readers[c * SlotStride]) != 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    /// <summary>mmap_write_unlock.</summary>
    public void WriteUnlock()
    {
        Volatile.Write(ref _writer, 0);
        _writerMutex.Exit();
    }

    /// <summary>mmap_assert_write_locked.</summary>
    public bool IsWriteLocked => Volatile.Read(ref _writer) != 0 && _writerMutex.IsHeldByCurrentThread;

    public void Dispose() => NativeMemory.AlignedFree(_readers);
}
