using System.CommandLine;
using NativeMmu.Cli.Commands;

namespace NativeMmu.Cli;

public static class Program
{
    public static int Main(string[] args)
    {
        var root = new RootCommand("nativemmu: an emulator of the Linux x86-64 memory-management subsystem")
        {
            MultiFaultCommand.Create(),
            PtReclaimCommand.Create(),
            ForkCommand.Create(),
            MthpReuseCommand.Create(),
            FuzzCommand.Create(),
        };
        return root.Parse(args).Invoke();
    }
}
