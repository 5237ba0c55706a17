using Microsoft.Diagnostics.Tracing;
using Microsoft.Diagnostics.Tracing.Etlx;

namespace NativeMmu.Monitor;

/// <summary>A method and how many CPU samples had it as their leaf (innermost named) frame.</summary>
public sealed record HotFrame(string Method, long Samples);

/// <summary>
/// What a .nettrace holds, for a person: NativeMmu events by kind, and the leaf methods the CPU samples
/// fell in. Read with TraceEvent's TraceLog, which resolves the sampled addresses to methods from the
/// runtime's JIT and rundown events in the same trace.
/// </summary>
public sealed class TraceSummary
{
    /// <summary>The Kind field of the Fault event (NativeMmu.Diagnostics.FaultKind).</summary>
    public static readonly IReadOnlyDictionary<int, string> FaultKinds = new Dictionary<int, string>
    {
        [1] = "AnonZeroFill", [2] = "ZeroPage", [3] = "WpReuse", [4] = "WpCopy", [5] = "Huge", [6] = "Spurious",
    };

    public long TotalEvents { get; private set; }
    public long LostEvents { get; private set; }
    public double DurationSec { get; private set; }
    /// <summary>Fault events by kind name ("Kind7" for a kind this reader does not know).</summary>
    public SortedDictionary<string, long> FaultsByKind { get; } = new(StringComparer.Ordinal);
    public long Faults => FaultsByKind.Values.Sum();
    public long Zaps { get; private set; }
    public long ZappedPages { get; private set; }
    /// <summary>Every NativeMmu event by name (Fault, Zap, Fork, TableReclaim, EventCounters...).</summary>
    public SortedDictionary<string, long> NativeMmuEvents { get; } = new(StringComparer.Ordinal);
    /// <summary>Samples taken while the thread ran managed code.</summary>
    public long CpuSamples { get; private set; }
    /// <summary>Samples of threads outside managed code (waiting, or in native code).</summary>
    public long ExternalSamples { get; private set; }
    public IReadOnlyList<HotFrame> HotFrames { get; private set; } = [];

    /// <summary>Reads <paramref name="nettracePath"/> (converting it to a temporary .etlx beside nothing else).</summary>
    public static TraceSummary Read(string nettracePath, int topFrames = 10)
    {
        string etlx = Path.Combine(Path.GetTempPath(), $"nativemmu-{Environment.ProcessId}-{Guid.NewGuid():N}.etlx");
        try
        {
            TraceLog.CreateFromEventPipeDataFile(nettracePath, etlx);
            using var log = new TraceLog(etlx);
            var summary = new TraceSummary
            {
                TotalEvents = log.EventCount,
                LostEvents = log.EventsLost,
                DurationSec = log.SessionDuration.TotalSeconds,
            };
            summary.Scan(log, topFrames);
            return summary;
        }
        finally
        {
            try { File.Delete(etlx); } catch (IOException) { }
        }
    }

    private void Scan(TraceLog log, int topFrames)
    {
        var leaves = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (TraceEvent e in log.Events)
        {
            if (e.ProviderName == NativeMmuMonitor.ProviderName)
            {
                string name = e.EventName ?? $"EventID({(int)e.ID})";
                NativeMmuEvents[name] = NativeMmuEvents.GetValueOrDefault(name) + 1;
                if (name == "Fault")
                {
                    int kind = Convert.ToInt32(e.PayloadByName("Kind"), System.Globalization.CultureInfo.InvariantCulture);
                    string kindName = FaultKinds.TryGetValue(kind, out string? k) ? k : $"Kind{kind}";
                    FaultsByKind[kindName] = FaultsByKind.GetValueOrDefault(kindName) + 1;
                }
                else if (name == "Zap")
                {
                    Zaps++;
                    ZappedPages += Convert.ToInt64(e.PayloadByName("Pages"), System.Globalization.CultureInfo.InvariantCulture);
                }
            }
            else if (e.ProviderName == NativeMmuMonitor.SampleProfilerProvider && e.EventName is { } en && en.Contains("Sample", StringComparison.Ordinal))
            {
                // ThreadSample's Type: 1 External (outside managed code: blocked or native), 2 Managed.
                object? type = e.PayloadNames.Contains("Type") ? e.PayloadByName("Type") : null;
                if (type is not null && Convert.ToInt32(type, System.Globalization.CultureInfo.InvariantCulture) != 2)
                {
                    ExternalSamples++;
                    continue;
                }
                CpuSamples++;
                string leaf = LeafMethod(e.CallStack());
                leaves[leaf] = leaves.GetValueOrDefault(leaf) + 1;
            }
        }
        HotFrames = [.. leaves.OrderByDescending(kv => kv.Value).ThenBy(kv => kv.Key, StringComparer.Ordinal)
                              .Take(topFrames).Select(kv => new HotFrame(kv.Key, kv.Value))];
    }

    /// <summary>
    /// The innermost frame with a method name, without its parameter list (overloads are merged);
    /// "module!?" for an unnamed native frame when nothing on the stack is named.
    /// </summary>
    private static string LeafMethod(TraceCallStack? stack)
    {
        string? firstUnnamed = null;
        for (TraceCallStack? s = stack; s is not null; s = s.Caller)
        {
            TraceCodeAddress a = s.CodeAddress;
            string method = a.FullMethodName;
            if (!string.IsNullOrEmpty(method))
            {
                int args = method.IndexOf('(', StringComparison.Ordinal);
                return args > 0 ? method[..args] : method;
            }
            firstUnnamed ??= $"{a.ModuleName}!?";
        }
        return firstUnnamed ?? "(no stack)";
    }

    public void Print(TextWriter w)
    {
        w.WriteLine($"Trace: {DurationSec:F1} s, {TotalEvents:N0} events{(LostEvents > 0 ? $", {LostEvents:N0} lost" : "")}");
        w.WriteLine();
        w.WriteLine("NativeMmu events:");
        if (NativeMmuEvents.Count == 0) w.WriteLine("  (none)");
        w.WriteLine($"  {"Fault",-22}{Faults,14:N0}");
        foreach ((string kind, long n) in FaultsByKind.OrderByDescending(kv => kv.Value))
            w.WriteLine($"    {kind,-20}{n,14:N0}");
        w.WriteLine($"  {"Zap",-22}{Zaps,14:N0}   ({ZappedPages:N0} pages)");
        foreach ((string name, long n) in NativeMmuEvents.Where(kv => kv.Key is not "Fault" and not "Zap"))
            w.WriteLine($"  {name,-22}{n,14:N0}");
        w.WriteLine();
        w.WriteLine($"CPU samples: {CpuSamples:N0} in managed code ({ExternalSamples:N0} more outside it, not counted)");
        w.WriteLine($"Hottest leaf methods (top {HotFrames.Count}):");
        foreach (HotFrame f in HotFrames)
        {
            double pct = CpuSamples > 0 ? 100.0 * f.Samples / CpuSamples : 0;
            w.WriteLine($"  {f.Samples,10:N0} {pct,6:F1}%  {f.Method}");
        }
    }
}
