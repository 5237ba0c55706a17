using NativeMmu.Sync;

namespace NativeMmu.Cpu;

/// <summary>
/// Quiescent-state RCU over the emulated CPUs, for page-table frames. A CPU is inside a read-side
/// section while a hardware access is in flight (its access word is odd: the MMU walks tables without
/// locks) or while kernel code holds <see cref="Cpu.RcuReadLock"/> (pte_offset_map's lockless walkers).
/// A grace period snapshots both words of every CPU after a process-wide barrier and ends once every
/// CPU that was inside has left. Freed tables wait for one (tlb_remove_table → call_rcu); grace periods
/// are started a batch at a time, as the kernel's RCU amortises them. As in the kernel, a callback runs
/// on the CPU that queued it, so a freed table goes back to that CPU's free lists, cache-warm; one whose
/// CPU has not come for it by the end of the next grace period is run by whichever CPU polls.
/// </summary>
public sealed class Rcu
{
    private readonly Machine _m;
    private readonly Lock _lock = new();
    private ulong[] _pendingPfn = new ulong[256];
    private long[] _pendingGp = new long[256];
    private int[] _pendingCpu = new int[256];
    private int _count;
    private long _started, _completed;
    private readonly long[] _snapAccess, _snapRead;
    private ulong[] _ready = new ulong[256];

    internal Rcu(Machine m)
    {
        _m = m;
        _snapAccess = new long[m.Cpus.Length];
        _snapRead = new long[m.Cpus.Length];
    }

    /// <summary>How many queued callbacks start a grace period on their own.</summary>
    public int BatchThreshold { get; set; } = 32;

    /// <summary>What frees a table frame once its grace period is over (set by the page-table layer).</summary>
    public Action<Cpu, ulong>? FreeTable { get; set; }

    /// <summary>Callbacks queued and not yet run.</summary>
    public int Pending
    {
        get { lock (_lock) return _count; }
    }

    public long CompletedGracePeriods => Volatile.Read(ref _completed);

    /// <summary>call_rcu for a page-table frame: freed after a grace period that starts after this call.</summary>
    public void CallRcuFreeTable(Cpu self, ulong pfn)
    {
        lock (_lock)
        {
            if (_count == _pendingPfn.Length)
            {
                Array.Resize(ref _pendingPfn, _count * 2);
                Array.Resize(ref _pendingGp, _count * 2);
                Array.Resize(ref _pendingCpu, _count * 2);
            }
            _pendingPfn[_count] = pfn;
            _pendingGp[_count] = _started + 1;
            _pendingCpu[_count] = self.Id;
            _count++;
        }
        Poll(self);
    }

    /// <summary>Advances grace periods without waiting and runs the callbacks whose grace period ended.</summary>
    public void Poll(Cpu self, bool force = false)
    {
        if (self.InRcuReadSide) return;
        ulong[]? batch = null;
        int ready;
        lock (_lock)
        {
            if (_started > _completed && GracePeriodOver()) _completed = _started;
            if (_started == _completed && _count > 0 && (force || _count >= BatchThreshold)) StartGracePeriod();
            ready = TakeReady(self.Id, force);
            if (ready > 0)
            {
                batch = System.Buffers.ArrayPool<ulong>.Shared.Rent(ready);
                Array.Copy(_ready, batch, ready);
            }
        }
        if (batch is null) return;
        Action<Cpu, ulong> free = FreeTable ?? throw new InvalidOperationException("no RCU table-free callback installed");
        for (int i = 0; i < ready; i++) free(self, batch[i]);
        System.Buffers.ArrayPool<ulong>.Shared.Return(batch);
    }

    /// <summary>synchronize_rcu: returns once every read-side section in progress at the call has ended.</summary>
    public void Synchronize(Cpu self)
    {
        Bug.On(self.InRcuReadSide, "synchronize_rcu inside an RCU read-side section");
        long target;
        lock (_lock)
        {
            // A grace period already running may have snapshotted before a reader we must wait for.
            target = _started + 1;
            if (_started == _completed) StartGracePeriod();
        }
        var spin = new SpinWait();
        while (true)
        {
            lock (_lock)
            {
                if (_started > _completed && GracePeriodOver()) _completed = _started;
                if (_completed >= target) break;
                if (_started == _completed) StartGracePeriod();
            }
            self.ServiceInterrupts();
            spin.SpinOnce(sleep1Threshold: -1);
        }
        Poll(self);
    }

    /// <summary>rcu_barrier: every callback queued so far has run when this returns.</summary>
    public void Barrier(Cpu self)
    {
        long target;
        lock (_lock) target = _started + 1;
        while (true)
        {
            Synchronize(self);
            lock (_lock)
                if (_completed >= target && (_count == 0 || MaxPendingGp() <= _completed)) break;
        }
        Poll(self, force: true);
        lock (_lock) Bug.On(_count != 0, "rcu_barrier left {0} callbacks queued", _count);
    }

    private long MaxPendingGp()
    {
        long max = 0;
        for (int i = 0; i < _count; i++) max = Math.Max(max, _pendingGp[i]);
        return max;
    }

    /// <summary>Under _lock: a barrier so every CPU's odd words are visible, then the snapshot.</summary>
    private void StartGracePeriod()
    {
        Interlocked.MemoryBarrierProcessWide();
        Cpu[] cpus = _m.Cpus;
        for (int c = 0; c < cpus.Length; c++)
        {
            _snapAccess[c] = cpus[c].AccessSequence;
            _snapRead[c] = cpus[c].RcuSequence;
        }
        _started++;
    }

    /// <summary>Under _lock: every CPU that was inside a section at the snapshot has moved on.</summary>
    private bool GracePeriodOver()
    {
        Cpu[] cpus = _m.Cpus;
        for (int c = 0; c < cpus.Length; c++)
        {
            long a = _snapAccess[c], r = _snapRead[c];
            if ((a & 1) != 0 && cpus[c].AccessSequence == a) return false;
            if ((r & 1) != 0 && cpus[c].RcuSequence == r) return false;
        }
        return true;
    }

    /// <summary>Under _lock: moves the callbacks whose grace period completed into _ready.</summary>
    private int TakeReady(int cpu, bool any)
    {
        int ready = 0, keep = 0;
        for (int i = 0; i < _count; i++)
        {
            if (_pendingGp[i] <= _completed && (any || _pendingCpu[i] == cpu || _pendingGp[i] < _completed))
            {
                if (ready == _ready.Length) Array.Resize(ref _ready, ready * 2);
                _ready[ready++] = _pendingPfn[i];
            }
            else
            {
                _pendingPfn[keep] = _pendingPfn[i];
                _pendingGp[keep] = _pendingGp[i];
                _pendingCpu[keep] = _pendingCpu[i];
                keep++;
            }
        }
        _count = keep;
        return ready;
    }
}
