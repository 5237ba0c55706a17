using System.ComponentModel;
using System.Runtime.InteropServices;

namespace NativeMmu.Cli.Host;

/// <summary>
/// Thin libc bindings for driving the host kernel's memory manager from the same process:
/// anonymous mappings, madvise and the calling thread's fault counters.
/// </summary>
internal static unsafe partial class HostMemory
{
    public const int PROT_READ = 0x1;
    public const int PROT_WRITE = 0x2;

    public const int MAP_SHARED = 0x01;
    public const int MAP_PRIVATE = 0x02;
    public const int MAP_ANONYMOUS = 0x20;
    public const int MAP_NORESERVE = 0x4000;

    public const int MADV_DONTNEED = 4;
    public const int MADV_HUGEPAGE = 14;
    public const int MADV_NOHUGEPAGE = 15;

    public const int RUSAGE_THREAD = 1;

    private static readonly nint MapFailed = -1;

    /// <summary><c>struct timeval</c> on x86-64 Linux.</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Timeval
    {
        public long Seconds;
        public long Microseconds;
    }

    /// <summary><c>struct rusage</c> on x86-64 Linux: two timevals, then fourteen longs (144 bytes).</summary>
    [StructLayout(LayoutKind.Sequential)]
    internal struct Rusage
    {
        public Timeval UserTime;
        public Timeval SystemTime;
        public long MaxRss;
        public long IxRss;
        public long IdRss;
        public long IsRss;
        public long MinFlt;
        public long MajFlt;
        public long NSwap;
        public long InBlock;
        public long OuBlock;
        public long MsgSnd;
        public long MsgRcv;
        public long NSignals;
        public long NVcsw;
        public long NIvcsw;
    }

    [LibraryImport("libc", EntryPoint = "mmap", SetLastError = true)]
    private static partial nint mmap(nint addr, nuint length, int prot, int flags, int fd, nint offset);

    [LibraryImport("libc", EntryPoint = "munmap", SetLastError = true)]
    private static partial int munmap(nint addr, nuint length);

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int mprotect(nint addr, nuint length, int prot);

    [LibraryImport("libc", EntryPoint = "madvise", SetLastError = true)]
    private static partial int madvise(nint addr, nuint length, int advice);

    [LibraryImport("libc", EntryPoint = "getrusage", SetLastError = true)]
    private static partial int getrusage(int who, Rusage* usage);

    /// <summary>
    /// Maps <paramref name="length"/> bytes of private anonymous read/write memory
    /// (MAP_NORESERVE, no fixed address). Throws with errno on failure.
    /// </summary>
    public static byte* Map(ulong length) => Map(length, PROT_READ | PROT_WRITE);

    /// <summary>As <see cref="Map(ulong)"/>, with the given protection.</summary>
    public static byte* Map(ulong length, int prot)
    {
        nint p = mmap(0, (nuint)length, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MapFailed)
            throw Failure("mmap", length);
        return (byte*)p;
    }

    /// <summary>Maps <paramref name="length"/> bytes of shared anonymous read/write memory: what a forked child writes there, its parent sees.</summary>
    public static byte* MapShared(ulong length)
    {
        nint p = mmap(0, (nuint)length, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
        if (p == MapFailed)
            throw Failure("mmap(MAP_SHARED)", length);
        return (byte*)p;
    }

    /// <summary>Unmaps a range obtained from <see cref="Map"/>. Throws with errno on failure.</summary>
    public static void Unmap(byte* p, ulong length)
    {
        if (munmap((nint)p, (nuint)length) != 0)
            throw Failure("munmap", length);
    }

    /// <summary>mprotect(2) on a range. Throws with errno on failure.</summary>
    public static void Protect(byte* p, ulong length, int prot)
    {
        if (mprotect((nint)p, (nuint)length, prot) != 0)
            throw Failure($"mprotect({prot})", length);
    }

    /// <summary>The VMAs of this process's mm: the lines of /proc/self/maps.</summary>
    public static int MapCount()
    {
        int n = 0;
        foreach (string _ in File.ReadLines("/proc/self/maps")) n++;
        return n;
    }

    /// <summary>sysctl vm.max_map_count, or null when it cannot be read.</summary>
    public static int? MaxMapCount()
        => File.Exists("/proc/sys/vm/max_map_count") && int.TryParse(File.ReadAllText("/proc/sys/vm/max_map_count").Trim(), out int n) ? n : null;

    /// <summary>madvise(2) on a range. Throws with errno on failure.</summary>
    public static void Advise(byte* p, ulong length, int advice)
    {
        if (madvise((nint)p, (nuint)length, advice) != 0)
            throw Failure($"madvise({advice})", length);
    }

    /// <summary>The calling thread's minor page-fault count as the kernel keeps it (getrusage(RUSAGE_THREAD).ru_minflt).</summary>
    public static long ThreadMinorFaults() => ThreadUsage().MinFlt;

    /// <summary>getrusage(RUSAGE_THREAD) for the calling thread.</summary>
    public static Rusage ThreadUsage()
    {
        Rusage usage;
        if (getrusage(RUSAGE_THREAD, &usage) != 0)
            throw Failure("getrusage(RUSAGE_THREAD)", 0);
        return usage;
    }

    /// <summary>User plus system time of a <see cref="Rusage"/>, in seconds.</summary>
    public static double CpuSeconds(in Rusage u)
        => u.UserTime.Seconds + u.SystemTime.Seconds + (u.UserTime.Microseconds + u.SystemTime.Microseconds) * 1e-6;

    private static Win32Exception Failure(string call, ulong length)
    {
        int errno = Marshal.GetLastPInvokeError();
        string what = length != 0 ? $"{call} of {length} bytes" : call;
        return new Win32Exception(errno, $"{what} failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
    }
}
