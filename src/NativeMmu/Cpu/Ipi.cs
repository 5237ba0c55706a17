using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Physical;
using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// The access boundaries and the flush mailbox: the receiving half of a TLB shootdown (the sending half
/// is <see cref="TlbFlush"/>). A flush IPI is a post to this CPU's mailbox, taken at the next access
/// boundary or wherever its kernel code takes interrupts.
/// </summary>
public sealed unsafe partial class Cpu
{
    /// <summary>This CPU's interrupt entry for waits in kernel code (one delegate, made once).</summary>
    internal Action InterruptHandler => _interruptHandler ??= ServiceInterrupts;
    private Action? _interruptHandler;

    /// <summary>
    /// Start of an access: odd sequence, then drain the mailbox. No fence here: the store may still sit
    /// in this CPU's store buffer when the mailbox is read, so a flusher first posts, then runs a
    /// process-wide barrier (membarrier), which drains every CPU's store buffer, then reads the sequence.
    /// Either the flusher sees the odd sequence and waits, or this CPU's read sees the posted flush.
    /// Volatile accesses are not reordered with each other by the JIT, only by the hardware, which is
    /// what the barrier covers (the runtime's own GC suspension relies on the same pairing).
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void EnterAccess()
    {
        Volatile.Write(ref _shared[SharedAccessSeq], _shared[SharedAccessSeq] + 1);
        if (Volatile.Read(ref _shared[MailboxPending]) != 0) DrainMailbox();
    }

    /// <summary>End of an access: even sequence, released after the access's memory operations.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ExitAccess() => Volatile.Write(ref _shared[SharedAccessSeq], _shared[SharedAccessSeq] + 1);

    /// <summary>Whether an access is in flight, and its sequence number.</summary>
    internal long AccessSequence => Volatile.Read(ref _shared[SharedAccessSeq]);

    /// <summary>
    /// Posts a flush of [start, end) (end == ulong.MaxValue: everything) to this CPU. Called by another CPU;
    /// returns the request number that <see cref="FlushAcked"/> reports once this CPU has drained it.
    /// </summary>
    /// <remarks>
    /// The range and the request count are written under the mailbox lock; the pending flag is stored
    /// last, with a Volatile (release) store, so the owner's lock-free read of it in EnterAccess that
    /// sees 1 finds the range of this request (or a later, merged one) once it takes the lock.
    /// </remarks>
    internal long PostFlush(ulong start, ulong end)
    {
        int* lockWord = (int*)&_shared[MailboxLock];
        Spin.LockIrqsave(lockWord);
        if (_shared[MailboxPending] != 0)
        {
            _shared[MailboxStart] = (long)Math.Min((ulong)_shared[MailboxStart], start);
            _shared[MailboxEnd] = (long)Math.Max((ulong)_shared[MailboxEnd], end);
        }
        else
        {
            _shared[MailboxStart] = (long)start;
            _shared[MailboxEnd] = (long)end;
        }
        long request = ++_shared[MailboxPosted];
        Volatile.Write(ref _shared[MailboxPending], 1);
        Spin.Unlock(lockWord);
        return request;
    }

    /// <summary>
    /// Whether this CPU has drained flush request <paramref name="request"/>. It drains at its next
    /// access boundary (or where its kernel code takes interrupts), so an acknowledged flush also means
    /// any access that was in flight when it was posted has retired.
    /// </summary>
    internal bool FlushAcked(long request) => Volatile.Read(ref _shared[MailboxDrained]) >= request;

    /// <summary>flush_tlb_func on the receiving CPU.</summary>
    /// <remarks>
    /// The range is taken and the pending flag cleared under the mailbox lock, so a post that races
    /// with the drain either lands before it (and is flushed now) or sets the flag again afterwards.
    /// The acknowledgement is a release store after the local flush: a sender that reads it may rely
    /// on this CPU no longer holding any translation the request covered.
    /// </remarks>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private void DrainMailbox()
    {
        int* lockWord = (int*)&_shared[MailboxLock];
        Spin.LockIrqsave(lockWord);
        ulong start = (ulong)_shared[MailboxStart], end = (ulong)_shared[MailboxEnd];
        long request = _shared[MailboxPosted];
        Volatile.Write(ref _shared[MailboxPending], 0);
        Spin.Unlock(lockWord);
        _counters.Add(Id, VmEvent.NrTlbRemoteFlushReceived);
        FlushRangeLocal(start, end, Geometry.PageShift);
        Volatile.Write(ref _shared[MailboxDrained], request); // the acknowledgement, after the flush
    }

    /// <summary>
    /// Takes pending flush IPIs now: called where kernel code runs with interrupts enabled (fault entry,
    /// between zapped tables) and while waiting on other CPUs. Only the owning thread may call it.
    /// </summary>
    public void ServiceInterrupts()
    {
        if (Volatile.Read(ref _shared[MailboxPending]) == 0 || _local[LocalInInterrupt] != 0) return;
        _local[LocalInInterrupt] = 1; // interrupts are off while the handler runs: no nesting
        DrainMailbox();
        _local[LocalInInterrupt] = 0;
    }
}
