using NativeMmu.Cpus;
using NativeMmu.Sync;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Sync;

/// <summary>mmap_lock's per-CPU read side, and when a writer must run the process-wide barrier.</summary>
public class MmapLockTests
{
    [Test]
    public void A_process_on_one_cpu_takes_the_write_side_without_the_barrier()
    {
        using Kernel k = Boot(cpus: 2);
        Process p = k.CreateProcess();
        using Cpu cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = p.Mmap(16 * PageSize);
        cpu.Store<byte>(a, 1); // a fault: the read side, with a plain store
        p.Munmap(a, 16 * PageSize);
        ulong b = p.Mmap(PageSize);
        Assert.That(p.Mm.MmapLock.Barriers, Is.Zero, "no other CPU ever took the read side: nothing to drain");
        Assert.That(b, Is.Not.Zero);
    }

    [Test]
    public void A_writer_runs_the_barrier_once_another_cpu_has_read()
    {
        using Kernel k = Boot(cpus: 2);
        Process p = k.CreateProcess();
        ulong a = 0;
        using var faulted = new ManualResetEventSlim();
        using var done = new ManualResetEventSlim();
        var other = new Thread(() =>
        {
            using Cpu c = k.AttachCpu(); // held until the writer below is done: its CPU stays the other one
            p.Enter(c);
            a = p.Mmap(PageSize);
            c.Store<byte>(a, 1);
            faulted.Set();
            done.Wait(TimeSpan.FromSeconds(30));
        });
        other.Start();
        Assert.That(faulted.Wait(TimeSpan.FromSeconds(30)), Is.True);
        using (Cpu cpu = k.AttachCpu())
        {
            p.Enter(cpu);
            long before = p.Mm.MmapLock.Barriers;
            p.Munmap(a, PageSize);
            Assert.That(p.Mm.MmapLock.Barriers, Is.EqualTo(before + 1), "the other CPU's plain stores may still be in flight");
        }
        done.Set();
        Assert.That(other.Join(TimeSpan.FromSeconds(30)), Is.True);
    }

    [Test]
    public void Readers_announcing_themselves_while_a_writer_takes_the_lock_are_excluded()
    {
        // A fresh lock each round, so every reader's first read races the writer's look at the mask.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(2);
        long violations = 0, rounds = 0;
        while (DateTime.UtcNow < deadline)
        {
            using var l = new MmapLock(4);
            int inWrite = 0;
            using var go = new Barrier(3);
            var writer = new Thread(() =>
            {
                go.SignalAndWait();
                for (int i = 0; i < 20; i++)
                {
                    l.WriteLock(0);
                    Volatile.Write(ref inWrite, 1);
                    Thread.SpinWait(50);
                    Volatile.Write(ref inWrite, 0);
                    l.WriteUnlock();
                }
            });
            var readers = new Thread[2];
            for (int r = 0; r < readers.Length; r++)
            {
                int cpu = r + 1;
                readers[r] = new Thread(() =>
                {
                    go.SignalAndWait();
                    for (int i = 0; i < 200; i++)
                    {
                        l.ReadLock(cpu);
                        if (Volatile.Read(ref inWrite) != 0) Interlocked.Increment(ref violations);
                        l.ReadUnlock(cpu);
                    }
                });
            }
            writer.Start();
            foreach (Thread t in readers) t.Start();
            Assert.That(writer.Join(TimeSpan.FromSeconds(30)), Is.True, "the writer finished");
            foreach (Thread t in readers) Assert.That(t.Join(TimeSpan.FromSeconds(30)), Is.True, "a reader finished");
            rounds++;
        }
        Assert.That(violations, Is.Zero, $"a reader was inside while the writer held the lock ({rounds} rounds)");
    }
}
