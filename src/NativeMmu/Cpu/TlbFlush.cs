using NativeMmu.Arch.X86;
using NativeMmu.Physical;

namespace NativeMmu.Cpus;

/// <summary>arch/x86/mm/tlb.c: flushing an mm's translations on every CPU that may hold them.</summary>
public static class TlbFlush
{
    /// <summary>
    /// flush_tlb_mm_range: flush locally, post the flush to every other CPU in mm_cpumask, and wait for
    /// those with an access in flight to retire it (see <see cref="Cpu"/> for the protocol).
    /// </summary>
    public static void FlushMmRange(Cpu self, MmContext mm, ulong start, ulong end, int strideShift, bool freedTables)
    {
        _ = freedTables; // paging-structure caches are flushed with the range on this CPU model
        if (ReferenceEquals(self.LoadedMm, mm)) self.FlushRangeLocal(start, end, strideShift);

        // The page-table updates being flushed happened before this fence; any CPU joining the mask
        // after it will walk the updated tables.
        Interlocked.MemoryBarrier();
        ulong others = Volatile.Read(ref mm.CpuMask) & ~(1UL << self.Id);
        if (others == 0) return;
        Cpu[] cpus = self.Platform.Cpus;
        self.Platform.Counters.Add(self.Id, VmEvent.NrTlbRemoteFlush);
        Span<long> requests = stackalloc long[64];
        for (ulong m = others; m != 0; m &= m - 1)
        {
            int c = System.Numerics.BitOperations.TrailingZeroCount(m);
            requests[c] = cpus[c].PostFlush(start, end);
        }

        // The kernel waits for every target's acknowledgement. A running CPU acknowledges within an
        // access or two; one that is not running emulated code (its thread blocked, or busy elsewhere)
        // may never do so, and needs none when it has no access in flight - which only a process-wide
        // barrier can establish, since access boundaries are unfenced. So: spin briefly for the acks,
        // then settle the rest with one barrier and their access sequences.
        long deadline = System.Diagnostics.Stopwatch.GetTimestamp() + AckSpinTicks;
        ulong pending = others;
        while (pending != 0)
        {
            for (ulong m = pending; m != 0; m &= m - 1)
            {
                int c = System.Numerics.BitOperations.TrailingZeroCount(m);
                if (cpus[c].FlushAcked(requests[c])) pending &= ~(1UL << c);
            }
            if (pending == 0 || System.Diagnostics.Stopwatch.GetTimestamp() > deadline) break;
            self.ServiceInterrupts();
            Thread.SpinWait(8);
        }
        if (pending == 0) return;
        self.Platform.Counters.Add(self.Id, VmEvent.TlbFlushBarrierFallback);

        // Either a CPU has published its odd sequence by now, or it will read the flush just posted.
        Interlocked.MemoryBarrierProcessWide();
        for (ulong m = pending; m != 0; m &= m - 1)
        {
            Cpu target = cpus[System.Numerics.BitOperations.TrailingZeroCount(m)];
            long seq = target.AccessSequence;
            if ((seq & 1) == 0) continue;
            var spin = new SpinWait();
            while (target.AccessSequence == seq && !target.FlushAcked(requests[target.Id]))
            {
                self.ServiceInterrupts();
                spin.SpinOnce(sleep1Threshold: -1);
            }
        }
    }

    /// <summary>How long a flush spins for acknowledgements before falling back to the barrier (about 50 µs).</summary>
    private static readonly long AckSpinTicks = System.Diagnostics.Stopwatch.Frequency / 20_000;

    /// <summary>flush_tlb_page.</summary>
    public static void FlushPage(Cpu self, MmContext mm, ulong address)
        => FlushMmRange(self, mm, address & Geometry.PageMask, (address & Geometry.PageMask) + Geometry.PageSize, Geometry.PageShift, false);

    /// <summary>flush_tlb_mm: the whole address space.</summary>
    public static void FlushMm(Cpu self, MmContext mm) => FlushMmRange(self, mm, 0, ulong.MaxValue, Geometry.PageShift, false);
}
