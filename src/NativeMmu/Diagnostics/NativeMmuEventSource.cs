using System.Diagnostics.Tracing;
using NativeMmu.Cpus;
using NativeMmu.Physical;

namespace NativeMmu.Diagnostics;

/// <summary>What kind of fault handle_mm_fault resolved (the "kind" field of the Fault event).</summary>
public enum FaultKind
{
    /// <summary>do_anonymous_page, write: a fresh zeroed frame.</summary>
    AnonZeroFill = 1,
    /// <summary>do_anonymous_page, read: the shared zero page.</summary>
    ZeroPage = 2,
    /// <summary>do_wp_page → wp_page_reuse.</summary>
    WpReuse = 3,
    /// <summary>do_wp_page → wp_page_copy.</summary>
    WpCopy = 4,
    /// <summary>A PMD-level (huge) fault.</summary>
    Huge = 5,
    /// <summary>Nothing to do: another CPU got there first, or only the access flags changed.</summary>
    Spurious = 6,
}

/// <summary>
/// The "NativeMmu" EventSource. It sits between the CPU layer and the memory-management layer: it reads
/// a <see cref="Platform"/>'s counters and allocator, and Mm raises its events. Counters are
/// PollingCounters over the kernel's own per-CPU counters: they are summed once per interval and only
/// while a listener has asked for them, so an unobserved emulator pays nothing. Events are Verbose and behind keywords; the hot paths test
/// <see cref="FaultEventsEnabled"/> (one field read) before building one.
/// </summary>
[EventSource(Name = "NativeMmu")]
public sealed class NativeMmuEventSource : EventSource
{
    public static readonly NativeMmuEventSource Log = new();

    public static class Keywords
    {
        public const EventKeywords Fault = (EventKeywords)0x1;
        public const EventKeywords Zap = (EventKeywords)0x2;
        public const EventKeywords Fork = (EventKeywords)0x4;
        public const EventKeywords Reclaim = (EventKeywords)0x8;
    }

    /// <summary>The machines registered, under a lock on the list itself (registration and the counters' polling thread).</summary>
    private readonly List<Platform> _machines = [];
    private readonly List<DiagnosticCounter> _counters = [];
    // Cached by OnEventCommand, read by the hot paths.
    private volatile bool _faultEvents, _zapEvents, _forkEvents, _reclaimEvents;

    private NativeMmuEventSource() : base(EventSourceSettings.EtwSelfDescribingEventFormat) { }

    public bool FaultEventsEnabled => _faultEvents;
    public bool ZapEventsEnabled => _zapEvents;
    public bool ForkEventsEnabled => _forkEvents;
    public bool ReclaimEventsEnabled => _reclaimEvents;

    // Every instance method that returns void and is not marked [NonEvent] is taken for an event (with
    // the next free ID), so the helpers below must say they are not events.
    [NonEvent]
    internal void Register(Platform m)
    {
        lock (_machines) _machines.Add(m);
    }

    [NonEvent]
    internal void Unregister(Platform m)
    {
        lock (_machines) _machines.Remove(m);
    }

    private double Sum(Func<Platform, double> f)
    {
        double total = 0;
        lock (_machines) foreach (Platform m in _machines) total += f(m);
        return total;
    }

    private double Events(VmEvent e) => Sum(m => m.Counters.Sum(e));

    protected override void OnEventCommand(EventCommandEventArgs command)
    {
        _faultEvents = IsEnabled(EventLevel.Verbose, Keywords.Fault);
        _zapEvents = IsEnabled(EventLevel.Verbose, Keywords.Zap);
        _forkEvents = IsEnabled(EventLevel.Verbose, Keywords.Fork);
        _reclaimEvents = IsEnabled(EventLevel.Verbose, Keywords.Reclaim);
        if (command.Command != EventCommand.Enable) return;
        lock (_counters)
        {
            if (_counters.Count > 0) return;
            Rate("page-faults", "Page faults", VmEvent.Pgfault);
            Rate("faults-anon-zero-fill", "Faults: anonymous zero-fill", VmEvent.FaultAnonZeroFill);
            Rate("faults-zero-page", "Faults: zero page mapped", VmEvent.FaultZeroPage);
            Rate("faults-wp-reuse", "Faults: write-protect reuse", VmEvent.FaultWpReuse);
            Rate("faults-wp-copy", "Faults: write-protect copy", VmEvent.FaultWpCopy);
            Rate("faults-huge", "Faults: huge (PMD)", VmEvent.FaultHuge);
            Rate("tlb-flushes", "TLB flushes (local, full and single)", VmEvent.NrTlbLocalFlushAll, VmEvent.NrTlbLocalFlushOne);
            Rate("tlb-ipis", "TLB shootdown IPIs received", VmEvent.NrTlbRemoteFlushReceived);
            Rate("zapped-pages", "Pages zapped", VmEvent.ZapPages);
            Rate("pgtables-allocated", "Page tables allocated", VmEvent.PgtableAlloc);
            Rate("pgtables-freed", "Page tables freed", VmEvent.PgtableFree);
            Rate("deferred-splits", "Folios queued for deferred split", VmEvent.ThpDeferredSplitPage);
            Rate("pt-reclaim", "Empty PTE tables reclaimed", VmEvent.PtReclaim);
            Gauge("rss-kb", "Anonymous RSS (all processes)", "kB", () => Sum(m => m.Counters.Sum(VmStat.NrAnonPages)) * 4);
            Gauge("vmpte-kb", "Page tables (all levels)", "kB", () => Sum(m => m.Counters.Sum(VmStat.NrPageTablePages)) * 4);
            Gauge("free-frames", "Free frames", "frames", () => Sum(m => m.Allocator.FreeFrames));
        }
    }

    [NonEvent]
    private void Rate(string name, string display, params VmEvent[] events)
        => _counters.Add(new IncrementingPollingCounter(name, this, () => events.Sum(Events)) { DisplayName = display, DisplayRateTimeScale = TimeSpan.FromSeconds(1) });

    [NonEvent]
    private void Gauge(string name, string display, string units, Func<double> value)
        => _counters.Add(new PollingCounter(name, this, value) { DisplayName = display, DisplayUnits = units });

    /// <summary>One resolved page fault: CR2, the PFN now mapped (0 if none), the x86 error code and the kind.</summary>
    [Event(1, Level = EventLevel.Verbose, Keywords = Keywords.Fault)]
    public void Fault(ulong Address, ulong Pfn, uint ErrorCode, int Kind, int Cpu) => WriteEvent(1, Address, Pfn, ErrorCode, Kind, Cpu);

    /// <summary>A zap of [Start, End) that released Pages pages.</summary>
    [Event(2, Level = EventLevel.Verbose, Keywords = Keywords.Zap)]
    public void Zap(ulong Start, ulong End, long Pages, int Cpu) => WriteEvent(2, Start, End, Pages, Cpu);

    /// <summary>A fork: parent and child pids and the VMAs copied.</summary>
    [Event(3, Level = EventLevel.Verbose, Keywords = Keywords.Fork)]
    public void Fork(int ParentPid, int ChildPid, int Vmas) => WriteEvent(3, ParentPid, ChildPid, Vmas);

    /// <summary>An empty PTE table removed from the PMD at Address.</summary>
    [Event(4, Level = EventLevel.Verbose, Keywords = Keywords.Reclaim)]
    public void TableReclaim(ulong Address, ulong TablePfn, int Cpu) => WriteEvent(4, Address, TablePfn, Cpu);
}
