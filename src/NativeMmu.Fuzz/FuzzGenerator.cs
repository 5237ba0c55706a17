namespace NativeMmu.Fuzz;

/// <summary>
/// Biased random start values and steps. Plain uniform 64-bit values almost never hit the interesting
/// shapes (none, PROT_NONE, table pointers, swap entries, PFN extremes), so most draws build one.
/// The constants here are literal on purpose: the generator belongs to neither side.
/// </summary>
internal static class FuzzGenerator
{
    private const ulong FrameMask40 = 0xFF_FFFF_FFFF;
    private const ulong AddressField = 0x000F_FFFF_FFFF_F000;

    // A handful of real pgprots: PAGE_NONE, PAGE_SHARED, PAGE_SHARED_EXEC, PAGE_COPY/READONLY,
    // PAGE_READONLY_EXEC, PAGE_KERNEL, PAGE_KERNEL_RO, _PAGE_TABLE, _KERNPG_TABLE, PAGE_KERNEL_LARGE.
    private static readonly ulong[] Prots =
    [
        0x120, 0x8000_0000_0000_0027, 0x27, 0x8000_0000_0000_0025, 0x25, 0x8000_0000_0000_0163,
        0x8000_0000_0000_0161, 0x67, 0x63, 0x8000_0000_0000_01E3, 0,
    ];

    public static ulong Value<TRandom>(ref TRandom r, FuzzLevel level) where TRandom : struct, IEncodingChoices
    {
        if (level == FuzzLevel.PfError)
        {
            return r.Next(4) switch
            {
                0 => (uint)r.NextUInt64(),
                1 => (uint)r.NextUInt64() & 0x8000_807F,
                2 => (uint)r.Next(128),
                _ => 1u << r.Next(32),
            };
        }

        switch (r.Next(13))
        {
            case 0:
                return r.NextUInt64();
            case 1: // sparse
                return r.Bit() | (r.OneIn(2) ? r.Bit() : 0) | (r.OneIn(4) ? r.Bit() : 0);
            case 2: // present leaf with a random frame
                return 1 | (r.NextUInt64() & 0xFFE) | (Frame(ref r) << 12) | HighBits(ref r);
            case 3: // non-present, anything else
                return r.NextUInt64() & ~1UL;
            case 4: // PS set
                return r.NextUInt64() | 0x80 | (r.OneIn(2) ? 1UL : 0);
            case 5: // frame extremes with random flags
                return (Frame(ref r) << 12) | (r.NextUInt64() & 0xFFF) | HighBits(ref r);
            case 6: // PROT_NONE shaped: G set, P clear, frame stored inverted
            {
                ulong flags = 0x120 | (r.NextUInt64() & 0xE5E) & ~1UL;
                ulong inverted = (~(Frame(ref r) << 12)) & AddressField;
                return flags | inverted | HighBits(ref r);
            }
            case 7: // swap entry with flag bits, A and D noise
            {
                ulong type = (ulong)r.Next(32);
                ulong offset = Offset(ref r);
                ulong pte = (~offset << 14 >> 5) | (type << 59);
                return pte | (r.NextUInt64() & 0x6E);
            }
            case 8: // table pointer, maybe with one stray bit
            {
                ulong v = (Frame(ref r) << 12) | (r.OneIn(2) ? 0x67UL : 0x63UL);
                return r.OneIn(2) ? v ^ r.Bit() : v;
            }
            case 9: // none, or A/D only
                return r.NextUInt64() & 0x60;
            case 10: // R/W, D, SAVED_DIRTY, SOFT_DIRTY combinations on a present entry
                return 1 | (r.NextUInt64() & ((1UL << 58) | 0x842)) | (Frame(ref r) << 12);
            case 11: // huge leaf: 2 MiB or 1 GiB aligned frame, PS, maybe PAT_LARGE
            {
                ulong align = r.OneIn(2) ? 0x1FFUL : 0x3FFFFUL;
                ulong frame = Frame(ref r) & ~align;
                return 0x81 | (r.NextUInt64() & 0xF7E) | (frame << 12) | (r.OneIn(2) ? 0x1000UL : 0) | HighBits(ref r);
            }
            default: // a pgprot on its own
                return Prots[r.Next(Prots.Length)] | (r.OneIn(3) ? r.Bit() : 0);
        }
    }

    public static FuzzStep Step<TRandom>(ref TRandom r, FuzzLevel level) where TRandom : struct, IEncodingChoices
    {
        ReadOnlySpan<FuzzOp> ops = FuzzCatalog.Ops(level);
        FuzzOp op = ops[r.Next(ops.Length)];
        return op switch
        {
            FuzzOp.SetFlags or FuzzOp.ClearFlags => new FuzzStep(op, Mask(ref r)),
            FuzzOp.Modify => new FuzzStep(op, Prot(ref r)),
            FuzzOp.PfnEntry => new FuzzStep(op, Pfn(ref r), Prot(ref r)),
            FuzzOp.AdvancePfn => new FuzzStep(op, r.Next(4) switch
            {
                0 => 1,
                1 => (ulong)r.Next(513),
                2 => 1UL << r.Next(41),
                _ => r.NextUInt64(),
            }),
            FuzzOp.Populate or FuzzOp.PopulateKernel => new FuzzStep(op, r.OneIn(8) ? r.NextUInt64() : Frame(ref r)),
            FuzzOp.SwpArchEncode or FuzzOp.SwpEntryToPte => new FuzzStep(op, (ulong)(r.OneIn(8) ? r.Next(64) : r.Next(32)), Offset(ref r)),
            FuzzOp.PfSet or FuzzOp.PfClear => new FuzzStep(op, (ulong)r.Next(9)),
            _ => new FuzzStep(op),
        };
    }

    /// <summary>A 40-bit frame number, often an extreme one.</summary>
    private static ulong Frame<TRandom>(ref TRandom r) where TRandom : struct, IEncodingChoices => r.Next(8) switch
    {
        0 => 0,
        1 => FrameMask40,
        2 => 1UL << r.Next(40),
        3 => ~(1UL << r.Next(40)) & FrameMask40,
        4 => (ulong)r.Next(0x10000),
        _ => r.NextUInt64() & FrameMask40,
    };

    /// <summary>A PFN argument: usually a frame, sometimes wider than the address field.</summary>
    private static ulong Pfn<TRandom>(ref TRandom r) where TRandom : struct, IEncodingChoices => r.OneIn(6) ? r.NextUInt64() : Frame(ref r);

    private static ulong Offset<TRandom>(ref TRandom r) where TRandom : struct, IEncodingChoices => r.Next(8) switch
    {
        0 => 0,
        1 => 1,
        2 => (1UL << 50) - 1,
        3 => 1UL << r.Next(64),
        4 => r.NextUInt64(),
        _ => r.NextUInt64() & ((1UL << 50) - 1),
    };

    private static ulong Prot<TRandom>(ref TRandom r) where TRandom : struct, IEncodingChoices
    {
        ulong prot = r.Next(4) == 0 ? r.NextUInt64() : Prots[r.Next(Prots.Length)];
        if (r.OneIn(3))
            prot |= r.NextUInt64() & 0x7800_0000_0000_10D8; // pkey, PAT_LARGE, PAT/PS, D, PCD, PWT
        if (r.OneIn(4))
            prot ^= r.Bit();
        return prot;
    }

    private static ulong Mask<TRandom>(ref TRandom r) where TRandom : struct, IEncodingChoices => r.Next(4) switch
    {
        0 => r.NextUInt64(),
        1 => r.Bit() | r.Bit(),
        _ => r.Bit(),
    };

    /// <summary>Bits 52..63 (unused, SOFTW4, SAVED_DIRTY, PKEY, XD), usually sparse.</summary>
    private static ulong HighBits<TRandom>(ref TRandom r) where TRandom : struct, IEncodingChoices => r.Next(3) switch
    {
        0 => 0,
        1 => r.NextUInt64() & 0xFFF0_0000_0000_0000,
        _ => (1UL << (52 + r.Next(12))),
    };
}
