using NativeMmu.Cli.Host;
using NativeMmu.Fuzz;

namespace NativeMmu.Tests.Host;

/// <summary>
/// fuzz host on fixed programs: the real kernel (the C executor) and the emulator agree. Skipped, with
/// the reason the command prints, where the executor cannot run (no C compiler, not Linux x86-64).
/// </summary>
[NonParallelizable]
public class HostFuzzerTests
{
    private HostFuzzer? _fuzzer;

    [OneTimeSetUp]
    public void StartExecutor()
    {
        if (HostExecutor.Unavailable() is { } why) Assert.Ignore(why);
        _fuzzer = new HostFuzzer();
    }

    [OneTimeTearDown]
    public void StopExecutor() => _fuzzer?.Dispose();

    private RunResult Run(string text) => _fuzzer!.RunProgram(SysProgram.Parse(text));

    private static void Agree(RunResult r) => Assert.That(r.Failure?.Description, Is.Null);

    [Test]
    public void A_program_with_copy_on_write_page_tables_or_prctl_is_refused_for_replay()
    {
        Assert.Throws<FormatException>(() => _fuzzer!.Replay("processes 1\ncowpte lazy\np0 mmap m1 0x0 0x1000 rw- -\n"));
        Assert.Throws<FormatException>(() => _fuzzer!.Replay("processes 1\np0 prctl cow_pte\n"));
        Assert.That(_fuzzer!.Replay("processes 1\np0 mmap m1 0x0 0x1000 rw- -\n").Failures, Is.Empty);
    }

    [Test]
    public void Mmap_store_load_and_munmap_agree_with_the_kernel()
    {
        Agree(Run("""
            p0 mmap m1 0x0 0x3000 rw- -
            p0 store8 m1+0x10 0x1122334455667788
            p0 load8 m1+0x10
            p0 load4 m1+0x2ffc
            p0 load8 m1+0x2ffc
            p0 write m1+0xff0 0x40 0xab
            p0 read m1+0xfe0 0x80
            p0 munmap m1+0x1000 0x1000
            p0 load1 m1+0x1000
            p0 read m1+0xff0 0x20
            p0 munmap m1+0x1 0x1000
            p0 mmap m2 m1+0x1000 0x1000 r-- fixed
            p0 store1 m2 0x1
            p0 tryload2 m2+0xfff
            """));
    }

    [Test]
    public void Mprotect_and_madvise_agree_with_the_kernel()
    {
        Agree(Run("""
            p0 mmap m1 0x0 0x4000 rw- populate
            p0 store4 m1+0x1000 0xdeadbeef
            p0 mprotect m1+0x1000 0x1000 r--
            p0 store4 m1+0x1000 0x1
            p0 load4 m1+0x1000
            p0 mprotect m1 0x4000 0x10
            p0 mprotect m1+0x3000 0x2000 ---
            p0 madvise m1 0x2000 dontneed
            p0 load4 m1+0x1000
            p0 madvise m1+0x2000 0x1000 dontfork
            p0 madvise m1 0x1000 hugepage
            p0 madvise m1+0x1000 0x1000 wipeonfork
            p0 madvise m1+0x123 0x1000 normal
            p0 mmap m2 0x0 0x1000 -w- -
            p0 store1 m2 0x5
            p0 mmap m3 0x0 0x1000 --x -
            p0 load1 m3
            """));
    }

    [Test]
    public void Fork_with_writes_on_both_sides_agrees_with_the_kernel()
    {
        Agree(Run("""
            processes 2
            p0 mmap m1 0x0 0x2000 rw- -
            p0 store8 m1 0x1111
            p0 madvise m1+0x1000 0x1000 wipeonfork
            p0 store8 m1+0x1000 0x2222
            p0 fork p2
            p2 load8 m1
            p2 load8 m1+0x1000
            p2 store8 m1 0x3333
            p0 load8 m1
            p0 store8 m1+0x8 0x4444
            p2 load8 m1+0x8
            p2 mmap m2 0x0 0x1000 rw- -
            p2 fork p3
            p3 munmap m1 0x2000
            p3 load1 m1
            p2 load1 m1
            p1 load1 m1
            p2 exit
            p3 load8 m2
            """));
    }

    [Test]
    public void A_planted_emulator_difference_is_reported_against_the_kernel()
    {
        // An mmap the host cut (its stack is there) and a difference forced through the comparer.
        RunResult r = Run("""
            p0 mmap m1 0x7ffffffef000 0x1000 rw- fixed
            p0 load1 0x7ffffffef000
            """);
        Agree(r);
        RunFailure f = HostFuzzer.Difference(0, new SysOp { Kind = SysOpKind.Munmap, Proc = 0, Addr = AddrExpr.Absolute(0x10001), Length = 0x1000 }, "o e=22 rss=0 vm=0 maps=-", "o e=0 rss=0 vm=0 maps=-");
        Assert.That(f.Category, Is.EqualTo("munmap:result"));
        Assert.That(f.Description, Does.Contain("host e=22, emulator e=0"));
    }

    /// <summary>The differences fuzz host found in MADV_FREE, MADV_PAGEOUT/COLD, MAP_STACK, MAP_SYNC, MAP_LOCKED and PROT_GROWS*, as one program.</summary>
    [Test]
    public void Lazyfree_locked_stack_sync_and_grows_agree_with_the_kernel()
    {
        Agree(Run("""
            processes 1
            p0 mmap m1 0x0 0x3000 rw- -
            p0 write m1+0x1373 0x11 0x22
            p0 store1 m1+0x2010 0x44
            p0 madvise m1+0x1000 0x2000 free
            p0 load1 m1+0x1373
            p0 store1 m1+0x2011 0x55
            p0 madvise m1+0x1000 0x2000 pageout
            p0 read m1+0x1370 0x20
            p0 load2 m1+0x2010
            p0 mmap m2 0x0 0x1000 rw- locked
            p0 madvise m2 0x1000 pageout
            p0 madvise m2 0x1000 cold
            p0 mmap m3 0x0 0x1000 --- locked
            p0 mprotect m3 0x1000 rwx
            p0 mmap m4 0x0 0x1000 rw- stack
            p0 mmap m5 0x0 0x1000 r-- sync
            p0 mmap m6 0x0 0x1000 r-- -
            p0 mprotect m6-0x100000 0x1000 0x2000001
            p0 mprotect m6 0x1000 0x1000001
            p0 mprotect m6+0x1 0x1000 0x3000000
            p0 mmap m7 0x0 0x1000 r-- locked
            p0 fork p1
            p1 mmap m8 0x0 0x1000 r-- -
            p1 store1 m1 0x1
            p0 store1 m1 0x2
            """));
    }

    /// <summary>MADV_FREE, MADV_COLD and MADV_PAGEOUT over whole and partial THPs, before and after fork.</summary>
    [Test]
    public void Lazyfree_and_cold_over_thps_agree_with_the_kernel()
    {
        Agree(Run("""
            processes 1
            p0 mmap m1 0x0 0x600000 rw- -
            p0 madvise m1 0x600000 hugepage
            p0 store8 m1 0x1
            p0 store8 m1+0x200000 0x2
            p0 store8 m1+0x400000 0x3
            p0 madvise m1+0x1000 0x1000 free
            p0 load8 m1
            p0 madvise m1+0x200000 0x200000 free
            p0 load8 m1+0x200000
            p0 madvise m1+0x401000 0x1000 cold
            p0 load8 m1+0x400000
            p0 madvise m1+0x1000 0x1000 pageout
            p0 load8 m1+0x1000
            p0 fork p1
            p1 madvise m1+0x200000 0x1000 free
            p1 load8 m1+0x200000
            """));
    }
}
