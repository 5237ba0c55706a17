using System.Runtime.InteropServices;
using NativeMmu.Cli.Host;

namespace NativeMmu.Tests.Host;

[TestFixture]
public class HostLoopsTests
{
    private const ulong TwoMiB = 2UL << 20;
    private const ulong OneHundredTwentyEightMiB = 128UL << 20;

    /// <summary>Runs a loop and returns its result with the last touched-page count it reported.</summary>
    private static (LoopResult Result, long Touched, List<long> Reports) Observe(Func<Action<long>, LoopResult> run)
    {
        var reports = new List<long>();
        LoopResult result = run(reports.Add);
        return (result, reports.Count > 0 ? reports[^1] : -1, reports);
    }

    [Test]
    public void A_half_second_multi_fault_run_on_one_thread_counts_at_least_one_window_of_faults()
    {
        LoopResult result = HostLoops.MultiFault(threads: 1, seconds: 0.5);

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result.Faults, Is.GreaterThanOrEqualTo(512));
            Assert.That(result.Seconds, Is.InRange(0.45, 1.5));
            Assert.That(result.PerMinute, Is.EqualTo(result.Faults * 60.0 / result.Seconds));
        }
    }

    [Test]
    public void A_loop_reports_the_cpu_time_its_threads_used_and_no_more_than_they_could()
    {
        LoopResult result = HostLoops.Ceiling(threads: 2, seconds: 0.3, bufferBytes: 2UL << 20);

        using (Assert.EnterMultipleScope())
        {
            // Two busy threads: some CPU time, never more than two threads' wall time (plus a tick).
            Assert.That(result.CpuSeconds, Is.GreaterThan(0));
            Assert.That(result.CpuSeconds, Is.LessThanOrEqualTo(2 * result.Seconds + 0.02));
            Assert.That(result.CpuNsPerFault, Is.EqualTo(result.CpuSeconds * 1e9 / result.Faults));
        }
    }

    [Test]
    public void The_kernel_counts_one_fault_per_page_the_multi_fault_loop_touches()
    {
        // After MADV_DONTNEED the window has no PTEs, and MADV_NOHUGEPAGE rules out THP and mTHP,
        // so every one-byte write is exactly one anonymous fault. Workers stop only between
        // windows, so the published count is exact; the kernel's count may add a few faults of
        // the thread's own (stack, runtime) around the loop.
        var (result, touched, _) = Observe(p => HostLoops.MultiFault(threads: 1, seconds: 0.5, p));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(touched % 512, Is.Zero, "whole windows only");
            Assert.That(touched, Is.GreaterThanOrEqualTo(512));
            Assert.That(result.Faults, Is.EqualTo(touched).Within(10).Percent);
        }
    }

    [Test]
    public void Multi_fault_on_two_threads_sums_both_threads_faults()
    {
        var (result, touched, _) = Observe(p => HostLoops.MultiFault(threads: 2, seconds: 0.4, p));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(touched, Is.GreaterThanOrEqualTo(2 * 512));
            Assert.That(result.Faults, Is.EqualTo(touched).Within(10).Percent);
        }
    }

    [Test]
    public void Progress_is_reported_during_the_run_and_never_goes_backwards()
    {
        var (_, touched, reports) = Observe(p => HostLoops.MultiFault(threads: 1, seconds: 0.8, p));

        using (Assert.EnterMultipleScope())
        {
            // About every 250 ms while running, plus the final total.
            Assert.That(reports, Has.Count.GreaterThanOrEqualTo(3));
            Assert.That(reports, Is.Ordered);
            Assert.That(touched, Is.Positive);
        }
    }

    [Test]
    public void Page_fault1_counts_one_kernel_fault_per_page_it_touches()
    {
        var (result, touched, _) = Observe(p => HostLoops.PageFault1(threads: 1, seconds: 0.5, p));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(touched % 4096, Is.Zero, "the stop flag is checked every 4096 pages");
            Assert.That(result.Faults, Is.GreaterThanOrEqualTo(4096));
            Assert.That(result.Faults, Is.EqualTo(touched).Within(10).Percent);
            Assert.That(result.Seconds, Is.InRange(0.45, 1.5));
        }
    }

    [Test]
    public void Page_fault1_leaves_no_mapping_behind()
    {
        long? before = ProcStatus.ReadKb("VmSize");
        HostLoops.PageFault1(threads: 2, seconds: 0.3);
        long? after = ProcStatus.ReadKb("VmSize");

        // Each worker unmaps its 128 MiB before exiting; allow slack for the runtime's own growth.
        Assert.That(after!.Value - before!.Value, Is.LessThan(64 * 1024));
    }

    [Test]
    public void The_ceiling_counts_frames_zeroed_over_a_two_mebibyte_buffer()
    {
        var (result, touched, _) = Observe(p => HostLoops.Ceiling(threads: 1, seconds: 0.3, TwoMiB, p));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result.Faults, Is.EqualTo(touched));
            Assert.That(result.Faults, Is.GreaterThanOrEqualTo(512));
            Assert.That(result.Faults % 512, Is.Zero, "a 2 MiB buffer is swept whole between stop checks");
        }
    }

    [Test]
    public void The_ceiling_counts_frames_zeroed_over_a_page_fault1_sized_buffer_on_two_threads()
    {
        var (result, touched, _) = Observe(p => HostLoops.Ceiling(threads: 2, seconds: 0.3, OneHundredTwentyEightMiB, p));

        using (Assert.EnterMultipleScope())
        {
            Assert.That(result.Faults, Is.EqualTo(touched));
            Assert.That(result.Faults, Is.GreaterThanOrEqualTo(2 * 4096));
            Assert.That(result.Faults % 4096, Is.Zero);
        }
    }

    [Test]
    public void Loops_reject_nonsensical_arguments()
    {
        using (Assert.EnterMultipleScope())
        {
            Assert.That(() => HostLoops.MultiFault(0, 1), Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => HostLoops.PageFault1(1, 0), Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => HostLoops.MultiFault(1, double.NaN), Throws.InstanceOf<ArgumentOutOfRangeException>());
            Assert.That(() => HostLoops.Ceiling(1, 1, 4095), Throws.InstanceOf<ArgumentOutOfRangeException>());
        }
    }

    [Test]
    public void Per_minute_is_zero_when_no_time_has_passed()
    {
        Assert.That(new LoopResult(100, 0).PerMinute, Is.Zero);
        Assert.That(new LoopResult(100, 2).PerMinute, Is.EqualTo(3000));
        Assert.That(new LoopResult(0, 2, 1).CpuNsPerFault, Is.Zero);
    }
}

[TestFixture]
public class HostMemoryTests
{
    [Test]
    public void Rusage_has_the_x86_64_linux_layout()
    {
        using (Assert.EnterMultipleScope())
        {
            Assert.That(Marshal.SizeOf<HostMemory.Rusage>(), Is.EqualTo(144));
            Assert.That(Marshal.OffsetOf<HostMemory.Rusage>(nameof(HostMemory.Rusage.MinFlt)), Is.EqualTo((nint)64));
        }
    }

    [Test]
    public unsafe void Writing_fresh_pages_raises_the_threads_minor_fault_count_by_one_per_page()
    {
        const ulong pages = 256;
        const ulong length = pages * 4096;
        byte* p = HostMemory.Map(length);
        try
        {
            HostMemory.Advise(p, length, HostMemory.MADV_NOHUGEPAGE);
            long before = HostMemory.ThreadMinorFaults();
            for (ulong i = 0; i < pages; i++)
                p[i * 4096] = 1;
            long after = HostMemory.ThreadMinorFaults();

            Assert.That(after - before, Is.InRange((long)pages, (long)pages + 16));
        }
        finally
        {
            HostMemory.Unmap(p, length);
        }
    }

    [Test]
    public unsafe void A_failed_call_reports_errno()
    {
        // madvise on an unaligned address is EINVAL.
        Assert.That(() => HostMemory.Advise((byte*)1, 4096, HostMemory.MADV_DONTNEED),
            Throws.InstanceOf<System.ComponentModel.Win32Exception>()
                .With.Property(nameof(System.ComponentModel.Win32Exception.NativeErrorCode)).EqualTo(22));
    }
}

[TestFixture]
public class ProcStatusTests
{
    [Test]
    public void Reads_VmPTE_and_VmRSS_of_this_process_as_positive_numbers()
    {
        using (Assert.EnterMultipleScope())
        {
            Assert.That(ProcStatus.ReadKb("VmPTE"), Is.Positive);
            Assert.That(ProcStatus.ReadKb("VmRSS:"), Is.Positive);
            Assert.That(ProcStatus.ReadKb("VmRSS", Environment.ProcessId), Is.Positive);
        }
    }

    [Test]
    public void A_missing_field_reads_as_null()
    {
        Assert.That(ProcStatus.ReadKb("VmNoSuchField"), Is.Null);
    }

    [Test]
    public void Parses_status_lines_with_tabs_and_padding()
    {
        const string status = "Name:\tdotnet\nVmPeak:\t  123456 kB\nVmPTE:\t      48 kB\nThreads:\t5\n";

        using (Assert.EnterMultipleScope())
        {
            Assert.That(ProcStatus.ParseKb(status, "VmPTE"), Is.EqualTo(48));
            Assert.That(ProcStatus.ParseKb(status, "VmPeak"), Is.EqualTo(123456));
            Assert.That(ProcStatus.ParseKb(status, "VmPT"), Is.Null, "names match whole");
            Assert.That(() => ProcStatus.ParseKb(status, "Threads"), Throws.InstanceOf<FormatException>());
        }
    }

    [Test]
    public void Reads_vmstat_counters()
    {
        IReadOnlyDictionary<string, long> vmstat = ProcStatus.ReadVmstat();

        using (Assert.EnterMultipleScope())
        {
            Assert.That(vmstat, Contains.Key("pgfault"));
            Assert.That(vmstat["pgfault"], Is.Positive);
            Assert.That(ProcStatus.ParseVmstat("nr_free_pages 42\npgfault 7\nbogus\n"),
                Is.EquivalentTo(new Dictionary<string, long> { ["nr_free_pages"] = 42, ["pgfault"] = 7 }));
        }
    }
}
