using System.Diagnostics;
using NativeMmu.Cli.Commands;
using NativeMmu.Fuzz;

namespace NativeMmu.Tests.Cli;

/// <summary>`nativemmu fuzz afl` and `fuzz encodings --replay`.</summary>
public class FuzzAflCommandTests
{
    private static (int Code, string Output) RunCli(string path, params string[] args)
    {
        var psi = new ProcessStartInfo(FuzzAflCommand.DotnetHost())
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            UseShellExecute = false,
        };
        psi.ArgumentList.Add(Path.Combine(AppContext.BaseDirectory, "NativeMmu.Cli.dll"));
        foreach (string a in args) psi.ArgumentList.Add(a);
        psi.Environment["PATH"] = path;
        using var p = System.Diagnostics.Process.Start(psi)!;
        Task<string> err = p.StandardError.ReadToEndAsync();
        string output = p.StandardOutput.ReadToEnd();
        Assert.That(p.WaitForExit(60_000), Is.True, "the CLI finishes");
        return (p.ExitCode, output + err.Result);
    }

    [Test]
    public void Without_afl_fuzz_on_the_path_fuzz_afl_says_what_to_install_and_exits_with_2()
    {
        string empty = Directory.CreateTempSubdirectory("nativemmu-nopath").FullName;
        try
        {
            (int code, string output) = RunCli(empty, "fuzz", "afl", "--target", "encodings", "--seconds", "1");
            TestContext.Out.WriteLine(output);
            Assert.That(output, Does.Contain("afl-fuzz not found: install it with 'apt-get install afl++'"));
            Assert.That(code, Is.EqualTo(2));
        }
        finally
        {
            Directory.Delete(empty, true);
        }
    }

    [Test]
    public void Fuzz_encodings_replays_a_saved_case_and_exits_with_0_when_production_agrees()
    {
        string file = Path.GetTempFileName();
        try
        {
            EncodingCase c = EncodingBytesTarget.Decode([1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13]);
            File.WriteAllText(file, c.ToString());
            (int code, string output) = RunCli(Environment.GetEnvironmentVariable("PATH") ?? "", "fuzz", "encodings", "--replay", file);
            TestContext.Out.WriteLine(output);
            Assert.That(output, Does.Contain("production agrees with the oracle"));
            Assert.That(code, Is.EqualTo(0));
        }
        finally
        {
            File.Delete(file);
        }
    }

    [TestCase("encodings")]
    [TestCase("system")]
    public void Ten_seconds_of_afl_fuzz_execute_inputs_and_find_paths(string target)
    {
        if (FuzzAflCommand.FindOnPath("afl-fuzz") is null) Assert.Ignore(FuzzAflCommand.MissingAfl);
        string output = Directory.CreateTempSubdirectory("nativemmu-afl").FullName;
        try
        {
            var log = new StringWriter();
            FuzzAflCommand.Report r = FuzzAflCommand.Execute(new FuzzAflCommand.Options(target, 10, null, output, false), log);
            TestContext.Out.WriteLine(log.ToString());
            TestContext.Out.WriteLine($"{r.Executions} executions ({r.ExecsPerSec:F0}/s), {r.Paths} paths, {r.Edges} edges, {r.Crashes} crashes");
            Assert.That(r.Error, Is.Null);
            Assert.That(r.Executions, Is.GreaterThan(0));
            Assert.That(r.Paths, Is.GreaterThan(0));
            Assert.That(r.Edges, Is.GreaterThan(0));
            Assert.That(r.Cases, Is.Empty, () => string.Join("\n", r.Cases.Select(c => c.Description + "\n" + c.Case)));
        }
        finally
        {
            Directory.Delete(output, true);
        }
    }
}
