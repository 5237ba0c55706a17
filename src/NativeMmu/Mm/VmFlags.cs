namespace NativeMmu.Mm;

/// <summary>vm_flags_t bits of include/linux/mm.h.</summary>
[Flags]
public enum VmFlags : ulong
{
    None = 0,
    Read = 0x00000001,
    Write = 0x00000002,
    Exec = 0x00000004,
    Shared = 0x00000008,
    MayRead = 0x00000010,
    MayWrite = 0x00000020,
    MayExec = 0x00000040,
    MayShare = 0x00000080,
    GrowsDown = 0x00000100,
    UffdMissing = 0x00000200,
    PfnMap = 0x00000400,
    UffdWp = 0x00001000,
    Locked = 0x00002000,
    Io = 0x00004000,
    SeqRead = 0x00008000,
    RandRead = 0x00010000,
    DontCopy = 0x00020000,
    DontExpand = 0x00040000,
    LockOnFault = 0x00080000,
    Account = 0x00100000,
    NoReserve = 0x00200000,
    HugeTlb = 0x00400000,
    Sync = 0x00800000,
    WipeOnFork = 0x02000000,
    DontDump = 0x04000000,
    SoftDirty = 0x08000000,
    MixedMap = 0x10000000,
    HugePage = 0x20000000,
    NoHugePage = 0x40000000,
    Mergeable = 0x80000000,
    /// <summary>VM_PKEY_BIT0..3 (VM_HIGH_ARCH_0..3, from VM_PKEY_SHIFT = 32): the VMA's protection key, x86 with PKU.</summary>
    PkeyBit0 = 0x1_0000_0000,
    PkeyBit1 = 0x2_0000_0000,
    PkeyBit2 = 0x4_0000_0000,
    PkeyBit3 = 0x8_0000_0000,
    /// <summary>ARCH_VM_PKEY_FLAGS.</summary>
    PkeyMask = PkeyBit0 | PkeyBit1 | PkeyBit2 | PkeyBit3,

    /// <summary>VM_ACCESS_FLAGS.</summary>
    AccessFlags = Read | Write | Exec,
    /// <summary>VM_SPECIAL: never merged, never handled as ordinary memory.</summary>
    Special = Io | DontExpand | PfnMap | MixedMap,
}
