using Microsoft.Diagnostics.Tracing;

namespace NativeMmu.Monitor;

/// <summary>How an EventCounters payload reports its value.</summary>
public enum CounterKind
{
    /// <summary>A PollingCounter / EventCounter: the value is the interval's mean.</summary>
    Mean,
    /// <summary>An IncrementingPollingCounter / IncrementingEventCounter: the value is the interval's increment.</summary>
    Sum,
}

/// <summary>
/// One counter's value over one interval. For <see cref="CounterKind.Sum"/> counters <see cref="Value"/>
/// is a rate per second (the increment divided by the interval); for <see cref="CounterKind.Mean"/>
/// counters it is the reported mean.
/// </summary>
public sealed record CounterValue(string Name, string DisplayName, double Value, string Units, CounterKind Kind, double IntervalSec)
{
    /// <summary>
    /// The unit as shown to a person, spelled as dotnet-counters spells it so the two tools read alike:
    /// "Count / 1 sec" for a rate (the NativeMmu rates are per second), the counter's DisplayUnits otherwise.
    /// </summary>
    public string ShownUnits => Kind == CounterKind.Sum ? $"{(Units.Length > 0 ? Units : "Count")} / 1 sec" : Units;

    /// <summary>
    /// Reads an "EventCounters" event. Returns false for any other event, and for counters of another
    /// provider when <paramref name="provider"/> is given.
    /// </summary>
    public static bool TryParse(TraceEvent e, string? provider, out CounterValue value)
    {
        value = null!;
        if (e.EventName != "EventCounters") return false;
        if (provider is not null && !string.Equals(e.ProviderName, provider, StringComparison.Ordinal)) return false;
        if (e.PayloadNames.Length == 0 || e.PayloadValue(0) is not IDictionary<string, object> outer) return false;
        // The event's one field "Payload" is the counter's payload object; some readers present the
        // field itself as a dictionary with a "Payload" member.
        IDictionary<string, object> fields = outer.TryGetValue("Payload", out object? inner) && inner is IDictionary<string, object> d ? d : outer;
        if (!fields.TryGetValue("Name", out object? nameObj) || nameObj is not string name) return false;

        string displayName = fields.TryGetValue("DisplayName", out object? dn) && dn is string s && s.Length > 0 ? s : name;
        string units = fields.TryGetValue("DisplayUnits", out object? du) && du is string u ? u : "";
        double interval = fields.TryGetValue("IntervalSec", out object? iv) ? ToDouble(iv) : 1.0;
        if (!(interval > 0)) interval = 1.0;
        bool sum = fields.TryGetValue("CounterType", out object? ct) && ct is string type
            ? type == "Sum"
            : fields.ContainsKey("Increment");
        double v = sum
            ? (fields.TryGetValue("Increment", out object? inc) ? ToDouble(inc) : 0) / interval
            : fields.TryGetValue("Mean", out object? mean) ? ToDouble(mean) : 0;
        if (double.IsNaN(v) || double.IsInfinity(v)) v = 0;
        value = new CounterValue(name, displayName, v, units, sum ? CounterKind.Sum : CounterKind.Mean, interval);
        return true;
    }

    private static double ToDouble(object o) => o switch
    {
        double d => d,
        float f => f,
        IConvertible c => c.ToDouble(System.Globalization.CultureInfo.InvariantCulture),
        _ => 0,
    };
}

/// <summary>Every counter of the provider for one interval.</summary>
public sealed record CounterSnapshot(DateTimeOffset Time, int Pid, IReadOnlyList<CounterValue> Counters)
{
    public CounterValue? this[string name] => Counters.FirstOrDefault(c => c.Name == name);
}

/// <summary>
/// Groups the per-counter EventCounters events into per-interval snapshots. The runtime writes all of
/// a provider's counters back to back at each tick, so an interval ends when a counter's name comes
/// round again, when a counter was written more than half an interval after the first one of the
/// batch, or as soon as as many counters arrived as the largest interval seen so far held. (The
/// reader hands events over in bursts, so wall-clock gaps between arrivals say nothing; only the
/// events' own timestamps do.) The first interval is therefore emitted when the second begins.
/// </summary>
public sealed class CounterBatcher(int pid, Action<CounterSnapshot> onSnapshot, double intervalSec = 1)
{
    private readonly List<CounterValue> _current = [];
    private readonly HashSet<string> _names = [];
    private DateTimeOffset _time;
    private int _expected;

    /// <summary>Adds one counter's value; <paramref name="time"/> is when the runtime wrote it.</summary>
    public void Add(CounterValue value, DateTimeOffset time)
    {
        if (_current.Count > 0 && (_names.Contains(value.Name) || (time - _time).TotalSeconds > intervalSec / 2)) Flush();
        if (_current.Count == 0) _time = time;
        _current.Add(value);
        _names.Add(value.Name);
        if (_expected > 0 && _current.Count >= _expected) Flush();
    }

    /// <summary>Emits the interval gathered so far, if any.</summary>
    public void Flush()
    {
        if (_current.Count == 0) return;
        _expected = Math.Max(_expected, _current.Count);
        var snapshot = new CounterSnapshot(_time, pid, [.. _current]);
        _current.Clear();
        _names.Clear();
        onSnapshot(snapshot);
    }
}
