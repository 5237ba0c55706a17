using System.Diagnostics;
using NativeMmu.Mm;
using NativeMmu.Physical;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// page[1]'s flags word is shared: it holds the folio's PG_partially_mapped (deferred_split_folio sets
/// it under the split-queue lock, folio_unqueue_deferred_split clears it) and page[1]'s own
/// PG_anon_exclusive (set by a write fault that reuses the page, cleared by fork, each under a PTL of
/// its own mm). No lock covers both, so each side must change its bit with an atomic operation.
/// </summary>
public unsafe class FolioFlagRaceTests
{
    /// <summary>How long the two sides race: the old plain read-modify-write lost an update in well under this.</summary>
    private static readonly TimeSpan RaceFor = TimeSpan.FromSeconds(1.5);

    [Test]
    public void PG_partially_mapped_and_page_1s_PG_anon_exclusive_never_undo_each_other()
    {
        using Kernel k = Boot(cpus: 2, memoryBytes: 32UL << 20);
        Machine m = k.Machine;
        ulong headPfn;
        using (var boot = k.AttachCpu()) headPfn = m.Allocator.AllocPages(boot.Id, 2, Gfp.Comp);
        Assert.That(headPfn, Is.Not.Zero, "an order-2 folio");
        Page* head = m.Vmemmap.PfnToPage(headPfn);

        using var start = new Barrier(2);
        long deadline = 0;
        long lostAnonExclusive = 0, lostPartiallyMapped = 0;
        var splitter = new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; Volatile.Read(ref lostAnonExclusive) == 0 && ((i & 0xfff) != 0 || Stopwatch.GetTimestamp() < deadline); i++)
            {
                Folio.SetPartiallyMapped(head);                // deferred_split_folio
                if (!Folio.PartiallyMapped(head)) { Interlocked.Increment(ref lostPartiallyMapped); break; }
                Folio.ClearPartiallyMapped(head);              // folio_unqueue_deferred_split
            }
        });
        var faulter = new Thread(() =>
        {
            start.SignalAndWait();
            for (int i = 0; Volatile.Read(ref lostPartiallyMapped) == 0 && ((i & 0xfff) != 0 || Stopwatch.GetTimestamp() < deadline); i++)
            {
                head[1].SetFlagAtomic(PG.AnonExclusive);   // wp_page_reuse on page[1]
                if (!head[1].TestFlag(PG.AnonExclusive)) { Interlocked.Increment(ref lostAnonExclusive); break; }
                head[1].ClearFlagAtomic(PG.AnonExclusive); // fork: __folio_try_dup_anon_rmap
            }
        });
        deadline = Stopwatch.GetTimestamp() + (long)(RaceFor.TotalSeconds * Stopwatch.Frequency);
        splitter.Start();
        faulter.Start();
        Assert.That(splitter.Join(HandshakeTimeout) && faulter.Join(HandshakeTimeout), Is.True, "both threads finish");
        Assert.Multiple(() =>
        {
            Assert.That(lostAnonExclusive, Is.Zero, "setting PG_partially_mapped wrote back a stale PG_anon_exclusive of page[1]");
            Assert.That(lostPartiallyMapped, Is.Zero, "a PG_anon_exclusive update of page[1] wrote back a stale PG_partially_mapped");
        });

        using var c = k.AttachCpu();
        m.Allocator.FreePages(c.Id, headPfn, 2);
    }
}
