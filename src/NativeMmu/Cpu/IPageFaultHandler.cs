using NativeMmu.Arch.X86;

namespace NativeMmu.Cpus;

/// <summary>What a #PF handler tells the CPU.</summary>
public enum FaultResult
{
    /// <summary>The fault was handled (or raced with another CPU's): retry the access.</summary>
    Retry,
    /// <summary>SIGSEGV, SEGV_MAPERR: no mapping at the address.</summary>
    SegvMaperr,
    /// <summary>SIGSEGV, SEGV_ACCERR: the mapping forbids the access.</summary>
    SegvAccerr,
    /// <summary>SIGSEGV, SEGV_PKUERR: the task's PKRU denies the access to the VMA's protection key.</summary>
    SegvPkuerr,
    /// <summary>SIGBUS, BUS_ADRERR.</summary>
    Sigbus,
    /// <summary>SIGBUS, BUS_MCEERR_AR: the access hit memory that memory_failure poisoned.</summary>
    SigbusMceErrAr,
    /// <summary>VM_FAULT_OOM: the kernel would invoke the OOM killer.</summary>
    Oom,
}

/// <summary>The kernel side of the #PF vector.</summary>
public interface IPageFaultHandler
{
    /// <summary>exc_page_fault for a user-mode access on <paramref name="cpu"/>: CR2 and the error code.</summary>
    FaultResult HandleUserFault(Cpu cpu, ulong address, X86PfError error);
}
