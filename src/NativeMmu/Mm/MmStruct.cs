namespace NativeMmu.Mm;

/// <summary>mm_struct: an address space.</summary>
public sealed partial class MmStruct
{
}
