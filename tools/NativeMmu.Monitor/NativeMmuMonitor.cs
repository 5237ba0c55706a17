using System.Diagnostics.Tracing;
using Microsoft.Diagnostics.NETCore.Client;
using Microsoft.Diagnostics.Tracing;
using Microsoft.Diagnostics.Tracing.Parsers;

namespace NativeMmu.Monitor;

/// <summary>
/// Attaches to processes that publish the NativeMmu EventSource over the runtime's diagnostics IPC:
/// finds them, streams their counters and records traces.
/// </summary>
public static class NativeMmuMonitor
{
    public const string ProviderName = "NativeMmu";
    public const string SampleProfilerProvider = "Microsoft-DotNETCore-SampleProfiler";
    public const string RuntimeProvider = "Microsoft-Windows-DotNETRuntime";

    /// <summary>Every NativeMmu keyword: Fault 0x1, Zap 0x2, Fork 0x4, TableReclaim 0x8.</summary>
    public const long AllKeywords = 0xF;

    /// <summary>
    /// The counters-only provider: Informational, so the Verbose Fault and Zap events stay off and the
    /// emulator's hot paths see no listener; the runtime polls the counters every <paramref name="intervalSec"/>.
    /// </summary>
    public static EventPipeProvider CountersProvider(int intervalSec = 1)
        => new(ProviderName, EventLevel.Informational, 0,
            new Dictionary<string, string> { ["EventCounterIntervalSec"] = intervalSec.ToString(System.Globalization.CultureInfo.InvariantCulture) });

    /// <summary>
    /// What `record` asks for: NativeMmu at Verbose with <paramref name="keywords"/>, CPU samples, and
    /// the runtime's loader/JIT events (with the rundown at the end) that name the sampled methods.
    /// </summary>
    public static IReadOnlyList<EventPipeProvider> RecordProviders(long keywords = AllKeywords) =>
    [
        new(ProviderName, EventLevel.Verbose, keywords),
        new(SampleProfilerProvider, EventLevel.Informational, 0),
        new(RuntimeProvider, EventLevel.Informational, (long)ClrTraceEventParser.Keywords.Default),
    ];

    /// <summary>
    /// Does <paramref name="pid"/> publish the NativeMmu provider? A counters session is opened and
    /// the answer is yes once one NativeMmu EventCounters event arrives within <paramref name="timeout"/>.
    /// Any failure to connect is a no.
    /// </summary>
    public static async Task<bool> PublishesAsync(int pid, TimeSpan timeout, CancellationToken ct = default)
    {
        using var cts = CancellationTokenSource.CreateLinkedTokenSource(ct);
        cts.CancelAfter(timeout);
        var seen = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        try
        {
            await StreamAsync(pid, [CountersProvider(1)], e =>
            {
                if (CounterValue.TryParse(e, ProviderName, out _)) seen.TrySetResult();
            }, cts.Token, seen.Task).ConfigureAwait(false);
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            // Not a .NET process we can talk to, or it went away: it does not publish.
        }
        return seen.Task.IsCompletedSuccessfully;
    }

    /// <summary>The published processes (this one excluded) that publish the NativeMmu provider, probed in parallel.</summary>
    public static async Task<IReadOnlyList<TargetProcess>> FindPublishersAsync(TimeSpan probeTimeout, CancellationToken ct = default)
    {
        int[] pids = [.. Targets.Published()];
        bool[] found = await Task.WhenAll(pids.Select(p => PublishesAsync(p, probeTimeout, ct))).ConfigureAwait(false);
        return [.. pids.Where((_, i) => found[i]).Select(TargetProcess.Describe)];
    }

    /// <summary>
    /// Streams the NativeMmu counters of <paramref name="pid"/>, one <see cref="CounterSnapshot"/>
    /// per interval, until <paramref name="ct"/> is cancelled or the process goes away.
    /// </summary>
    public static async Task WatchCountersAsync(int pid, Action<CounterSnapshot> onSnapshot, CancellationToken ct, int intervalSec = 1)
    {
        var batcher = new CounterBatcher(pid, onSnapshot, intervalSec);
        await StreamAsync(pid, [CountersProvider(intervalSec)], e =>
        {
            if (CounterValue.TryParse(e, ProviderName, out CounterValue v)) batcher.Add(v, new DateTimeOffset(e.TimeStamp));
        }, ct).ConfigureAwait(false);
        batcher.Flush();
    }

    /// <summary>
    /// Runs an EventPipe session without rundown and hands every event to <paramref name="onEvent"/>
    /// until <paramref name="ct"/> is cancelled or <paramref name="done"/> completes, then stops the
    /// session and waits for the stream to drain (bounded).
    /// </summary>
    private static async Task StreamAsync(int pid, IReadOnlyList<EventPipeProvider> providers, Action<TraceEvent> onEvent, CancellationToken ct, Task? done = null)
    {
        var client = new DiagnosticsClient(pid);
        EventPipeSession session = await client.StartEventPipeSessionAsync(providers, requestRundown: false, circularBufferMB: 16, ct).ConfigureAwait(false);
        using (session)
        {
            Task processing = Task.Run(() =>
            {
                using var source = new EventPipeEventSource(session.EventStream);
                source.Dynamic.All += onEvent;
                source.Process();
            }, CancellationToken.None);

            var cancelled = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            using (ct.Register(() => cancelled.TrySetResult()))
            {
                Task[] waits = done is null ? [processing, cancelled.Task] : [processing, cancelled.Task, done];
                await Task.WhenAny(waits).ConfigureAwait(false);
            }
            if (!processing.IsCompleted) await StopAsync(session, processing).ConfigureAwait(false);
            try { await processing.ConfigureAwait(false); }
            catch (Exception) when (ct.IsCancellationRequested || done is { IsCompleted: true }) { }
        }
    }

    /// <summary>Asks the runtime to end the session; if the stream has not ended 5 s later, drops it.</summary>
    private static async Task StopAsync(EventPipeSession session, Task processing)
    {
        using var stopTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(5));
        try { await session.StopAsync(stopTimeout.Token).ConfigureAwait(false); }
        catch (Exception) { /* the process may already be gone; the stream then ends by itself */ }
        if (await Task.WhenAny(processing, Task.Delay(TimeSpan.FromSeconds(5), CancellationToken.None)).ConfigureAwait(false) != processing)
            session.Dispose(); // closes the stream: the reader ends with an exception the caller ignores
    }

    /// <summary>
    /// Records <paramref name="duration"/> of <paramref name="pid"/> into <paramref name="path"/> (a
    /// .nettrace) with <see cref="RecordProviders"/>, rundown included. Ends early if the process exits
    /// or <paramref name="ct"/> is cancelled. Returns the bytes written.
    /// </summary>
    public static async Task<long> RecordAsync(int pid, string path, TimeSpan duration, long keywords = AllKeywords, CancellationToken ct = default)
    {
        var client = new DiagnosticsClient(pid);
        using EventPipeSession session = await client.StartEventPipeSessionAsync(RecordProviders(keywords), requestRundown: true, circularBufferMB: 256, ct).ConfigureAwait(false);
        await using (var file = new FileStream(path, FileMode.Create, FileAccess.Write, FileShare.Read, 1 << 16, useAsync: true))
        {
            Task copy = session.EventStream.CopyToAsync(file, CancellationToken.None);
            try { await Task.WhenAny(copy, Task.Delay(duration, ct)).ConfigureAwait(false); }
            finally
            {
                if (!copy.IsCompleted)
                {
                    // Stop: the runtime writes the rundown (method names for the samples) and ends the stream.
                    using var stopTimeout = new CancellationTokenSource(TimeSpan.FromSeconds(10));
                    try { await session.StopAsync(stopTimeout.Token).ConfigureAwait(false); }
                    catch (Exception) { }
                    // Rundown of a large process can take a while; give it a generous bound.
                    if (await Task.WhenAny(copy, Task.Delay(TimeSpan.FromSeconds(60), CancellationToken.None)).ConfigureAwait(false) != copy)
                        session.Dispose();
                }
                try { await copy.ConfigureAwait(false); }
                catch (Exception) when (ct.IsCancellationRequested) { }
                catch (IOException) { /* the stream was cut; what arrived is on disk */ }
                catch (ObjectDisposedException) { }
            }
            return file.Length;
        }
    }
}
