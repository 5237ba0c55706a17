namespace NativeMmu.Cpus;

/// <summary>si_code of a SIGSEGV.</summary>
public enum SegvCode
{
    /// <summary>SEGV_MAPERR: address not mapped to object.</summary>
    MapErr = 1,
    /// <summary>SEGV_ACCERR: invalid permissions for mapped object.</summary>
    AccErr = 2,
    /// <summary>SEGV_PKUERR: failed protection key checks.</summary>
    PkuErr = 4,
}

/// <summary>si_code of a SIGBUS.</summary>
public enum BusCode
{
    /// <summary>BUS_ADRERR: nonexistent physical address (what a failed fault's SIGBUS carries).</summary>
    AdrErr = 2,
    /// <summary>BUS_MCEERR_AR: hardware memory error consumed on a machine check, action required.</summary>
    MceErrAr = 4,
}

/// <summary>An emulated access the kernel answered with a signal: SIGSEGV (with si_code), SIGBUS, or an OOM kill.</summary>
public sealed class SegmentationFault : Exception
{
    public SegmentationFault(ulong address, FaultResult result)
        : base($"{Describe(result)} at {address:x}")
    {
        Address = address;
        Result = result;
    }

    public ulong Address { get; }
    public FaultResult Result { get; }
    /// <summary>SEGV_MAPERR, SEGV_ACCERR or SEGV_PKUERR for a SIGSEGV.</summary>
    public SegvCode? Code => Result switch
    {
        FaultResult.SegvMaperr => SegvCode.MapErr,
        FaultResult.SegvAccerr => SegvCode.AccErr,
        FaultResult.SegvPkuerr => SegvCode.PkuErr,
        _ => null,
    };
    /// <summary>BUS_ADRERR or BUS_MCEERR_AR for a SIGBUS.</summary>
    public BusCode? BusCode => Result switch { FaultResult.Sigbus => Cpus.BusCode.AdrErr, FaultResult.SigbusMceErrAr => Cpus.BusCode.MceErrAr, _ => null };

    private static string Describe(FaultResult r) => r switch
    {
        FaultResult.SegvMaperr => "SIGSEGV (SEGV_MAPERR)",
        FaultResult.SegvAccerr => "SIGSEGV (SEGV_ACCERR)",
        FaultResult.SegvPkuerr => "SIGSEGV (SEGV_PKUERR)",
        FaultResult.Sigbus => "SIGBUS (BUS_ADRERR)",
        FaultResult.SigbusMceErrAr => "SIGBUS (BUS_MCEERR_AR)",
        FaultResult.Oom => "out of memory (VM_FAULT_OOM)",
        _ => r.ToString(),
    };
}
