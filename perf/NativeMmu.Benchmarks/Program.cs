using BenchmarkDotNet.Running;

namespace NativeMmu.Benchmarks;

public static class Program
{
    public static void Main(string[] args)
        => BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args, new BenchConfig(args));
}
