using System.Numerics;
using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Sync;

namespace NativeMmu.Mm;

/// <summary>
/// Memory protection keys (arch/x86/mm/pkeys.c, arch/x86/include/asm/pkeys.h): the mm's key allocation,
/// the execute-only key a PROT_EXEC-only mapping gets, and the VMA-key checks of the fault path and GUP.
/// Everything here is a no-op answer without <see cref="KernelConfig.Pku"/>, as without OSPKE.
/// </summary>
internal static class Pkeys
{
    /// <summary>VM_PKEY_SHIFT: where <see cref="VmFlags.PkeyBit0"/> sits in vm_flags.</summary>
    public const int VmPkeyShift = 32;

    /// <summary>ARCH_DEFAULT_PKEY.</summary>
    public const int ArchDefaultPkey = 0;

    /// <summary>vma_pkey.</summary>
    public static int VmaPkey(Vma vma) => (int)((ulong)(vma.VmFlags & VmFlags.PkeyMask) >> VmPkeyShift);

    /// <summary>arch_calc_vm_prot_bits: the key as VM_PKEY_BIT0..3.</summary>
    public static VmFlags PkeyBits(int pkey) => (VmFlags)((ulong)pkey << VmPkeyShift) & VmFlags.PkeyMask;

    /// <summary>
    /// execute_only_pkey: the mm's execute-only key, allocated on first use (mm_pkey_alloc: the lowest free
    /// key; key 0 is never free). ARCH_DEFAULT_PKEY without OSPKE, -1 when every key is taken.
    /// </summary>
    /// <remarks>
    /// __execute_only_pkey then sets the calling task's PKRU to PKEY_DISABLE_ACCESS for the key when it
    /// still allows reads. Every task here runs with init_pkru_value, which already disables access to
    /// every key but 0, and nothing writes PKRU, so that step never has anything to do.
    /// </remarks>
    public static int ExecuteOnlyPkey(Cpu cpu, MmStruct mm)
    {
        if (!cpu.Pku) return ArchDefaultPkey;
        int pkey = mm.ExecuteOnlyPkey;
        if (pkey == -1)
        {
            if (mm.PkeyAllocationMap == ushort.MaxValue) return -1;
            pkey = BitOperations.TrailingZeroCount(~(uint)mm.PkeyAllocationMap);
            mm.PkeyAllocationMap |= (ushort)(1 << pkey);
            mm.ExecuteOnlyPkey = pkey;
        }
        Bug.On(Cpu.PkruPermits(cpu.Pkru, pkey, write: false), "execute-only pkey {0} is readable under PKRU {1:x8}", pkey, cpu.Pkru);
        return pkey;
    }

    /// <summary>
    /// arch_override_mprotect_pkey for mprotect(2) (no key given): PROT_EXEC alone takes the execute-only
    /// key; relaxing an execute-only VMA goes back to key 0; anything else keeps the VMA's key.
    /// </summary>
    public static int OverrideMprotectPkey(Cpu cpu, Vma vma, Prot prot)
    {
        if (!cpu.Pku) return ArchDefaultPkey;
        if (prot == Prot.Exec)
        {
            int pkey = ExecuteOnlyPkey(cpu, vma.Mm);
            if (pkey > 0) return pkey;
        }
        else if (VmaIsPkeyExecOnly(vma))
        {
            return ArchDefaultPkey;
        }
        return VmaPkey(vma);
    }

    /// <summary>vma_is_pkey_exec_only.</summary>
    private static bool VmaIsPkeyExecOnly(Vma vma)
        => (vma.VmFlags & VmFlags.AccessFlags) == VmFlags.Exec && VmaPkey(vma) == vma.Mm.ExecuteOnlyPkey;

    /// <summary>
    /// arch_vma_access_permitted for a data access by the calling task: whether its PKRU (the one on
    /// <paramref name="cpu"/>) allows the VMA's key. Every caller here works on the task's own mm, as the
    /// fault path and get_user_pages do (foreign is false: no FOLL_REMOTE access reaches this), and
    /// every task's PKRU is init_pkru_value.
    /// </summary>
    public static bool VmaAccessPermitted(Cpu cpu, Vma vma, bool write)
        => !cpu.Pku || Cpu.PkruPermits(cpu.Pkru, VmaPkey(vma), write);

    /// <summary>
    /// bad_area_access_from_pkeys (arch/x86/mm/fault.c): whether an access_error is the keys' doing (the
    /// walk reported X86_PF_PK, or PKRU denies the VMA's key), which bad_area_access_error signals as
    /// SEGV_PKUERR rather than SEGV_ACCERR.
    /// </summary>
    public static bool BadAreaAccessFromPkeys(Cpu cpu, X86PfError error, Vma vma)
        => cpu.Pku && ((error & X86PfError.Pk) != 0 || !VmaAccessPermitted(cpu, vma, (error & X86PfError.Write) != 0));
}
