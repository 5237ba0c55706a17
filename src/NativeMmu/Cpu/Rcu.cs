using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// Quiescent-state RCU over the emulated CPUs, for page-table frames. A CPU is inside a read-side
/// section while a hardware access is in flight (its access word is odd: the MMU walks tables without
/// locks) or while kernel code holds <see cref="Cpu.RcuReadLock"/> (pte_offset_map's lockless walkers).
/// A grace period snapshots both words of every CPU after a process-wide barrier and ends once every
/// CPU that was inside has left. Freed tables wait for one (tlb_remove_table → call_rcu).
/// </summary>
/// <remarks>
/// As in kernel/rcu/tree.c, callbacks are queued per CPU (rcu_data's callback list) and run on the CPU
/// that queued them, so a freed table goes back to that CPU's free lists, cache-warm, and call_rcu
/// touches no line another CPU writes. Only the grace-period state is shared, and a CPU takes its lock
/// only once it has <see cref="BatchThreshold"/> callbacks waiting: grace periods, each paid for with a
/// process-wide barrier (about 6 µs here, and an interrupt on every other CPU), are started a batch at a
/// time, as the kernel's RCU amortises them. A callback whose CPU has not come for it by the end of the
/// next grace period (its thread went away, or is parked) is run by whichever CPU completes that one.
/// </remarks>
public sealed class Rcu
{
    private readonly Platform _m;
    /// <summary>Guards the snapshots and <see cref="_completed"/>; taken to start or end a grace period.</summary>
    private readonly Lock _gpLock = new();
    /// <summary>Grace periods started: bumped under _gpLock before the start's barrier (see CallRcuFreeTable); read without it.</summary>
    private long _started;
    /// <summary>Grace periods completed: written under _gpLock, read without it.</summary>
    private long _completed;
    private readonly long[] _snapAccess, _snapRead;
    private readonly CpuCallbacks[] _queues;

    internal Rcu(Platform m)
    {
        _m = m;
        _snapAccess = new long[m.Cpus.Length];
        _snapRead = new long[m.Cpus.Length];
        _queues = new CpuCallbacks[m.Cpus.Length];
        for (int c = 0; c < _queues.Length; c++) _queues[c] = new CpuCallbacks();
    }

    /// <summary>How many callbacks queued on one CPU make it drive grace periods.</summary>
    public int BatchThreshold { get; set; } = 64;

    /// <summary>What frees a table frame once its grace period is over (set by the page-table layer).</summary>
    public Action<Cpu, ulong>? FreeTable { get; set; }

    /// <summary>Callbacks queued and not yet run, on every CPU.</summary>
    public int Pending
    {
        get
        {
            int n = 0;
            foreach (CpuCallbacks q in _queues)
                lock (q.Lock) n += q.Count;
            return n;
        }
    }

    public long CompletedGracePeriods => Volatile.Read(ref _completed);

    /// <summary>call_rcu for a page-table frame: freed after a grace period that starts after this call.</summary>
    /// <remarks>
    /// The table was unlinked (and the TLBs flushed) before the fence here; a grace period's start bumps
    /// _started before its own barrier and snapshot. Reading the old count therefore means the unlink was
    /// visible before that grace period's barrier, which then covers every walker that could have seen
    /// the table; reading the new count (a start under way, its snapshot perhaps taken before the unlink)
    /// waits for the one after.
    /// </remarks>
    public void CallRcuFreeTable(Cpu self, ulong pfn)
    {
        Interlocked.MemoryBarrier();
        long gp = Volatile.Read(ref _started) + 1;
        CpuCallbacks q = _queues[self.Id];
        lock (q.Lock) q.Enqueue(pfn, gp);
        Poll(self);
    }

    /// <summary>
    /// rcu_core on this CPU: with a batch waiting, end the grace period in progress if it is over and
    /// start the next; then run this CPU's callbacks whose grace period has ended. Never waits.
    /// </summary>
    public void Poll(Cpu self)
    {
        if (self.InRcuReadSide) return;
        CpuCallbacks q = _queues[self.Id];
        int waiting = Volatile.Read(ref q.Count); // only this CPU adds to its queue
        if (waiting == 0) return;
        if (waiting >= BatchThreshold) Advance(self);
        RunReady(self, q, Volatile.Read(ref _completed));
    }

    /// <summary>synchronize_rcu: returns once every read-side section in progress at the call has ended.</summary>
    public void Synchronize(Cpu self)
    {
        Bug.On(self.InRcuReadSide, "synchronize_rcu inside an RCU read-side section");
        long target;
        lock (_gpLock)
        {
            // A grace period already running may have snapshotted before a reader we must wait for.
            target = _started + 1;
            if (_started == _completed) StartGracePeriod();
        }
        var spin = new SpinWait();
        while (Volatile.Read(ref _completed) < target)
        {
            Advance(self);
            if (Volatile.Read(ref _completed) >= target) break;
            self.ServiceInterrupts();
            spin.SpinOnce(sleep1Threshold: -1);
        }
        RunReady(self, _queues[self.Id], Volatile.Read(ref _completed));
    }

    /// <summary>rcu_barrier: every callback queued so far has run when this returns.</summary>
    public void Barrier(Cpu self)
    {
        while (true)
        {
            long need = 0;
            foreach (CpuCallbacks q in _queues)
                lock (q.Lock)
                    if (q.Count > 0) need = Math.Max(need, q.NewestGp);
            if (need == 0) break;
            while (Volatile.Read(ref _completed) < need) Synchronize(self);
            long completed = Volatile.Read(ref _completed);
            foreach (CpuCallbacks q in _queues) RunReady(self, q, completed);
        }
        Bug.On(Pending != 0, "rcu_barrier left {0} callbacks queued", Pending);
    }

    /// <summary>
    /// Ends the grace period in progress if every CPU has left the sections it was in at the snapshot,
    /// and begins the next when none is running. The CPU that ends one also runs the callbacks other
    /// CPUs left unclaimed for a whole grace period.
    /// </summary>
    private void Advance(Cpu self)
    {
        long ended = 0;
        lock (_gpLock)
        {
            if (_started > _completed && GracePeriodOver())
            {
                Volatile.Write(ref _completed, _started);
                ended = _completed;
            }
            if (_started == _completed) StartGracePeriod();
        }
        if (ended == 0) return;
        foreach (CpuCallbacks q in _queues)
            if (q != _queues[self.Id] && Volatile.Read(ref q.Count) > 0) RunReady(self, q, ended - 1);
    }

    /// <summary>Runs, on <paramref name="self"/>, the callbacks of <paramref name="q"/> whose grace period is at most <paramref name="upTo"/>.</summary>
    private void RunReady(Cpu self, CpuCallbacks q, long upTo)
    {
        ulong[] batch;
        int n;
        CpuCallbacks mine = _queues[self.Id];
        lock (q.Lock)
        {
            if (q.Count == 0 || q.OldestGp > upTo) return;
            n = q.DequeueReady(upTo, ref mine.Scratch);
            batch = mine.Scratch;
        }
        Action<Cpu, ulong> free = FreeTable ?? throw new InvalidOperationException("no RCU table-free callback installed");
        for (int i = 0; i < n; i++) free(self, batch[i]);
    }

    /// <summary>Under _gpLock: bump _started, a barrier so every CPU's odd words are visible, then the snapshot.</summary>
    private void StartGracePeriod()
    {
        Interlocked.Increment(ref _started);
        Interlocked.MemoryBarrierProcessWide();
        Cpu[] cpus = _m.Cpus;
        for (int c = 0; c < cpus.Length; c++)
        {
            _snapAccess[c] = cpus[c].AccessSequence;
            _snapRead[c] = cpus[c].RcuSequence;
        }
    }

    /// <summary>Under _gpLock: every CPU that was inside a section at the snapshot has moved on.</summary>
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

    /// <summary>
    /// One CPU's callbacks (rcu_data's list), a ring in the order queued, so their grace periods never
    /// decrease. The owner adds; the owner, a CPU ending a grace period or rcu_barrier take; all under
    /// <see cref="Lock"/>, which only the owner takes in the common case. <see cref="Scratch"/> belongs
    /// to the CPU itself, for the callbacks it runs.
    /// </summary>
    private sealed class CpuCallbacks
    {
        public readonly Lock Lock = new();
        public int Count;
        public ulong[] Scratch = new ulong[64];
        private ulong[] _pfn = new ulong[128];
        private long[] _gp = new long[128];
        private int _head;

        public long OldestGp => _gp[_head];
        public long NewestGp => _gp[(_head + Count - 1) & (_gp.Length - 1)];

        public void Enqueue(ulong pfn, long gp)
        {
            if (Count == _pfn.Length) Grow();
            int i = (_head + Count) & (_pfn.Length - 1);
            _pfn[i] = pfn;
            _gp[i] = gp;
            Count++;
        }

        /// <summary>Moves the leading callbacks with a grace period of at most upTo into scratch; returns how many.</summary>
        public int DequeueReady(long upTo, ref ulong[] scratch)
        {
            int n = 0, mask = _pfn.Length - 1;
            while (n < Count && _gp[(_head + n) & mask] <= upTo) n++;
            if (scratch.Length < n) scratch = new ulong[_pfn.Length];
            for (int i = 0; i < n; i++) scratch[i] = _pfn[(_head + i) & mask];
            _head = (_head + n) & mask;
            Count -= n;
            return n;
        }

        private void Grow()
        {
            var pfn = new ulong[_pfn.Length * 2];
            var gp = new long[_gp.Length * 2];
            for (int i = 0; i < Count; i++)
            {
                pfn[i] = _pfn[(_head + i) & (_pfn.Length - 1)];
                gp[i] = _gp[(_head + i) & (_gp.Length - 1)];
            }
            _pfn = pfn;
            _gp = gp;
            _head = 0;
        }
    }
}
