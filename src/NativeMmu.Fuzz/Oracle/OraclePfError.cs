namespace NativeMmu.Fuzz.Oracle;

/// <summary>
/// The x86 page-fault error code pushed by #PF (Intel SDM Vol. 3A, "Interrupt 14—Page-Fault
/// Exception (#PF)"; enum x86_pf_error_code in arch/x86/include/asm/trap_pf.h), one field per bit.
/// </summary>
public readonly record struct OraclePfError(
    bool Protection,        // bit 0: 0 = not present, 1 = protection violation
    bool Write,             // bit 1
    bool User,              // bit 2
    bool ReservedBit,       // bit 3
    bool InstructionFetch,  // bit 4
    bool ProtectionKey,     // bit 5
    bool ShadowStack,       // bit 6
    bool Sgx,               // bit 15
    bool Rmp)               // bit 31 (AMD SEV-SNP)
{
    /// <summary>The defined bits, in the order of the fields.</summary>
    public static ReadOnlySpan<uint> Masks => [0x1, 0x2, 0x4, 0x8, 0x10, 0x20, 0x40, 0x8000, 0x8000_0000];

    /// <summary>Number of defined bits.</summary>
    public const int Count = 9;

    public static OraclePfError Decode(uint code) => new(
        (code & 0x1) != 0,
        (code & 0x2) != 0,
        (code & 0x4) != 0,
        (code & 0x8) != 0,
        (code & 0x10) != 0,
        (code & 0x20) != 0,
        (code & 0x40) != 0,
        (code & 0x8000) != 0,
        (code & 0x8000_0000) != 0);

    /// <summary>The field with the given index (0..8).</summary>
    public bool this[int index] => index switch
    {
        0 => Protection,
        1 => Write,
        2 => User,
        3 => ReservedBit,
        4 => InstructionFetch,
        5 => ProtectionKey,
        6 => ShadowStack,
        7 => Sgx,
        8 => Rmp,
        _ => throw new ArgumentOutOfRangeException(nameof(index)),
    };

    /// <summary>Sets or clears the field with the given index in a raw code, keeping undefined bits.</summary>
    public static uint With(uint code, int index, bool set) => set ? code | Masks[index] : code & ~Masks[index];
}
