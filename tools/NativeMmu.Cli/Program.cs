using System.CommandLine;
using NativeMmu.Cli.Commands;

namespace NativeMmu.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        // In an instrumented copy (fuzz afl) NativeMmu's code writes coverage through this pointer; it
        // must point somewhere before that code first runs. SharpFuzz's loop points it at afl's map.
        UseScratchCoverageMap();
        var root = new RootCommand("nativemmu: an emulator of the Linux x86-64 memory-management subsystem")
        {
            MultiFaultCommand.Create(),
            PtReclaimCommand.Create(),
            ForkCommand.Create(),
            ForkServerCommand.Create(),
            MthpReuseCommand.Create(),
            ScalingCommand.Create(),
            HvoCommand.Create(),
            FuzzCommand.Create(),
        };
        return root.Parse(args).Invoke();
    }

    private static unsafe void UseScratchCoverageMap()
    {
        if (SharpFuzz.Common.Trace.SharedMem == null)
            SharpFuzz.Common.Trace.SharedMem = (byte*)System.Runtime.InteropServices.NativeMemory.AllocZeroed(1 << 16);
    }
}
