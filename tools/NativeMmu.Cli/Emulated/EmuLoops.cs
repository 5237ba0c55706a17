using NativeMmu.Cpus;
using NativeMmu.Cli.Host;
using NativeMmu.Mm;

namespace NativeMmu.Cli.Emulated;

/// <summary>The benchmark loops run on the emulator: the same work HostLoops does on the host kernel.</summary>
public static class EmuLoops
{
    private const ulong Window = 2UL << 20;
    private const ulong Region = 8UL << 20;
    private const ulong PageFault1Bytes = 128UL << 20;

    /// <summary>
    /// KAMEZAWA Hiroyuki's multi-fault: N threads share one mm; each owns an 8 MiB private anonymous
    /// mapping whose first 2 MiB-aligned 2 MiB is its window; loop: write one byte to each of its 512
    /// pages, then MADV_DONTNEED the window. Faults are the emulated kernel's own pgfault count.
    /// </summary>
    public static LoopResult MultiFault(Kernel kernel, int threads, double seconds, Action<long>? progress = null)
        => Run(kernel, threads, seconds, progress, static (p, cpu, stop, touched) =>
        {
            ulong region = p.Mmap(Region);
            Check(p.Madvise(region, Region, Advice.NoHugePage), "madvise");
            ulong w = (region + Window - 1) & ~(Window - 1);
            while (!Volatile.Read(ref stop.Value))
            {
                for (ulong off = 0; off < Window; off += 4096) cpu.Store<byte>(w + off, 1);
                Check(p.Madvise(w, Window, Advice.DontNeed), "madvise");
                Volatile.Write(ref touched.Slot.Value, touched.Slot.Value + 512);
            }
            Check(p.Munmap(region, Region), "munmap");
        });

    /// <summary>
    /// will-it-scale page_fault1: mmap 128 MiB (or <paramref name="bytes"/>), write one byte per page, munmap, repeat.
    /// </summary>
    public static LoopResult PageFault1(Kernel kernel, int threads, double seconds, Action<long>? progress = null, ulong bytes = PageFault1Bytes)
        => Run(kernel, threads, seconds, progress, (p, cpu, stop, touched) =>
        {
            while (!Volatile.Read(ref stop.Value))
            {
                ulong a = p.Mmap(bytes);
                Check(p.Madvise(a, bytes, Advice.NoHugePage), "madvise");
                ulong off = 0;
                for (; off < bytes; off += 4096)
                {
                    cpu.Store<byte>(a + off, 1);
                    if ((off & ((4096UL << 12) - 1)) == 0)
                    {
                        Volatile.Write(ref touched.Slot.Value, touched.Slot.Value + 4096);
                        if (Volatile.Read(ref stop.Value)) break;
                    }
                }
                Check(p.Munmap(a, bytes), "munmap");
            }
        });

    private sealed class Box<T> { public T Value = default!; }

    /// <summary>A per-thread counter on a cache line of its own (the workers bump theirs every window).</summary>
    [System.Runtime.InteropServices.StructLayout(System.Runtime.InteropServices.LayoutKind.Explicit, Size = 128)]
    private struct PaddedCount
    {
        [System.Runtime.InteropServices.FieldOffset(64)] public long Value;
    }

    private sealed class Counter { public PaddedCount Slot; public double CpuSeconds; }

    private delegate void Worker(Process p, Cpu cpu, Box<bool> stop, Counter touched);

    private static void Check(Errno e, string call)
    {
        if (e != Errno.Success) throw new ErrnoException(e, call);
    }

    private static LoopResult Run(Kernel kernel, int threads, double seconds, Action<long>? progress, Worker body)
    {
        Process p = kernel.CreateProcess("multi-fault");
        var stop = new Box<bool>();
        var touched = new Counter[threads];
        var start = new Barrier(threads + 1);
        var done = new CountdownEvent(threads);
        Exception? failure = null;
        var workers = new Thread[threads];
        for (int t = 0; t < threads; t++)
        {
            var mine = touched[t] = new Counter();
            workers[t] = new Thread(() =>
            {
                try
                {
                    using Cpu cpu = kernel.AttachCpu();
                    p.Enter(cpu);
                    start.SignalAndWait();
                    HostMemory.Rusage before = HostMemory.ThreadUsage();
                    body(p, cpu, stop, mine);
                    mine.CpuSeconds = HostMemory.CpuSeconds(HostMemory.ThreadUsage()) - HostMemory.CpuSeconds(before);
                }
                catch (Exception e)
                {
                    failure ??= e;
                    Volatile.Write(ref stop.Value, true);
                }
                finally
                {
                    done.Signal();
                }
            }) { IsBackground = true, Name = $"emu-{t}" };
            workers[t].Start();
        }
        start.SignalAndWait();
        long faults0 = kernel.VmstatValue("pgfault");
        var sw = System.Diagnostics.Stopwatch.StartNew();
        while (sw.Elapsed.TotalSeconds < seconds && failure is null)
        {
            Thread.Sleep(Math.Max(1, Math.Min(250, (int)((seconds - sw.Elapsed.TotalSeconds) * 1000))));
            progress?.Invoke(kernel.VmstatValue("pgfault") - faults0);
        }
        Volatile.Write(ref stop.Value, true);
        done.Wait();
        double elapsed = sw.Elapsed.TotalSeconds;
        long faults = kernel.VmstatValue("pgfault") - faults0;
        foreach (Thread w in workers) w.Join();
        if (failure is not null) throw new InvalidOperationException("an emulated benchmark thread failed", failure);
        p.Exit();
        progress?.Invoke(faults);
        return new LoopResult(faults, elapsed, touched.Sum(c => c.CpuSeconds));
    }
}
