using System.Runtime.CompilerServices;

namespace NativeMmu.Sync;

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
