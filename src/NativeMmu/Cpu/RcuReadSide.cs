using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// The RCU read side of kernel code on this CPU (rcu_read_lock / rcu_read_unlock), for software walkers
/// that read page tables without their lock (pte_offset_map). The hardware walk needs none: its access
/// sequence is a read-side section of its own (see <see cref="Rcu"/>).
/// </summary>
public sealed unsafe partial class Cpu
{
    /// <summary>
    /// rcu_read_lock: a table the caller can reach is not freed until it leaves. Only the outermost
    /// lock publishes, with the same unfenced protocol as EnterAccess; the grace period's process-wide
    /// barrier supplies the other half.
    /// </summary>
    public void RcuReadLock()
    {
        if (_local[LocalRcuNesting]++ == 0) Volatile.Write(ref _shared[SharedRcuSeq], _shared[SharedRcuSeq] + 1);
    }

    /// <summary>rcu_read_unlock: the outermost unlock is a release store after the section's reads.</summary>
    public void RcuReadUnlock()
    {
        Bug.On(_local[LocalRcuNesting] == 0, "rcu_read_unlock without rcu_read_lock");
        if (--_local[LocalRcuNesting] == 0) Volatile.Write(ref _shared[SharedRcuSeq], _shared[SharedRcuSeq] + 1);
    }

    internal bool InRcuReadSide => _local[LocalRcuNesting] != 0;

    /// <summary>The RCU read-side sequence (odd inside a read-side section).</summary>
    internal long RcuSequence => Volatile.Read(ref _shared[SharedRcuSeq]);
}
