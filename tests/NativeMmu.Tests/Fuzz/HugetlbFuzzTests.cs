using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Model;

namespace NativeMmu.Tests.Fuzz;

/// <summary>The system fuzzer with MAP_HUGETLB in its mix: the generator makes hugetlb mappings and the model knows their rules.</summary>
public class HugetlbFuzzTests
{
    [Test]
    public void Hugetlb_mappings_are_generated_and_the_emulator_agrees_with_the_model_on_them()
    {
        var fuzzer = new SystemFuzzer();
        int hugetlb = Enumerable.Range(0, 300).SelectMany(i => fuzzer.Generate(7, (ulong)i).Ops)
            .Count(o => o.Kind == SysOpKind.Mmap && (o.Flags & Linux.MapHugeTlb) != 0);
        Assert.That(hugetlb, Is.GreaterThan(30), "MAP_HUGETLB is in the mix");
        SystemFuzzResult r = fuzzer.Run(7, TimeSpan.FromSeconds(2));
        Assert.That(r.Failures, Is.Empty, () => string.Join("\n\n", r.Failures.Select(f => f.Description + "\n" + f.Program)));
    }

    [Test]
    public void A_hand_written_hugetlb_program_replays_with_the_models_answers()
    {
        const string text = """
            processes 1
            p0 mmap m1 0x0 0x1000 rw- 0x54040000      # MAP_HUGETLB|MAP_HUGE_2MB: rounded up to one 2 MiB page
            p0 store8 m1+0x5000 0x55
            p0 munmap m1 0x1000                        # EINVAL: a split inside the huge page
            p0 mprotect m1+0x1000 0x1000 r--           # EINVAL
            p0 madvise m1+0x1000 0x1000 dontneed       # EINVAL: unaligned start
            p0 madvise m1 0x1000 dontneed              # rounds down to nothing
            p0 load8 m1+0x5000
            p0 madvise m1 0x200000 wipeonfork          # EINVAL: a file VMA
            p0 madvise m1 0x200000 remove              # EACCES: private
            p0 mmap m2 m1+0x1000 0x1000 rw- fixed      # EINVAL: MAP_FIXED's munmap splits the huge page
            p0 mmap m3 0x0 0x200000 rw- 0x60040000     # EINVAL: no 16 MiB hstate
            p0 fork p1
            p1 store8 m1+0x5000 0x66
            p0 load8 m1+0x5000
            p0 madvise m1 0x200000 dontneed
            p0 load8 m1+0x5000
            p1 load8 m1+0x5000
            p1 munmap m1 0x200000
            """;
        SystemFuzzResult r = new SystemFuzzer().Replay(text);
        Assert.That(r.Failures, Is.Empty, () => r.Failures[0].Description);
        Assert.That(r.Operations, Is.EqualTo(18));
    }
}
