namespace NativeMmu.Cpus;

/// <summary>
/// The part of an mm the MMU and the TLB shootdown code see: the root table (CR3) and mm_cpumask.
/// The memory-management layer's mm_struct derives from it.
/// </summary>
public class MmContext
{
    /// <summary>The PGD frame loaded into CR3 by a CPU running this mm. Set once when the mm is built, before any CPU loads it.</summary>
    public ulong PgdPfn { get; protected set; }

    /// <summary>
    /// mm_cpumask: bit n set while CPU n may hold translations of this mm. Each CPU changes only its own
    /// bit, with Interlocked (switch_mm); flushers read the whole word with Volatile after a full fence,
    /// so a CPU whose bit they miss joined after the fence and walks the updated tables.
    /// </summary>
    internal ulong CpuMask;

    /// <summary>
    /// tlb_flush_pending: gathers in progress that batched a flush and have not done it yet. Incremented
    /// and decremented with Interlocked by the mmu_gather; read with Volatile by whoever must know
    /// whether another CPU's flush is still outstanding.
    /// </summary>
    internal int TlbFlushPending;

    /// <summary>Set once, with a Volatile store, when the address space is torn down: its tables may no longer be walked.</summary>
    internal int Dead;

    public bool IsDead => Volatile.Read(ref Dead) != 0;
}
