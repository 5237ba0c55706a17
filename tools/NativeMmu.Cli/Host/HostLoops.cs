using System.Diagnostics;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace NativeMmu.Cli.Host;

/// <summary>
/// Outcome of a loop: a fault (or frame) count, the wall time it took, and the CPU time (user + system)
/// its worker threads used meanwhile (getrusage RUSAGE_THREAD), which time slices lost to other
/// processes on a shared machine do not inflate.
/// </summary>
public readonly record struct LoopResult(long Faults, double Seconds, double CpuSeconds = 0)
{
    public double PerMinute => Seconds > 0 ? Faults * 60.0 / Seconds : 0;

    /// <summary>Worker CPU time per fault (or frame), in nanoseconds.</summary>
    public double CpuNsPerFault => Faults > 0 ? CpuSeconds * 1e9 / Faults : 0;

    /// <summary>Two stretches of the same loop as one: counts, wall time and CPU time add.</summary>
    public static LoopResult operator +(LoopResult a, LoopResult b)
        => new(a.Faults + b.Faults, a.Seconds + b.Seconds, a.CpuSeconds + b.CpuSeconds);
}

/// <summary>
/// The host kernel's side of the fault benchmarks: the same page-fault loops the emulator runs,
/// executed against the real kernel on real OS threads in this process.
/// </summary>
/// <remarks>
/// Every loop starts its threads together behind a barrier, runs for the requested wall time
/// (a shared stop flag set by the calling thread) and reports the kernel's own fault count:
/// the sum over workers of each thread's <c>ru_minflt</c> delta (getrusage RUSAGE_THREAD)
/// around its loop. Seconds is the wall time from the barrier release to the moment the
/// last worker stopped. Workers allocate nothing on the managed heap inside their loops.
/// </remarks>
public static unsafe class HostLoops
{
    private const ulong PageSize = 4096;
    private const ulong PmdSize = 2UL << 20;

    /// <summary>Per-thread mapping of the multi-fault loop.</summary>
    private const ulong MultiFaultMapSize = 8UL << 20;

    /// <summary>Window each multi-fault thread faults in and zaps, one PMD's worth.</summary>
    private const ulong MultiFaultWindow = PmdSize;

    /// <summary>Mapping size of will-it-scale's page_fault1.</summary>
    private const ulong PageFault1Size = 128UL << 20;

    /// <summary>How many pages page_fault1 and the ceiling touch between looks at the stop flag.</summary>
    private const long StopCheckPages = 4096;

    private static readonly TimeSpan ProgressInterval = TimeSpan.FromMilliseconds(250);

    /// <summary>
    /// KAMEZAWA Hiroyuki's multi-fault loop: each thread owns an 8 MiB private anonymous
    /// mapping with MADV_NOHUGEPAGE and, in the first 2 MiB-aligned 2 MiB window of it,
    /// writes one byte to each of the 512 pages and then MADV_DONTNEEDs the window, over and over.
    /// </summary>
    /// <param name="progress">Called from the calling thread about every 250 ms, and once at the end, with the pages touched so far.</param>
    public static LoopResult MultiFault(int threads, double seconds, Action<long>? progress = null)
        => Run(threads, seconds, progress, "multi-fault", static _ => new MultiFaultWorker());

    /// <summary>
    /// will-it-scale's page_fault1: each thread maps 128 MiB (or <paramref name="bytes"/>) private anonymous
    /// (MADV_NOHUGEPAGE), writes one byte per 4 KiB page and unmaps it, over and over.
    /// </summary>
    /// <param name="progress">Called from the calling thread about every 250 ms, and once at the end, with the pages touched so far.</param>
    public static LoopResult PageFault1(int threads, double seconds, Action<long>? progress = null, ulong bytes = PageFault1Size)
    {
        if (bytes < StopCheckPages * PageSize || bytes % (StopCheckPages * PageSize) != 0)
            throw new ArgumentOutOfRangeException(nameof(bytes), bytes, "The mapping must be a positive multiple of 16 MiB.");
        return Run(threads, seconds, progress, "page_fault1", _ => new PageFault1Worker(bytes));
    }

    /// <summary>
    /// The ceiling for a fault loop: the same threads doing nothing but zeroing 4 KiB frames,
    /// frame by frame over a pre-touched per-thread buffer of <paramref name="bufferBytes"/>
    /// (2 MiB for the multi-fault loop, 128 MiB for page_fault1). Faults here are frames zeroed.
    /// </summary>
    /// <param name="progress">Called from the calling thread about every 250 ms, and once at the end, with the frames zeroed so far.</param>
    public static LoopResult Ceiling(int threads, double seconds, ulong bufferBytes, Action<long>? progress = null)
    {
        if (bufferBytes < PageSize || bufferBytes % PageSize != 0)
            throw new ArgumentOutOfRangeException(nameof(bufferBytes), bufferBytes, "The buffer must be a positive multiple of 4096 bytes.");
        return Run(threads, seconds, progress, "ceiling", _ => new CeilingWorker(bufferBytes));
    }

    private static LoopResult Run(int threads, double seconds, Action<long>? progress, string name, Func<int, Worker> create)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(threads);
        if (!(seconds > 0) || double.IsInfinity(seconds))
            throw new ArgumentOutOfRangeException(nameof(seconds), seconds, "The duration must be a positive, finite number of seconds.");

        var shared = new Shared(threads);
        var workers = new Worker[threads];
        var osThreads = new Thread[threads];
        for (int i = 0; i < threads; i++)
        {
            Worker worker = create(i);
            worker.Shared = shared;
            worker.Index = i;
            workers[i] = worker;
            osThreads[i] = new Thread(worker.Main) { IsBackground = true, Name = $"{name} #{i}" };
        }

        foreach (Thread t in osThreads)
            t.Start();

        try
        {
            // Release the workers; from here on the clock runs.
            shared.Barrier.SignalAndWait();
            var clock = Stopwatch.StartNew();
            var duration = TimeSpan.FromSeconds(seconds);
            while (Volatile.Read(ref shared.Error) is null)
            {
                TimeSpan remaining = duration - clock.Elapsed;
                if (remaining <= TimeSpan.Zero)
                    break;
                Thread.Sleep(remaining < ProgressInterval ? remaining : ProgressInterval);
                if (clock.Elapsed < duration)
                    progress?.Invoke(shared.TotalTouched());
            }
        }
        finally
        {
            shared.Stop = true;
            foreach (Thread t in osThreads)
                t.Join();
            shared.Barrier.Dispose();
        }

        if (shared.Error is { } error)
            throw new InvalidOperationException($"The host {name} loop failed: {error.Message}", error);

        progress?.Invoke(shared.TotalTouched());

        long faults = 0;
        double cpu = 0;
        long start = long.MaxValue, end = long.MinValue;
        foreach (Worker w in workers)
        {
            faults += w.Faults;
            cpu += w.CpuSeconds;
            start = Math.Min(start, w.StartTicks);
            end = Math.Max(end, w.EndTicks);
        }
        return new LoopResult(faults, (double)(end - start) / Stopwatch.Frequency, cpu);
    }

    /// <summary>State the calling thread shares with its workers.</summary>
    private sealed class Shared(int threads)
    {
        /// <summary>Longs between two workers' published counters, so they sit on separate cache lines.</summary>
        private const int Stride = 16;

        public readonly Barrier Barrier = new(threads + 1);
        public volatile bool Stop;
        public Exception? Error;

        private readonly long[] _touched = new long[(threads + 1) * Stride];

        public void Publish(int index, long touched) => Volatile.Write(ref _touched[(index + 1) * Stride], touched);

        public long TotalTouched()
        {
            long total = 0;
            for (int i = 1; i < _touched.Length / Stride; i++)
                total += Volatile.Read(ref _touched[i * Stride]);
            return total;
        }

        public void Fail(Exception e)
        {
            Interlocked.CompareExchange(ref Error, e, null);
            Stop = true;
        }
    }

    /// <summary>One OS thread of a loop: set up before the barrier, loop after it, tear down at the end.</summary>
    private abstract class Worker
    {
        public Shared Shared = null!;
        public int Index;
        public long Faults;
        public long StartTicks;
        public long EndTicks;
        public double CpuSeconds;

        /// <summary>Whether <see cref="Faults"/> is the kernel's minor-fault count (otherwise the loop's own count).</summary>
        protected virtual bool CountsKernelFaults => true;

        protected abstract void Setup();

        /// <summary>Runs until the stop flag is seen; returns the pages touched (or frames zeroed).</summary>
        protected abstract long Loop();

        /// <summary>Releases whatever <see cref="Setup"/> acquired, including after a partial setup.</summary>
        protected abstract void Teardown();

        public void Main()
        {
            bool ready = false;
            try
            {
                Setup();
                ready = true;
            }
            catch (Exception e)
            {
                Shared.Fail(e);
            }

            Shared.Barrier.SignalAndWait();

            // Every worker's setup has finished once the barrier opens, so a failure is visible here.
            if (ready && Volatile.Read(ref Shared.Error) is null)
            {
                try
                {
                    StartTicks = Stopwatch.GetTimestamp();
                    HostMemory.Rusage before = HostMemory.ThreadUsage();
                    long touched = Loop();
                    HostMemory.Rusage after = HostMemory.ThreadUsage();
                    EndTicks = Stopwatch.GetTimestamp();
                    Faults = CountsKernelFaults ? after.MinFlt - before.MinFlt : touched;
                    CpuSeconds = HostMemory.CpuSeconds(after) - HostMemory.CpuSeconds(before);
                }
                catch (Exception e)
                {
                    Shared.Fail(e);
                }
            }

            try
            {
                Teardown();
            }
            catch (Exception e)
            {
                Shared.Fail(e);
            }
        }
    }

    private sealed class MultiFaultWorker : Worker
    {
        private byte* _map;
        private byte* _window;

        protected override void Setup()
        {
            _map = HostMemory.Map(MultiFaultMapSize);
            HostMemory.Advise(_map, MultiFaultMapSize, HostMemory.MADV_NOHUGEPAGE);
            // The first PMD-aligned 2 MiB window; an 8 MiB mapping always holds one.
            _window = (byte*)(((ulong)_map + PmdSize - 1) & ~(PmdSize - 1));
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        protected override long Loop()
        {
            Shared shared = Shared;
            int index = Index;
            byte* window = _window;
            byte* windowEnd = window + MultiFaultWindow;
            long touched = 0;
            while (!shared.Stop)
            {
                for (byte* c = window; c < windowEnd; c += PageSize)
                    *c = 0;
                HostMemory.Advise(window, MultiFaultWindow, HostMemory.MADV_DONTNEED);
                touched += (long)(MultiFaultWindow / PageSize);
                shared.Publish(index, touched);
            }
            return touched;
        }

        protected override void Teardown()
        {
            if (_map == null)
                return;
            HostMemory.Unmap(_map, MultiFaultMapSize);
            _map = null;
        }
    }

    private sealed class PageFault1Worker(ulong bytes) : Worker
    {
        protected override void Setup()
        {
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        protected override long Loop()
        {
            Shared shared = Shared;
            int index = Index;
            long touched = 0;
            while (!shared.Stop)
            {
                byte* map = HostMemory.Map(bytes);
                try
                {
                    HostMemory.Advise(map, bytes, HostMemory.MADV_NOHUGEPAGE);
                    byte* end = map + bytes;
                    byte* c = map;
                    while (c < end)
                    {
                        byte* chunkEnd = c + StopCheckPages * (long)PageSize;
                        for (; c < chunkEnd; c += PageSize)
                            *c = 0;
                        touched += StopCheckPages;
                        shared.Publish(index, touched);
                        if (shared.Stop)
                            break;
                    }
                }
                finally
                {
                    HostMemory.Unmap(map, bytes);
                }
            }
            return touched;
        }

        protected override void Teardown()
        {
        }
    }

    private sealed class CeilingWorker(ulong bufferBytes) : Worker
    {
        private byte* _buffer;

        protected override bool CountsKernelFaults => false;

        protected override void Setup()
        {
            _buffer = (byte*)NativeMemory.AlignedAlloc((nuint)bufferBytes, (nuint)PageSize);
            // Pre-touch so the loop measures zeroing alone, not the first-touch faults.
            NativeMemory.Fill(_buffer, (nuint)bufferBytes, 1);
        }

        [MethodImpl(MethodImplOptions.AggressiveOptimization)]
        protected override long Loop()
        {
            Shared shared = Shared;
            int index = Index;
            byte* buffer = _buffer;
            long frames = (long)(bufferBytes / PageSize);
            // A small buffer is swept whole between looks at the stop flag; a large one in 4096-frame steps.
            long chunk = Math.Min(frames, StopCheckPages);
            long frame = 0;
            long zeroed = 0;
            while (!shared.Stop)
            {
                for (long n = 0; n < chunk; n++)
                {
                    // The emulator's own clear_page, so the ceiling measures the primitive the
                    // emulated fault zeroes with (memset without NativeMemory.Clear's transition).
                    NativeMmu.Physical.PhysicalMemory.ClearPage(buffer + frame * (long)PageSize);
                    if (++frame == frames)
                        frame = 0;
                }
                zeroed += chunk;
                shared.Publish(index, zeroed);
            }
            return zeroed;
        }

        protected override void Teardown()
        {
            NativeMemory.AlignedFree(_buffer);   // null-safe
            _buffer = null;
        }
    }
}
