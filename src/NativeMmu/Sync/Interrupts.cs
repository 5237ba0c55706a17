using System.Runtime.CompilerServices;

namespace NativeMmu.Sync;

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
