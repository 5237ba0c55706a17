using NativeMmu.Arch.X86;
using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Model;
using NativeMmu.Mm;

namespace NativeMmu.Tests.Fuzz;

public class SystemFuzzerTests
{
    /// <summary>A deliberately wrong model: it believes memory that reads as zero reads as 0xff.</summary>
    private sealed class ZeroReadsAsOnesModel : ReferenceModel
    {
        public override AccessOutcome Access(int pid, ulong address, Span<byte> buffer, bool write)
        {
            AccessOutcome o = base.Access(pid, address, buffer, write);
            if (!write && o.Fault == ModelFault.None && buffer.Length <= 8 && !buffer.ContainsAnyExcept((byte)0)) buffer.Fill(0xff);
            return o;
        }
    }

    [Test]
    public void Three_seconds_of_fuzzing_find_no_difference()
    {
        var fuzzer = new SystemFuzzer();
        SystemFuzzResult r = fuzzer.Run(0x5eed_2024, TimeSpan.FromSeconds(3));
        TestContext.Out.WriteLine($"{r.Programs} programs, {r.Operations} operations");
        Assert.That(r.Failures, Is.Empty, () => string.Join("\n\n", r.Failures.Select(f => f.Description + "\n" + f.Program)));
        Assert.That(r.Programs, Is.GreaterThan(50));
        Assert.That(r.Operations, Is.GreaterThan(r.Programs));
    }

    [Test]
    public void A_planted_difference_shrinks_to_a_program_of_at_most_three_operations_that_replays()
    {
        var planted = new SystemFuzzer(() => new ZeroReadsAsOnesModel());
        SystemFuzzResult r = planted.Run(42, TimeSpan.FromSeconds(1));
        Assert.That(r.Failures, Is.Not.Empty);
        foreach (SystemFailure f in r.Failures)
        {
            TestContext.Out.WriteLine(f.Description + "\n" + f.Program);
            SysProgram small = SysProgram.Parse(f.Program);
            Assert.That(small.Ops, Has.Count.InRange(1, 3), f.Program);
            Assert.That(small.Processes, Is.EqualTo(1));

            SystemFuzzResult again = planted.Replay(f.Program);
            Assert.That(again.Failures.Select(x => x.Description), Is.EqualTo(new[] { f.Description }), "the printed program reproduces the failure");
            Assert.That(new SystemFuzzer().Replay(f.Program).Failures, Is.Empty, "the right model agrees with the emulator");
        }
    }

    [Test]
    public void The_shrinker_cuts_a_long_failing_program_down()
    {
        var planted = new SystemFuzzer(() => new ZeroReadsAsOnesModel());
        for (ulong i = 0; ; i++)
        {
            SysProgram p = planted.Generate(7, i);
            if (p.Ops.Count < 40 || planted.RunProgram(p).Failure is not { } failure) continue;
            SystemFailure f = planted.ShrinkToFailure(p, failure, out RunFailure final);
            TestContext.Out.WriteLine($"{p.Ops.Count} operations shrunk to:\n{f.Program}");
            Assert.That(final.Category, Is.EqualTo(failure.Category));
            Assert.That(SysProgram.Parse(f.Program).Ops, Has.Count.InRange(1, 3));
            return;
        }
    }

    [Test]
    public void Programs_print_and_parse_back_to_the_same_program()
    {
        var fuzzer = new SystemFuzzer();
        for (ulong i = 0; i < 200; i++)
        {
            SysProgram p = fuzzer.Generate(99, i);
            SysProgram q = SysProgram.Parse(p.ToString());
            Assert.That(q.Seed, Is.EqualTo(p.Seed));
            Assert.That(q.Processes, Is.EqualTo(p.Processes));
            Assert.That(q.Ops, Is.EqualTo(p.Ops), p.ToString());
        }
    }

    [Test]
    public void A_hand_written_program_replays()
    {
        const string text = """
            # two processes, a partial mprotect and a DONTNEED
            seed 0x1
            processes 2
            p0 mmap m1 0x0 0x3000 rw- -
            p0 store8 m1+0xffc 0x1122334455667788
            p0 mprotect m1+0x1000 0x3000 r--     # ENOMEM: the last page is a hole
            p0 store1 m1+0x1000 0x1              # SEGV_ACCERR
            p0 load4 m1+0xffe
            p0 read m1+0xf00 0x1100
            p0 madvise m1 0x1000 dontneed
            p0 load8 m1+0xff8
            p1 mmap m2 0x10000 0x1000 r-- fixed
            p1 tryload1 0x10000
            p0 fork p2                            # skipped without Process.Fork
            p0 exit
            p1 munmap m2 0x1000
            """;
        SystemFuzzResult r = new SystemFuzzer().Replay(text);
        Assert.That(r.Failures, Is.Empty, () => r.Failures[0].Description);
        Assert.That(r.Programs, Is.EqualTo(1));
        Assert.That(r.Operations, Is.EqualTo(new SystemFuzzer().CanFork ? 13 : 12));
        Assert.Throws<FormatException>(() => SysProgram.Parse("p0 load3 0x1000"));
        Assert.Throws<FormatException>(() => SysProgram.Parse("p0 frobnicate"));
    }

    [Test]
    public void Fork_operations_are_generated_and_the_emulator_agrees_with_the_model_on_them()
    {
        var fuzzer = new SystemFuzzer();
        Assert.That(fuzzer.CanFork, Is.True, "Process.Fork exists");
        Assert.That(Enumerable.Range(0, 300).SelectMany(i => fuzzer.Generate(5, (ulong)i).Ops).Count(o => o.Kind == SysOpKind.Fork), Is.GreaterThan(20));
        SystemFuzzResult r = fuzzer.Run(5, TimeSpan.FromSeconds(2));
        Assert.That(r.Failures, Is.Empty, () => string.Join("\n\n", r.Failures.Select(f => f.Description + "\n" + f.Program)));
    }

    [Test]
    public void Fork_honours_dontfork_and_wipeonfork_as_the_model_does()
    {
        const string text = """
            processes 1
            p0 mmap m1 0x0 0x3000 rw- -
            p0 store8 m1 0xb
            p0 store8 m1+0x1000 0x16
            p0 store8 m1+0x2000 0x21
            p0 madvise m1+0x1000 0x1000 wipeonfork
            p0 madvise m1+0x2000 0x1000 dontfork
            p0 fork p1
            p1 load8 m1
            p1 load8 m1+0x1000
            p1 load8 m1+0x2000
            p1 store8 m1 0x63
            p0 load8 m1
            """;
        SystemFuzzResult r = new SystemFuzzer().Replay(text);
        Assert.That(r.Failures, Is.Empty, () => r.Failures[0].Description);
        Assert.That(r.Operations, Is.EqualTo(12));
    }
}
