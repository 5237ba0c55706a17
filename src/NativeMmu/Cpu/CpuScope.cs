namespace NativeMmu.Cpus;

/// <summary>A CPU held for the duration of a using block.</summary>
public readonly struct CpuScope(Cpu cpu, bool borrowed) : IDisposable
{
    public Cpu Cpu { get; } = cpu;
    public void Dispose()
    {
        if (borrowed) Cpu.Dispose();
    }
}
