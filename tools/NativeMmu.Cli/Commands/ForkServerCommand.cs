using NativeMmu.Cpus;
using System.CommandLine;
using System.Diagnostics;
using System.Globalization;
using System.Runtime.InteropServices;
using System.Text.Json;
using System.Text.Json.Serialization;
using NativeMmu.Arch.X86;
using NativeMmu.Cli.Host;

namespace NativeMmu.Cli.Commands;

/// <summary>
/// `nativemmu fork-server`: the fuzzing workload On-Demand-Fork and the COW PTE series measured (AFL's fork
/// server). A parent populates --size of private anonymous 4 KiB pages, then loops for --seconds: fork; the
/// child writes one byte to each of --touch pages picked at random (seeded) and exits; the parent waits.
/// Forks per second for each emulated fork mode, and for the host kernel running the same loop in this process.
/// </summary>
public static class ForkServerCommand
{
    /// <summary>One mode's loop: forks per second, and where the time of a fork-server step went.</summary>
    public sealed record Run(
        [property: JsonPropertyName("mode")] string Mode,
        [property: JsonPropertyName("forks_per_second"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] double? ForksPerSecond,
        [property: JsonPropertyName("error"), JsonIgnore(Condition = JsonIgnoreCondition.WhenWritingNull)] string? Error = null,
        [property: JsonIgnore] Phases? Time = null);

    /// <summary>
    /// Forks done, wall seconds, and the mean milliseconds per step of each phase. Emulated: fork (dup_mmap),
    /// child (its writes), exit (exit_mmap). Host: fork (the call as the parent sees it), and the wait
    /// (the child's writes and exit, then the reap) in Exit; Child is null there.
    /// </summary>
    public sealed record Phases(long Forks, double Seconds, double ForkMs, double? ChildMs, double ExitMs);

    public sealed record Report(
        [property: JsonPropertyName("scenario")] string Scenario,
        [property: JsonPropertyName("size_bytes")] ulong SizeBytes,
        [property: JsonPropertyName("touch_pages")] int TouchPages,
        [property: JsonPropertyName("seconds")] double Seconds,
        [property: JsonPropertyName("runs")] IReadOnlyList<Run> Runs)
    {
        /// <summary>Whether the emulated modes took turns (they ran one after another when their arenas would not fit in memory together).</summary>
        [JsonIgnore] public bool TookTurns { get; init; }
    }

    public static Command Create()
    {
        var size = new Option<string>("--size") { Description = "Anonymous memory the parent populates with 4 KiB pages (e.g. 1G)", DefaultValueFactory = _ => "1G" };
        var touch = new Option<int>("--touch") { Description = "Random pages each child writes one byte to before it exits", DefaultValueFactory = _ => 16 };
        var seconds = new Option<double>("--seconds") { Description = "Seconds each mode's loop runs", DefaultValueFactory = _ => 10 };
        var seed = new Option<ulong>("--seed") { Description = "Seed of the page picks (every mode and the host write the same pages in the same order)", DefaultValueFactory = _ => 1 };
        var mode = new Option<string>("--mode") { Description = "copy | cow-pte-lazy | cow-pte-eager | all", DefaultValueFactory = _ => "all" };
        mode.AcceptOnlyFromAmong("copy", "cow-pte-lazy", "cow-pte-eager", "all");
        var noHost = new Option<bool>("--no-host") { Description = "Skip the host-kernel run" };
        var json = new Option<bool>("--json") { Description = "Print one JSON object on stdout and nothing else" };
        var cmd = new Command("fork-server", "The fuzzer's fork server: populate --size, then for --seconds fork, let the child write --touch random pages and exit, wait; forks per second per mode and host kernel")
        {
            size, touch, seconds, seed, mode, noHost, json,
        };
        cmd.SetAction(r =>
        {
            Report report;
            try
            {
                report = Measure(Size.Parse(r.GetValue(size)!), r.GetValue(touch), r.GetValue(seconds), r.GetValue(seed), r.GetValue(mode)!, r.GetValue(noHost));
            }
            catch (Exception e) when (e is ArgumentException or FormatException or OverflowException)
            {
                Console.Error.WriteLine($"fork-server: {e.Message}");
                return 1;
            }
            if (r.GetValue(json)) Console.Out.WriteLine(ToJson(report));
            else Print(report);
            return 0;
        });
        return cmd;
    }

    public static string ToJson(Report r) => JsonSerializer.Serialize(r);

    /// <summary>Each selected mode on its own emulated kernel, then (its arena freed) the host kernel.</summary>
    public static Report Measure(ulong sizeBytes, int touch, double seconds, ulong seed, string mode, bool noHost)
    {
        if (sizeBytes == 0 || sizeBytes % Geometry.PageSize != 0) throw new ArgumentException("--size must be a positive multiple of 4 KiB");
        if (touch < 0) throw new ArgumentException("--touch must not be negative");
        if (!(seconds > 0) || double.IsInfinity(seconds)) throw new ArgumentException("--seconds must be a positive, finite number");
        var runs = new List<Run>();
        var modes = ForkCommand.SelectModes(mode);
        WarmUp(modes.Select(m => m.CowPte));
        Phases[] phases = EmulatedTurns(sizeBytes, touch, seconds, seed, [.. modes.Select(m => m.CowPte)], out bool turns);
        for (int m = 0; m < modes.Count; m++) runs.Add(new Run(modes[m].Name, PerSecond(phases[m]), null, phases[m]));
        if (!noHost) runs.Add(Host(sizeBytes, touch, seconds, seed));
        return new Report("fork-server", sizeBytes, touch, seconds, runs) { TookTurns = turns };
    }

    private static double PerSecond(Phases t) => Math.Round(t.Forks / t.Seconds, 2);

    /// <summary>
    /// The pages the children write: page indices from SplitMix64 (Steele, Lea and Flood), so every mode and
    /// the host draw the same sequence from one seed without allocating.
    /// </summary>
    public struct PagePicker(ulong seed, ulong pages)
    {
        private ulong _state = seed;

        public ulong Next()
        {
            ulong z = _state += 0x9e3779b97f4a7c15UL;
            z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9UL;
            z = (z ^ (z >> 27)) * 0x94d049bb133111ebUL;
            return (z ^ (z >> 31)) % pages;
        }
    }

    /// <summary>The loop on the emulator for one mode.</summary>
    public static Phases Emulated(ulong sizeBytes, int touch, double seconds, ulong seed, CowPteMode cowPte)
        => EmulatedTurns(sizeBytes, touch, seconds, seed, [cowPte], out _)[0];

    /// <summary>The longest turn a mode takes before the next mode's (the last turn is shorter when --seconds is not a multiple).</summary>
    public const double TurnSeconds = 0.5;

    /// <summary>
    /// The loop on the emulator for several modes, each on its own kernel with its own populated parent. When
    /// their arenas fit in memory together (<paramref name="tookTurns"/>) the modes take turns of at most
    /// <see cref="TurnSeconds"/> until each has run --seconds, so that whatever else loads the machine falls
    /// on all of them alike; otherwise they run one after another. The child runs on the parent's CPU
    /// (switch_mm to it, its writes, exit), as a fork server's child runs while its parent sleeps in waitpid;
    /// so the parent's wait is the child's run. Each mode does one step before its clock starts.
    /// </summary>
    public static Phases[] EmulatedTurns(ulong sizeBytes, int touch, double seconds, ulong seed, IReadOnlyList<CowPteMode> modes, out bool tookTurns)
    {
        tookTurns = modes.Count > 1 && ForkCommand.ModeKernel.FitTogether(sizeBytes, modes.Count);
        if (modes.Count > 1 && !tookTurns) return [.. modes.Select(m => Emulated(sizeBytes, touch, seconds, seed, m))];
        var kernels = new List<ForkCommand.ModeKernel>();
        try
        {
            foreach (CowPteMode m in modes) kernels.Add(new ForkCommand.ModeKernel(sizeBytes, m, "fork-server"));
            var pickers = new PagePicker[modes.Count];
            var sums = new PhaseTicks[modes.Count];
            for (int m = 0; m < modes.Count; m++)
            {
                pickers[m] = new PagePicker(seed, sizeBytes / Geometry.PageSize);
                using Cpu cpu = kernels[m].Attach();
                Step(kernels[m].Process, cpu, kernels[m].Address, touch, ref pickers[m], out _, out _);
            }
            long budget = (long)(seconds * Stopwatch.Frequency), turn = (long)(Math.Min(TurnSeconds, seconds) * Stopwatch.Frequency);
            while (sums.Any(x => x.Wall < budget))
                for (int m = 0; m < modes.Count; m++)
                {
                    if (sums[m].Wall >= budget) continue;
                    ForkCommand.ModeKernel k = kernels[m];
                    using Cpu cpu = k.Attach();
                    long start = Stopwatch.GetTimestamp(), limit = start + Math.Min(turn, budget - sums[m].Wall), now;
                    do
                    {
                        long t0 = Stopwatch.GetTimestamp();
                        Step(k.Process, cpu, k.Address, touch, ref pickers[m], out long forked, out long written);
                        now = Stopwatch.GetTimestamp();
                        sums[m].Fork += forked;
                        sums[m].Child += written - forked;
                        sums[m].Exit += now - t0 - written;
                        sums[m].Forks++;
                    }
                    while (now < limit);
                    sums[m].Wall += now - start;
                }
            double ticksPerMs = Stopwatch.Frequency / 1000.0;
            return [.. sums.Select(x => new Phases(x.Forks, x.Wall / (double)Stopwatch.Frequency, x.Fork / ticksPerMs / x.Forks, x.Child / ticksPerMs / x.Forks, x.Exit / ticksPerMs / x.Forks))];
        }
        finally
        {
            foreach (ForkCommand.ModeKernel k in kernels) k.Dispose();
        }
    }

    /// <summary>Stopwatch ticks a mode's steps spent in each phase, and in all its turns.</summary>
    private struct PhaseTicks
    {
        public long Fork, Child, Exit, Forks, Wall;
    }

    /// <summary>
    /// Runs the fork-server step of every mode in <paramref name="modes"/> on small kernels, in turns of
    /// 0.1 s (mode after mode, <paramref name="rounds"/> times), before anything is measured. Without it the
    /// first mode measured forks in code the JIT has not yet optimised (the copy path ran 2-3 times slower
    /// as the first mode than as the last), and the optimised code would be laid out for that mode alone;
    /// in turns, every mode's path is optimised from a profile all of them fed.
    /// </summary>
    public static void WarmUp(IEnumerable<CowPteMode> modes, int rounds = 3)
    {
        const ulong size = 8UL << 20;
        CowPteMode[] all = [.. modes];
        for (int round = 0; round < rounds; round++)
            foreach (CowPteMode cowPte in all)
            {
                using var kernel = new Kernel(ForkCommand.ConfigFor(size, cowPte));
                Process p = kernel.CreateProcess("warm-up");
                using Cpu cpu = kernel.AttachCpu();
                p.Enter(cpu);
                ulong a = ForkCommand.Populate(p, cpu, size);
                var picker = new PagePicker((ulong)round, size / Geometry.PageSize);
                long limit = Stopwatch.GetTimestamp() + Stopwatch.Frequency / 10;
                do Step(p, cpu, a, 16, ref picker, out _, out _);
                while (Stopwatch.GetTimestamp() < limit);
                p.Exit();
            }
    }

    /// <summary>One fork-server step; <paramref name="forked"/> and <paramref name="written"/> are the ticks from its start to the fork's return and to the child's last write.</summary>
    private static void Step(Process p, Cpu cpu, ulong a, int touch, ref PagePicker picker, out long forked, out long written)
    {
        long t0 = Stopwatch.GetTimestamp();
        Process c = p.Fork("fork-server-child");
        forked = Stopwatch.GetTimestamp() - t0;
        c.Enter(cpu);
        for (int i = 0; i < touch; i++) cpu.Store<byte>(a + picker.Next() * Geometry.PageSize, 1);
        written = Stopwatch.GetTimestamp() - t0;
        c.Exit();
        p.Enter(cpu);
    }

    /// <summary>
    /// The loop on the host kernel in this process: --size of real anonymous memory (MADV_NOHUGEPAGE) written
    /// page by page; each step fills a native array with the picked addresses, forks through the stub whose
    /// child writes them and exits without running the runtime, and reaps the child. One step runs before the clock.
    /// </summary>
    public static unsafe Run Host(ulong sizeBytes, int touch, double seconds, ulong seed)
    {
        if (!HostFork.Supported) return new Run("host", null, "the host fork stub needs x86-64 Linux");
        byte* a = null;
        byte** pages = null;
        try
        {
            a = HostMemory.Map(sizeBytes);
            HostMemory.Advise(a, sizeBytes, HostMemory.MADV_NOHUGEPAGE);
            for (ulong off = 0; off < sizeBytes; off += Geometry.PageSize) a[off] = 1;
            pages = (byte**)NativeMemory.Alloc((nuint)Math.Max(1, touch), (nuint)sizeof(byte*));
            var picker = new PagePicker(seed, sizeBytes / Geometry.PageSize);
            using var forker = new HostFork.TouchingForker();
            for (int i = 0; i < touch; i++) pages[i] = a + picker.Next() * Geometry.PageSize;
            forker.ForkAndWait(pages, touch);
            long fork = 0, wait = 0, forks = 0;
            long start = Stopwatch.GetTimestamp(), limit = start + (long)(seconds * Stopwatch.Frequency), now;
            do
            {
                for (int i = 0; i < touch; i++) pages[i] = a + picker.Next() * Geometry.PageSize;
                long t0 = Stopwatch.GetTimestamp();
                long forked = forker.ForkAndWait(pages, touch);
                now = Stopwatch.GetTimestamp();
                fork += forked - t0;
                wait += now - forked;
                forks++;
            }
            while (now < limit);
            double ticksPerMs = Stopwatch.Frequency / 1000.0;
            var t = new Phases(forks, (now - start) / (double)Stopwatch.Frequency, fork / ticksPerMs / forks, null, wait / ticksPerMs / forks);
            return new Run("host", PerSecond(t), null, t);
        }
        catch (Exception e) when (e is System.ComponentModel.Win32Exception or IOException or UnauthorizedAccessException or InvalidOperationException)
        {
            return new Run("host", null, e.Message);
        }
        finally
        {
            NativeMemory.Free(pages);
            if (a != null) HostMemory.Unmap(a, sizeBytes);
        }
    }

    private static void Print(Report r)
    {
        var c = CultureInfo.InvariantCulture;
        Console.WriteLine();
        Console.WriteLine($" Performance counter stats for 'fork-server' ({Size.Format(r.SizeBytes)} of 4 KiB pages populated; each child writes {r.TouchPages.ToString(c)} random page{(r.TouchPages == 1 ? "" : "s")} and exits; {r.Seconds.ToString(c)} s each):");
        Console.WriteLine();
        Run? copy = r.Runs.FirstOrDefault(x => x.Mode == "copy");
        foreach (Run x in r.Runs)
        {
            string who = x.Mode == "host" ? "host kernel" : "emulated, " + x.Mode;
            if (x.Time is not { } t)
            {
                Console.WriteLine($"  {"",14}  forks  {who,-24}  not measured: {x.Error}");
                continue;
            }
            string phases = t.ChildMs is { } childMs
                ? $"fork {t.ForkMs,8:F3} ms  child {childMs,7:F3} ms  exit {t.ExitMs,8:F3} ms"
                : $"fork {t.ForkMs,8:F3} ms  child+exit+wait {t.ExitMs,8:F3} ms";
            string ratio = copy is { ForksPerSecond: double cps } && x != copy && cps > 0 ? $"   this/copy {x.ForksPerSecond / cps,8:F2}x" : "";
            Console.WriteLine($"  {t.Forks,14:N0}  forks  {who,-24}  # {x.ForksPerSecond,12:N2} forks/s   per fork: {phases}{ratio}");
        }
        Console.WriteLine();
        if (r.TookTurns) Console.WriteLine($"  The emulated modes took turns of at most {TurnSeconds.ToString(c)} s (A B C A B C ...), each on its own kernel.");
        else if (r.Runs.Count(x => x.Mode != "host") > 1) Console.WriteLine("  The emulated modes ran one after another: their arenas would not fit in memory together.");
        Console.WriteLine("  per fork: the mean time of each phase of a step. Emulated, the child runs on the parent's CPU, so the");
        Console.WriteLine("  parent's wait is the child's writes and exit; on the host the child runs while the parent waits in waitpid.");
        Console.WriteLine();
    }
}
