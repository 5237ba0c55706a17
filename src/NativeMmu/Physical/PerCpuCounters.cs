using System.Runtime.CompilerServices;

namespace NativeMmu.Physical;

/// <summary>
/// Per-CPU counter slots. Each CPU writes only its own slots (single writer, plain stores); readers
/// sum all slots without a lock, as percpu counters and vm_event_states are read.
/// </summary>
/// <remarks>
/// The counters sit in the physical layer because the page allocator counts pgalloc and pgfree; the
/// layers above count into the same rows. A slot is an aligned 8-byte word, so a reader never sees a
/// torn value, only one a few increments behind (the kernel's sums are as approximate). The owner's
/// plain add needs no ordering: no one infers anything about other memory from a counter's value.
/// </remarks>
public sealed class PerCpuCounters
{
    // One 512-byte row per CPU, starting one row in, so no CPU's row shares a line with another's
    // or with the array header every reader touches.
    private const int RowLongs = 64;
    private readonly long[] _slots;

    public PerCpuCounters(int cpus)
    {
        Cpus = cpus;
        _slots = new long[(cpus + 2) * RowLongs];
    }

    public int Cpus { get; }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int cpu, VmEvent e, long delta = 1) => _slots[(cpu + 1) * RowLongs + (int)e] += delta;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public void Add(int cpu, VmStat s, long delta) => _slots[(cpu + 1) * RowLongs + (int)VmEvent.Count + (int)s] += delta;

    public long Sum(VmEvent e) => Sum((int)e);
    public long Sum(VmStat s) => Sum((int)VmEvent.Count + (int)s);

    private long Sum(int index)
    {
        long total = 0;
        for (int c = 0; c < Cpus; c++) total += Volatile.Read(ref _slots[(c + 1) * RowLongs + index]);
        return total;
    }

    static PerCpuCounters()
    {
        if ((int)VmEvent.Count + (int)VmStat.Count > RowLongs) throw new InvalidOperationException("per-CPU counter row too small");
    }
}
