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
    public static void Lock(int* word)
    {
        if (Interlocked.CompareExchange(ref *word, 1, 0) != 0)
            LockSlow(word);
    }

    /// <summary>spin_lock_irqsave: the waiter takes no interrupts (for locks interrupt handlers themselves take).</summary>
    public static void LockIrqsave(int* word)
    {
        var spin = new SpinWait();
        while (Interlocked.CompareExchange(ref *word, 1, 0) != 0)
            while (Volatile.Read(ref *word) != 0) spin.SpinOnce(sleep1Threshold: -1);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static bool TryLock(int* word) => Interlocked.CompareExchange(ref *word, 1, 0) == 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Unlock(int* word)
    {
        Bug.On(Volatile.Read(ref *word) == 0, "spin_unlock of a lock that is not held");
        Volatile.Write(ref *word, 0);
    }

    public static bool IsLocked(int* word) => Volatile.Read(ref *word) != 0;

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

/// <summary>
/// Interrupt delivery for code that waits with interrupts enabled (spinlocks, rwsems): the calling
/// thread's CPU installs its handler when it attaches, and waiting loops poll it.
/// </summary>
public static class Interrupts
{
    [ThreadStatic] private static Action? t_handler;

    /// <summary>Installs (or with null removes) the calling thread's interrupt handler; returns the previous one.</summary>
    public static Action? SetHandler(Action? handler)
    {
        Action? previous = t_handler;
        t_handler = handler;
        return previous;
    }

    /// <summary>Takes pending interrupts of the calling thread's CPU, if it has one.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void Poll() => t_handler?.Invoke();
}

/// <summary>The kernel's BUG_ON / VM_BUG_ON: a broken invariant inside the emulator.</summary>
public static class Bug
{
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void On(bool condition, string invariant)
    {
        if (condition) Throw(invariant);
    }

    /// <summary>BUG_ON with a composite-format message; formatting happens only in the throw helper.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void On<T1>(bool condition, string format, T1 a)
    {
        if (condition) Throw(format, a, 0, 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void On<T1, T2>(bool condition, string format, T1 a, T2 b)
    {
        if (condition) Throw(format, a, b, 0);
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static void On<T1, T2, T3>(bool condition, string format, T1 a, T2 b, T3 c)
    {
        if (condition) Throw(format, a, b, c);
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void Throw<T1, T2, T3>(string format, T1 a, T2 b, T3 c)
        => throw new KernelBugException(string.Format(System.Globalization.CultureInfo.InvariantCulture, format, a, b, c));

    [MethodImpl(MethodImplOptions.NoInlining)]
    public static void Throw(string invariant) => throw new KernelBugException(invariant);
}

/// <summary>Thrown where the kernel would BUG(): an emulator invariant is broken. The message names it.</summary>
public sealed class KernelBugException(string invariant) : Exception("kernel BUG: " + invariant)
{
    public string Invariant { get; } = invariant;
}
