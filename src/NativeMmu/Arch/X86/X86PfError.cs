namespace NativeMmu.Arch.X86;

/// <summary>x86 page-fault error code (arch/x86/include/asm/trap_pf.h).</summary>
[Flags]
public enum X86PfError : uint
{
    None = 0,
    /// <summary>Protection violation; clear means the page was not present.</summary>
    Prot = 1u << 0,
    Write = 1u << 1,
    User = 1u << 2,
    /// <summary>A reserved bit was set in a paging entry.</summary>
    Rsvd = 1u << 3,
    Instr = 1u << 4,
    /// <summary>Blocked by protection keys.</summary>
    Pk = 1u << 5,
    Shstk = 1u << 6,
    Sgx = 1u << 15,
    Rmp = 1u << 31,
}
