using System.Runtime.CompilerServices;

namespace NativeMmu.Sync;

/// <summary>
/// spinlock_t as a 4-byte word in memory (0 free, 1 held), so it can live where the kernel embeds
/// it: the ptl of a page-table page's struct page, a zone, an mm. Acquire is a CAS (full fence on
/// x86); release is a Volatile store, the release half of the protocol.
/// </summary>
public static unsafe class Spin
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Lock(int* word)
    {
        if (Interlocked.CompareExchange(ref *word, 1, 0) != 0)
            LockSlow(word);
    }

    /// <summary>spin_lock_irqsave: the waiter takes no interrupts (for locks interrupt handlers themselves take).</summary>
    internal static void LockIrqsave(int* word)
    {
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref *word, 1, 0) != 0)
            while (Volatile.Read(ref *word) != 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static bool TryLock(int* word) => Interlocked.CompareExchange(ref *word, 1, 0) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    internal static void Unlock(int* word)
    {
        Bug.On(Volatile.Read(ref *word) == 0, "spin_unlock of a lock that is not held");
        Volatile.Write(ref *word, 0);
    }

    internal static bool IsLocked(int* word) => Volatile.Read(ref *word) != 0;

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void LockSlow(int* word)
    {
        // More emulated CPUs than host cores is normal, so spin politely: SpinWait yields the
        // host CPU after a few rounds, which lets a preempted holder run and release. spin_lock
        // leaves interrupts on, so a spinning CPU takes flush IPIs - the holder may be waiting on one.
        var spin = new SpinWait();
        do
        {
            while (Volatile.Read(ref *word) != 0)
            {
                Interrupts.Poll();
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }
        while (Interlocked.CompareExchange(ref *word, 1, 0) != 0);
    }
}
