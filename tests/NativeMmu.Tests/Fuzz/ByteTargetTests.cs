using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Model;

namespace NativeMmu.Tests.Fuzz;

/// <summary>The byte-driven targets coverage-guided fuzzers run: their decoders and their verdicts.</summary>
public class ByteTargetTests
{
    /// <summary>Byte strings of every shape: empty, constant, counting, and random ones of many lengths.</summary>
    private static IEnumerable<byte[]> Inputs(int randomCount)
    {
        yield return [];
        yield return [0];
        yield return [0xff];
        yield return Enumerable.Repeat((byte)0xff, 5000).ToArray();
        yield return Enumerable.Repeat((byte)0, 5000).ToArray();
        yield return Enumerable.Range(0, 3000).Select(i => (byte)i).ToArray();
        var rng = new Random(18);
        for (int i = 0; i < randomCount; i++)
        {
            var b = new byte[rng.Next(0, i % 10 == 0 ? 20000 : 600)];
            rng.NextBytes(b);
            yield return b;
        }
    }

    [Test]
    public void Every_byte_string_decodes_to_a_bounded_program_that_prints_and_parses_back_to_itself()
    {
        var target = new SystemBytesTarget();
        foreach (byte[] input in Inputs(400))
        {
            SysProgram p = target.Decode(input);
            Assert.That(p.Ops, Has.Count.LessThanOrEqualTo(200));
            Assert.That(p.Processes, Is.InRange(1, 4));
            Assert.That(p.Ops.Max(op => (int?)Math.Max(op.Proc, op.Child)) ?? 0, Is.LessThan(SysProgram.MaxProcesses));
            SysProgram q = SysProgram.Parse(p.ToString());
            Assert.That((q.Seed, q.Processes), Is.EqualTo((p.Seed, p.Processes)));
            Assert.That(q.Ops, Is.EqualTo(p.Ops), p.ToString());
        }
    }

    [Test]
    public void The_same_bytes_decode_to_the_same_program_and_the_same_encoding_case()
    {
        var target = new SystemBytesTarget();
        foreach (byte[] input in Inputs(100))
        {
            Assert.That(target.Decode(input).ToString(), Is.EqualTo(target.Decode(input.ToArray()).ToString()));
            Assert.That(EncodingBytesTarget.Decode(input).ToString(), Is.EqualTo(EncodingBytesTarget.Decode(input.ToArray()).ToString()));
        }
    }

    [Test]
    public void Longer_inputs_with_a_common_prefix_decode_to_programs_with_that_prefix_of_operations()
    {
        var target = new SystemBytesTarget();
        var rng = new Random(7);
        var b = new byte[4000];
        int longer = 0;
        for (int tries = 0; tries < 20; tries++)
        {
            rng.NextBytes(b);
            SysProgram full = target.Decode(b);
            SysProgram cut = target.Decode(b.AsSpan(0, 200));
            Assert.That((cut.CowPte, cut.CowPteAllProcesses), Is.EqualTo((full.CowPte, full.CowPteAllProcesses)), "the header comes from the first bytes");
            Assert.That(cut.Ops.Count, Is.LessThanOrEqualTo(full.Ops.Count));
            // The cut program's last operation may have read past the end (zeros); all before it agree.
            Assert.That(cut.Ops.Take(cut.Ops.Count - 1), Is.EqualTo(full.Ops.Take(cut.Ops.Count - 1)));
            if (cut.Ops.Count < full.Ops.Count) longer++;
        }
        // A program's length is one of its choices: most, not all, byte strings ask for more than 200 bytes give.
        Assert.That(longer, Is.GreaterThan(10));
    }

    [Test]
    public void A_recorded_program_is_the_one_fuzz_system_runs_and_its_bytes_decode_back_to_it()
    {
        var fuzzer = new SystemFuzzer();
        var target = new SystemBytesTarget();
        for (ulong i = 0; i < 300; i++)
        {
            (SysProgram recorded, byte[] bytes) = target.Record(0x5eed, i);
            SysProgram generated = fuzzer.Generate(0x5eed, i);
            Assert.That(recorded.Ops, Is.EqualTo(generated.Ops), $"program {i}");
            SysProgram decoded = target.Decode(bytes);
            Assert.That((decoded.Processes, decoded.Ops.Count), Is.EqualTo((generated.Processes, generated.Ops.Count)));
            Assert.That(decoded.Ops, Is.EqualTo(generated.Ops), $"program {i}");
        }
    }

    [Test]
    public void Every_byte_string_decodes_to_an_encoding_case_whose_text_parses_back_to_itself()
    {
        foreach (byte[] input in Inputs(400))
        {
            EncodingCase c = EncodingBytesTarget.Decode(input);
            Assert.That(c.StepTexts, Has.Count.LessThanOrEqualTo(EncodingFuzzer.MaxSequenceLength));
            string text = c.ToString();
            Assert.That(EncodingCase.Parse(text).ToString(), Is.EqualTo(text));
        }
    }

    [Test]
    public void Recorded_encoding_seeds_decode_to_the_cases_the_random_generator_makes()
    {
        IReadOnlyList<byte[]> seeds = EncodingBytesTarget.Seeds(40, 200);
        var steps = new FuzzStep[EncodingFuzzer.MaxSequenceLength];
        for (int i = 0; i < seeds.Count; i++)
        {
            var rng = new FuzzRandom(40 + (ulong)i);
            int n = EncodingFuzzer.GenerateCase(ref rng, EncodingFuzzer.AllLevels, out FuzzLevel level, out ulong start, steps);
            EncodingCase decoded = EncodingBytesTarget.Decode(seeds[i]);
            Assert.That(decoded.ToString(), Is.EqualTo(new EncodingCase(level, start, steps[..n]).ToString()), $"case {i}");
        }
    }

    [Test]
    public void On_the_correct_tree_the_targets_find_no_difference_in_seeds_and_random_bytes()
    {
        var system = new SystemBytesTarget();
        foreach (byte[] input in system.Seeds(1, 12).Concat(Inputs(12)))
            Assert.DoesNotThrow(() => system.Run(input));
        var encodings = new EncodingBytesTarget();
        foreach (byte[] input in EncodingBytesTarget.Seeds(1, 200).Concat(Inputs(300)))
            Assert.DoesNotThrow(() => encodings.Run(input));
    }

    /// <summary>Production, except that pte_dirty always reads as set.</summary>
    private sealed class AlwaysDirtySubject : IEncodingSubject
    {
        public ulong Apply(FuzzLevel level, FuzzOp op, ulong value, ulong a, ulong b) => ProductionSubject.Instance.Apply(level, op, value, a, b);

        public void Observe(FuzzLevel level, ulong value, Span<ulong> observations)
        {
            ProductionSubject.Instance.Observe(level, value, observations);
            if (level == FuzzLevel.Pte) observations[7] = 1; // pte_dirty
        }
    }

    [Test]
    public void A_planted_encoding_difference_is_thrown_as_a_case_that_replays()
    {
        var planted = new EncodingFuzzer(new AlwaysDirtySubject());
        var target = new EncodingBytesTarget(planted);
        // First byte 0 picks the pte level; zeros make the start value 0, which is clean.
        var e = Assert.Throws<FuzzDifferenceException>(() => target.Run([0]))!;
        TestContext.Out.WriteLine(e.Message);
        Assert.That(e.Message, Does.Contain("pte_dirty"));
        EncodingCase c = EncodingCase.Parse(e.Message[e.Message.IndexOf("# nativemmu fuzz encodings case", StringComparison.Ordinal)..]);
        Assert.That(c.LevelName, Is.EqualTo("pte"));
        Assert.That(planted.Replay(c), Is.Not.Null, "the saved case reproduces the difference");
        Assert.That(new EncodingFuzzer().Replay(c), Is.Null, "the real production code agrees with the oracle");

        EncodingFailure shrunk = target.Check([0, 5, 7, 9, 11], shrink: true, origin: "a test")!;
        Assert.That(shrunk.Observable, Is.EqualTo("pte_dirty"));
        Assert.That(planted.Replay(EncodingCase.Parse(shrunk.Case!.ToString())), Is.Not.Null);
    }

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
    public void A_planted_system_difference_is_thrown_with_a_program_that_replays()
    {
        var planted = new SystemFuzzer(() => new ZeroReadsAsOnesModel());
        var target = new SystemBytesTarget(planted);
        FuzzDifferenceException? found = null;
        byte[]? input = null;
        foreach (byte[] seed in target.Seeds(1, 32))
        {
            try { target.Run(seed); }
            catch (FuzzDifferenceException e) { found = e; input = seed; break; }
        }
        Assert.That(found, Is.Not.Null, "some seed loads untouched memory");
        string program = found!.Message[found.Message.IndexOf("# nativemmu fuzz system program", StringComparison.Ordinal)..];
        Assert.That(planted.Replay(program).Failures, Is.Not.Empty);
        Assert.That(new SystemFuzzer().Replay(program).Failures, Is.Empty);

        target.ShrinkTime = TimeSpan.FromSeconds(10);
        SystemFailure shrunk = target.Check(input!, shrink: true, out string signature)!;
        Assert.That(signature, Is.Not.Empty);
        Assert.That(SysProgram.Parse(shrunk.Program).Ops.Count, Is.LessThanOrEqualTo(SysProgram.Parse(program).Ops.Count));
        Assert.That(planted.Replay(shrunk.Program).Failures, Is.Not.Empty);
    }
}
