using NativeMmu.Cpus;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Processor;

/// <summary>
/// TLB shootdown between CPUs running one mm: a translation another CPU cached must not survive a
/// munmap, mprotect or MADV_DONTNEED, and the flush must never wait on a CPU that waits for it.
/// Every test coordinates its threads with handshakes; none depends on timing.
/// </summary>
public class ShootdownTests
{
    private KernelLease _lease = null!;
    private Kernel _kernel = null!;
    private Process _p = null!;

    [SetUp]
    public void Boot()
    {
        _lease = new KernelLease(TestSupport.Boot(cpus: 3));
        _kernel = _lease.Kernel;
        _p = _kernel.CreateProcess();
    }

    [TearDown]
    public void ShutDown() => _lease.Dispose();

    /// <summary>
    /// CPU B caches a translation of <paramref name="page"/> with <paramref name="warm"/>; CPU A then runs
    /// <paramref name="change"/>; B then runs <paramref name="check"/>. The CPUs hand over with events.
    /// </summary>
    private void AcrossCpus(ulong page, Action<NativeMmu.Cpus.Cpu> warm, Action<NativeMmu.Cpus.Cpu> change, Action<NativeMmu.Cpus.Cpu> check)
    {
        using var cached = new ManualResetEventSlim();
        using var changed = new ManualResetEventSlim();
        _lease.RunOnCpus(_p,
            a =>
            {
                Await(cached, "CPU B caching the translation");
                try
                {
                    Assert.That(_p.Mm.CpuMask & (1UL << a.Id), Is.Not.Zero);
                    change(a);
                }
                finally
                {
                    changed.Set();
                }
            },
            b =>
            {
                try
                {
                    warm(b);
                    Assert.That(b.TlbHolds(page, out _, out _), Is.True, "precondition: CPU B holds the translation");
                }
                finally
                {
                    cached.Set();
                }
                Await(changed, "CPU A changing the mapping");
                check(b);
            });
    }

    [Test]
    public void A_munmap_on_one_cpu_makes_another_cpus_cached_translation_fault()
    {
        ulong a = _p.Mmap(4 * PageSize);
        long remote0 = _kernel.VmstatValue("nr_tlb_remote_flush");
        AcrossCpus(a + PageSize,
            warm: b => { b.Store<long>(a + PageSize, 11); Assert.That(b.Load<long>(a + PageSize), Is.EqualTo(11)); },
            change: cpu => Assert.That(_p.Munmap(a + PageSize, PageSize), Is.EqualTo(Errno.Success)),
            check: b =>
            {
                var ex = Assert.Throws<SegmentationFault>(() => b.Load<long>(a + PageSize));
                Assert.That(ex!.Code, Is.EqualTo(SegvCode.MapErr), "the stale translation was shot down");
                Assert.That(b.TlbHolds(a + PageSize, out _, out _), Is.False);
            });
        Assert.That(_kernel.VmstatValue("nr_tlb_remote_flush") - remote0, Is.GreaterThan(0), "the flush went to the other CPU");
        Assert.That(_kernel.VmstatValue("nr_tlb_remote_flush_received"), Is.GreaterThan(0));
    }

    [Test]
    public void A_mprotect_on_one_cpu_makes_another_cpus_cached_store_fault()
    {
        ulong a = _p.Mmap(2 * PageSize);
        AcrossCpus(a,
            warm: b => b.Store<long>(a, 21),
            change: cpu => Assert.That(_p.Mprotect(a, 2 * PageSize, Prot.Read), Is.EqualTo(Errno.Success)),
            check: b =>
            {
                var ex = Assert.Throws<SegmentationFault>(() => b.Store<long>(a, 22));
                Assert.That(ex!.Code, Is.EqualTo(SegvCode.AccErr), "the cached writable translation was dropped");
                Assert.That(b.Load<long>(a), Is.EqualTo(21), "reads still work and the refused store wrote nothing");
            });
    }

    [Test]
    public void A_dontneed_on_one_cpu_keeps_another_cpu_from_reading_the_freed_frame()
    {
        ulong a = _p.Mmap(2 * PageSize);
        AcrossCpus(a,
            warm: b => b.Store<long>(a, 31),
            change: cpu =>
            {
                Assert.That(_p.Madvise(a, 2 * PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
                // The freed frame is reused at once with other contents.
                ulong other = _p.Mmap(PageSize);
                cpu.Store<long>(other, 0x7777);
            },
            check: b => Assert.That(b.Load<long>(a), Is.Zero, "zero-fill, not the old or a reused frame"));
    }

    [Test]
    public void A_munmap_completes_while_another_cpu_spins_on_loads_of_other_pages()
    {
        ulong a = _p.Mmap(4 * PageSize);
        ulong victim = a, busy = a + 2 * PageSize;
        using var spinning = new ManualResetEventSlim();
        using var done = new ManualResetEventSlim();
        using var bound = new CancellationTokenSource(HandshakeTimeout); // only a guard against a hang
        long loads = 0;
        _lease.RunOnCpus(_p,
            cpuA =>
            {
                Await(spinning, "CPU B spinning");
                Assert.That(_p.Munmap(victim, PageSize), Is.EqualTo(Errno.Success), "munmap returned: no deadlock");
                done.Set();
            },
            cpuB =>
            {
                cpuB.Store<long>(victim, 1);
                cpuB.Store<long>(busy, 2);
                try
                {
                    while (!done.IsSet && !bound.IsCancellationRequested)
                    {
                        if (cpuB.Load<long>(busy) != 2) throw new AssertionException("the busy page changed");
                        if (++loads == 1000) spinning.Set();
                    }
                }
                finally
                {
                    spinning.Set();
                }
                Assert.That(done.IsSet, Is.True, "CPU A finished its munmap while CPU B was spinning");
                Assert.That(cpuB.TryLoad<long>(victim, out _), Is.EqualTo(FaultResult.SegvMaperr));
            });
        Assert.That(loads, Is.GreaterThanOrEqualTo(1000));
    }

    [Test]
    public void Munmaps_on_one_cpu_and_faults_on_another_all_complete()
    {
        const int rounds = 150, pages = 32, handshakeEvery = 10;
        ulong shared = _p.Mmap(pages * PageSize);
        using var stop = new ManualResetEventSlim();
        using var roundDone = new ManualResetEventSlim();
        using var bound = new CancellationTokenSource(HandshakeTimeout); // only a guard against a hang
        int faultingRounds = 0;
        _lease.RunOnCpus(_p,
            cpuA =>
            {
                try
                {
                    for (int r = 0; r < rounds; r++)
                    {
                        if (r % handshakeEvery == 0)
                        {
                            // Let CPU B finish another round of faults, so the two keep overlapping.
                            Await(roundDone, "CPU B completing a round of faults");
                            roundDone.Reset();
                        }
                        ulong s = _p.Mmap(2 * PageSize);
                        cpuA.Store<long>(s, r);
                        cpuA.Store<long>(shared + (ulong)(r % pages) * PageSize + 8, r);
                        Assert.That(_p.Munmap(s, 2 * PageSize), Is.EqualTo(Errno.Success));
                    }
                }
                finally
                {
                    stop.Set();
                }
            },
            cpuB =>
            {
                while (!stop.IsSet && !bound.IsCancellationRequested)
                {
                    for (int i = 0; i < pages; i++) cpuB.Store<long>(shared + (ulong)i * PageSize, i + 1);
                    for (int i = 0; i < pages; i++)
                        if (cpuB.Load<long>(shared + (ulong)i * PageSize) != i + 1) throw new AssertionException($"page {i} lost a store");
                    // Zap the pages so that the next round faults them in again.
                    Assert.That(_p.Madvise(shared, pages * PageSize, Advice.DontNeed), Is.EqualTo(Errno.Success));
                    faultingRounds++;
                    roundDone.Set();
                }
            });
        Assert.That(bound.IsCancellationRequested, Is.False, "both CPUs finished on their own");
        Assert.That(faultingRounds, Is.GreaterThanOrEqualTo(rounds / handshakeEvery));
        Assert.That(_p.Mm.Vmas.Count, Is.EqualTo(1), "only the shared mapping is left");
    }
}
