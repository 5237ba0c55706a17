using System.ComponentModel;
using System.Diagnostics;
using System.Runtime.InteropServices;

namespace NativeMmu.Cli.Host;

/// <summary>
/// fork(2) of this very process, for timing the host kernel's dup_mmap. The child must not run a single
/// instruction of the runtime: after fork only the forking thread exists, so any lock another thread
/// held (the GC's, the loader's, malloc's) stays locked forever, and returning from a P/Invoke into
/// managed code may wait for a GC that no thread will finish. The fork is therefore issued from a few
/// bytes of machine code that, in the child, go straight to exit_group(0) (that is, _exit(0)) without
/// returning: the child never leaves the stub.
/// </summary>
internal static unsafe partial class HostFork
{
    private const int SYS_pause = 34;
    private const int SYS_fork = 57;
    private const int SYS_exit_group = 231;
    private const int SIGKILL = 9;
    private const int EINTR = 4;
    private const int PROT_EXEC = 0x4;

    /// <summary>fork; child: exit_group(0); parent: returns the child's pid, or -errno.</summary>
    private static ReadOnlySpan<byte> ExitingChild =>
    [
        0xb8, SYS_fork, 0, 0, 0,                    // mov eax, SYS_fork
        0x0f, 0x05,                                 // syscall
        0x48, 0x85, 0xc0,                           // test rax, rax
        0x74, 0x01,                                 // jz child
        0xc3,                                       // ret (parent: rax = pid or -errno)
        0x31, 0xff,                                 // child: xor edi, edi
        0xb8, SYS_exit_group, 0, 0, 0,              // mov eax, SYS_exit_group
        0x0f, 0x05,                                 // syscall
        0x0f, 0x0b,                                 // ud2: exit_group does not return
    ];

    /// <summary>As <see cref="ExitingChild"/>, but the child first waits in pause() until it is killed, so its mm can be read.</summary>
    private static ReadOnlySpan<byte> PausingChild =>
    [
        0xb8, SYS_fork, 0, 0, 0,                    // mov eax, SYS_fork
        0x0f, 0x05,                                 // syscall
        0x48, 0x85, 0xc0,                           // test rax, rax
        0x74, 0x01,                                 // jz child
        0xc3,                                       // ret
        0xb8, SYS_pause, 0, 0, 0,                   // child: mov eax, SYS_pause
        0x0f, 0x05,                                 // syscall (only SIGKILL ends it: nothing else is sent)
        0x31, 0xff,                                 // xor edi, edi
        0xb8, SYS_exit_group, 0, 0, 0,              // mov eax, SYS_exit_group
        0x0f, 0x05,                                 // syscall
        0x0f, 0x0b,                                 // ud2
    ];

    /// <summary>
    /// The fork server's fork: <c>long stub(byte** pages, long n)</c>. fork; child: write the byte 1 to each of
    /// the n addresses in <c>pages</c> (its copy of the parent's array), then exit_group(0); parent: returns
    /// the child's pid, or -errno. rdi and rsi survive the syscall (it clobbers only rax, rcx and r11).
    /// </summary>
    private static ReadOnlySpan<byte> TouchingChild =>
    [
        0xb8, SYS_fork, 0, 0, 0,                    // mov eax, SYS_fork
        0x0f, 0x05,                                 // syscall
        0x48, 0x85, 0xc0,                           // test rax, rax
        0x74, 0x01,                                 // jz child
        0xc3,                                       // ret (parent: rax = pid or -errno)
        0x48, 0x85, 0xf6,                           // child: test rsi, rsi
        0x74, 0x0f,                                 // jz exit
        0x48, 0x8b, 0x07,                           // loop: mov rax, [rdi]
        0xc6, 0x00, 0x01,                           // mov byte [rax], 1
        0x48, 0x83, 0xc7, 0x08,                     // add rdi, 8
        0x48, 0xff, 0xce,                           // dec rsi
        0x75, 0xf1,                                 // jnz loop
        0x31, 0xff,                                 // exit: xor edi, edi
        0xb8, SYS_exit_group, 0, 0, 0,              // mov eax, SYS_exit_group
        0x0f, 0x05,                                 // syscall
        0x0f, 0x0b,                                 // ud2: exit_group does not return
    ];

    [LibraryImport("libc", EntryPoint = "mprotect", SetLastError = true)]
    private static partial int mprotect(nint addr, nuint length, int prot);

    [LibraryImport("libc", EntryPoint = "waitpid", SetLastError = true)]
    private static partial int waitpid(int pid, int* status, int options);

    [LibraryImport("libc", EntryPoint = "kill", SetLastError = true)]
    private static partial int kill(int pid, int sig);

    /// <summary>Whether this host can run the stubs at all (x86-64 Linux).</summary>
    public static bool Supported => OperatingSystem.IsLinux() && RuntimeInformation.ProcessArchitecture == Architecture.X64;

    /// <summary>
    /// Forks <paramref name="times"/> times; each child exits at once. Returns the wall time of each
    /// fork call as the parent sees it (from the call to its return, the child's exit not included).
    /// </summary>
    public static double[] TimeForks(int times)
    {
        var ms = new double[times];
        using var stub = new Stub(ExitingChild);
        for (int i = 0; i < times; i++)
        {
            long t0 = Stopwatch.GetTimestamp();
            long pid = stub.Call();
            long t1 = Stopwatch.GetTimestamp();
            if (pid < 0) throw new Win32Exception((int)-pid, $"fork failed: {Marshal.GetPInvokeErrorMessage((int)-pid)} (errno {-pid})");
            Reap((int)pid);
            ms[i] = Stopwatch.GetElapsedTime(t0, t1).TotalMilliseconds;
        }
        return ms;
    }

    /// <summary>Forks once, reads two kB fields of the child's /proc/PID/status while it waits in pause(), then kills and reaps it.</summary>
    public static (long? First, long? Second) ChildStatusKb(string first, string second)
    {
        using var stub = new Stub(PausingChild);
        long pid = stub.Call();
        if (pid < 0) throw new Win32Exception((int)-pid, $"fork failed: {Marshal.GetPInvokeErrorMessage((int)-pid)} (errno {-pid})");
        try
        {
            // fork returns in the parent only after copy_process has copied the page tables.
            string path = $"/proc/{pid}/status";
            string status = File.ReadAllText(path);
            return (ProcStatus.ParseKb(status, first, path), ProcStatus.ParseKb(status, second, path));
        }
        finally
        {
            kill((int)pid, SIGKILL);
            Reap((int)pid);
        }
    }

    /// <summary>waitpid until the child is reaped; returns its wait status.</summary>
    private static int Reap(int pid)
    {
        int status;
        while (waitpid(pid, &status, 0) < 0)
        {
            int errno = Marshal.GetLastPInvokeError();
            if (errno != EINTR) throw new Win32Exception(errno, $"waitpid({pid}) failed (errno {errno})");
        }
        return status;
    }

    /// <summary>
    /// The fork server's step on the host, child and all in machine code: fork; the child writes one byte
    /// to each address in a native array and exits; the parent waits for it. Allocates nothing per fork.
    /// </summary>
    public sealed class TouchingForker : IDisposable
    {
        private readonly Stub _stub = new(TouchingChild);

        /// <summary>
        /// One fork, the child's <paramref name="n"/> writes at <paramref name="pages"/>, its exit and the wait;
        /// throws unless it exited with 0. Returns the Stopwatch timestamp at which fork returned in the parent.
        /// </summary>
        public long ForkAndWait(byte** pages, long n)
        {
            long pid = _stub.Call(pages, n);
            long forked = Stopwatch.GetTimestamp();
            if (pid < 0) throw new Win32Exception((int)-pid, $"fork failed: {Marshal.GetPInvokeErrorMessage((int)-pid)} (errno {-pid})");
            int status = Reap((int)pid);
            if (status != 0) throw new InvalidOperationException($"the fork-server child {pid} did not exit with 0 (wait status 0x{status:x})");
            return forked;
        }

        public void Dispose() => _stub.Dispose();
    }

    /// <summary>One page of host memory holding a stub: written while writable, then made read+execute.</summary>
    private sealed class Stub : IDisposable
    {
        private readonly byte* _code;

        public Stub(ReadOnlySpan<byte> code)
        {
            _code = HostMemory.Map(4096);
            code.CopyTo(new Span<byte>(_code, 4096));
            if (mprotect((nint)_code, 4096, HostMemory.PROT_READ | PROT_EXEC) != 0)
            {
                int errno = Marshal.GetLastPInvokeError();
                HostMemory.Unmap(_code, 4096);
                throw new Win32Exception(errno, $"mprotect(PROT_READ|PROT_EXEC) of the fork stub failed: {Marshal.GetPInvokeErrorMessage(errno)} (errno {errno})");
            }
        }

        public long Call() => ((delegate* unmanaged<long>)_code)();

        public long Call(byte** pages, long n) => ((delegate* unmanaged<byte**, long, long>)_code)(pages, n);

        public void Dispose() => HostMemory.Unmap(_code, 4096);
    }
}
