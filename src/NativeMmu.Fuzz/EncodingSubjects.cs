using NativeMmu.Arch.X86;
using NativeMmu.Fuzz.Oracle;

namespace NativeMmu.Fuzz;

/// <summary>
/// One side of the comparison: applies a step to a value and reads a level's observables. Both
/// implementations are stateless and safe to share between threads.
/// </summary>
internal interface IEncodingSubject
{
    /// <summary>Applies <paramref name="op"/> to <paramref name="value"/> at <paramref name="level"/>.</summary>
    ulong Apply(FuzzLevel level, FuzzOp op, ulong value, ulong a, ulong b);

    /// <summary>
    /// Writes observables 1..n of <paramref name="level"/> (see <see cref="FuzzCatalog.Observables"/>)
    /// for <paramref name="value"/>; index 0 is left to the caller. Predicates read as 0 or 1.
    /// </summary>
    void Observe(FuzzLevel level, ulong value, Span<ulong> observations);
}

/// <summary>The production side: NativeMmu.Arch.X86.</summary>
internal sealed class ProductionSubject : IEncodingSubject
{
    public static readonly ProductionSubject Instance = new();

    private static readonly X86PfError[] PfBits =
    [
        X86PfError.Prot, X86PfError.Write, X86PfError.User, X86PfError.Rsvd, X86PfError.Instr, X86PfError.Pk,
        X86PfError.Shstk, X86PfError.Sgx, X86PfError.Rmp,
    ];

    public ulong Apply(FuzzLevel level, FuzzOp op, ulong value, ulong a, ulong b) => level switch
    {
        FuzzLevel.Pte => ApplyPte(op, new Pte(value), a, b).Value,
        FuzzLevel.Pmd => ApplyPmd(op, new Pmd(value), a, b).Value,
        FuzzLevel.Pud => ApplyPud(op, new Pud(value), a, b).Value,
        FuzzLevel.P4d => ApplyP4d(op, new P4d(value), a).Value,
        FuzzLevel.Pgd4 or FuzzLevel.Pgd5 => ApplyPgd(op, new Pgd(value), a).Value,
        FuzzLevel.Swap => ApplySwap(op, new Pte(value), a, b).Value,
        FuzzLevel.PfError => ApplyPf(op, (X86PfError)(uint)value, a),
        _ => throw Unsupported(level, op),
    };

    private static Pte ApplyPte(FuzzOp op, Pte p, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => p.SetFlags(a),
        FuzzOp.ClearFlags => p.ClearFlags(a),
        FuzzOp.MkWrite => p.MkWrite(),
        FuzzOp.MkWriteNovma => p.MkWriteNovma(),
        FuzzOp.Wrprotect => p.Wrprotect(),
        FuzzOp.MkDirty => p.MkDirty(),
        FuzzOp.MkClean => p.MkClean(),
        FuzzOp.MkYoung => p.MkYoung(),
        FuzzOp.MkOld => p.MkOld(),
        FuzzOp.MkSpecial => p.MkSpecial(),
        FuzzOp.MkExec => p.MkExec(),
        FuzzOp.MkHuge => p.MkHuge(),
        FuzzOp.ClrHuge => p.ClrHuge(),
        FuzzOp.MkGlobal => p.MkGlobal(),
        FuzzOp.ClrGlobal => p.ClrGlobal(),
        FuzzOp.MkSavedDirty => p.MkSavedDirty(),
        FuzzOp.ClearSavedDirty => p.ClearSavedDirty(),
        FuzzOp.MkSoftDirty => p.MkSoftDirty(),
        FuzzOp.ClearSoftDirty => p.ClearSoftDirty(),
        FuzzOp.MkUffdWp => p.MkUffdWp(),
        FuzzOp.ClearUffdWp => p.ClearUffdWp(),
        FuzzOp.Modify => p.Modify(a),
        FuzzOp.PfnEntry => Pte.PfnPte(a, b),
        FuzzOp.Rebuild => Pte.PfnPte(p.Pfn, p.Flags),
        FuzzOp.AdvancePfn => p.AdvancePfn(a),
        _ => throw Unsupported(FuzzLevel.Pte, op),
    };

    private static Pmd ApplyPmd(FuzzOp op, Pmd p, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => p.SetFlags(a),
        FuzzOp.ClearFlags => p.ClearFlags(a),
        FuzzOp.MkHuge => p.MkHuge(),
        FuzzOp.MkOld => p.MkOld(),
        FuzzOp.MkYoung => p.MkYoung(),
        FuzzOp.MkClean => p.MkClean(),
        FuzzOp.MkDirty => p.MkDirty(),
        FuzzOp.Wrprotect => p.Wrprotect(),
        FuzzOp.MkWriteNovma => p.MkWriteNovma(),
        FuzzOp.MkWrite => p.MkWrite(),
        FuzzOp.MkSavedDirty => p.MkSavedDirty(),
        FuzzOp.ClearSavedDirty => p.ClearSavedDirty(),
        FuzzOp.MkSoftDirty => p.MkSoftDirty(),
        FuzzOp.ClearSoftDirty => p.ClearSoftDirty(),
        FuzzOp.MkInvalid => p.MkInvalid(),
        FuzzOp.Modify => p.Modify(a),
        FuzzOp.PfnEntry => Pmd.PfnPmd(a, b),
        FuzzOp.Rebuild => Pmd.PfnPmd(p.Pfn, p.Flags),
        FuzzOp.Populate => Pmd.MkTable(a),
        FuzzOp.PopulateKernel => Pmd.MkKernelTable(a),
        _ => throw Unsupported(FuzzLevel.Pmd, op),
    };

    private static Pud ApplyPud(FuzzOp op, Pud p, ulong a, ulong b) => op switch
    {
        // Pud has no SetFlags/ClearFlags helpers; the raw moves only steer the value.
        FuzzOp.SetFlags => new Pud(p.Value | a),
        FuzzOp.ClearFlags => new Pud(p.Value & ~a),
        FuzzOp.MkHuge => p.MkHuge(),
        FuzzOp.MkOld => p.MkOld(),
        FuzzOp.MkYoung => p.MkYoung(),
        FuzzOp.MkClean => p.MkClean(),
        FuzzOp.MkDirty => p.MkDirty(),
        FuzzOp.Wrprotect => p.Wrprotect(),
        FuzzOp.MkWrite => p.MkWrite(),
        FuzzOp.PfnEntry => Pud.PfnPud(a, b),
        FuzzOp.Rebuild => Pud.PfnPud(p.Pfn, p.Flags),
        FuzzOp.Populate => Pud.MkTable(a),
        FuzzOp.PopulateKernel => Pud.MkKernelTable(a),
        _ => throw Unsupported(FuzzLevel.Pud, op),
    };

    private static P4d ApplyP4d(FuzzOp op, P4d p, ulong a) => op switch
    {
        FuzzOp.SetFlags => new P4d(p.Value | a),
        FuzzOp.ClearFlags => new P4d(p.Value & ~a),
        FuzzOp.Populate => P4d.MkTable(a),
        FuzzOp.PopulateKernel => P4d.MkKernelTable(a),
        _ => throw Unsupported(FuzzLevel.P4d, op),
    };

    private static Pgd ApplyPgd(FuzzOp op, Pgd p, ulong a) => op switch
    {
        FuzzOp.SetFlags => new Pgd(p.Value | a),
        FuzzOp.ClearFlags => new Pgd(p.Value & ~a),
        FuzzOp.Populate => Pgd.MkTable(a),
        FuzzOp.PopulateKernel => Pgd.MkKernelTable(a),
        _ => throw Unsupported(FuzzLevel.Pgd4, op),
    };

    private static Pte ApplySwap(FuzzOp op, Pte p, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => p.SetFlags(a),
        FuzzOp.ClearFlags => p.ClearFlags(a),
        FuzzOp.SwpMkSoftDirty => p.SwpMkSoftDirty(),
        FuzzOp.SwpClearSoftDirty => p.SwpClearSoftDirty(),
        FuzzOp.SwpMkExclusive => p.SwpMkExclusive(),
        FuzzOp.SwpClearExclusive => p.SwpClearExclusive(),
        FuzzOp.SwpMkUffdWp => p.SwpMkUffdWp(),
        FuzzOp.SwpClearUffdWp => p.SwpClearUffdWp(),
        FuzzOp.SwpClearFlags => p.SwpClearFlags(),
        FuzzOp.SwpArchEncode => SwpEntry.ArchEncode((int)a, b),
        FuzzOp.SwpEntryToPte => SwpEntry.Make((int)a, b).ToPte(),
        FuzzOp.SwpRoundTrip => SwpEntry.FromPte(p).ToPte(),
        _ => throw Unsupported(FuzzLevel.Swap, op),
    };

    private static ulong ApplyPf(FuzzOp op, X86PfError code, ulong bit) => op switch
    {
        FuzzOp.PfSet => (uint)(code | PfBits[bit]),
        FuzzOp.PfClear => (uint)(code & ~PfBits[bit]),
        _ => throw Unsupported(FuzzLevel.PfError, op),
    };

    public void Observe(FuzzLevel level, ulong value, Span<ulong> o)
    {
        switch (level)
        {
            case FuzzLevel.Pte:
            {
                var p = new Pte(value);
                o[1] = p.Flags; o[2] = p.Pfn; o[3] = B(p.None); o[4] = B(p.Present); o[5] = B(p.Protnone);
                o[6] = B(p.Write); o[7] = B(p.Dirty); o[8] = B(p.Young); o[9] = B(p.User); o[10] = B(p.Exec);
                o[11] = B(p.Global); o[12] = B(p.Special); o[13] = B(p.SoftDirty); o[14] = B(p.UffdWp); o[15] = B(p.Huge);
                break;
            }
            case FuzzLevel.Pmd:
            {
                var p = new Pmd(value);
                o[1] = p.PfnMask; o[2] = p.Flags; o[3] = p.Pfn; o[4] = B(p.None); o[5] = B(p.Present); o[6] = B(p.Leaf);
                o[7] = B(p.TransHuge); o[8] = B(p.Protnone); o[9] = B(p.Bad); o[10] = B(p.Write); o[11] = B(p.Dirty);
                o[12] = B(p.Young); o[13] = B(p.User); o[14] = B(p.SoftDirty);
                break;
            }
            case FuzzLevel.Pud:
            {
                var p = new Pud(value);
                o[1] = p.PfnMask; o[2] = p.Flags; o[3] = p.Pfn; o[4] = B(p.None); o[5] = B(p.Present); o[6] = B(p.Leaf);
                o[7] = B(p.Bad); o[8] = B(p.Write); o[9] = B(p.Dirty); o[10] = B(p.Young);
                break;
            }
            case FuzzLevel.P4d:
            {
                var p = new P4d(value);
                o[1] = p.Flags; o[2] = p.Pfn; o[3] = B(p.None); o[4] = B(p.Present); o[5] = B(p.Bad);
                break;
            }
            case FuzzLevel.Pgd4:
            case FuzzLevel.Pgd5:
            {
                var p = new Pgd(value);
                PagingMode mode = level == FuzzLevel.Pgd5 ? PagingMode.FiveLevel : PagingMode.FourLevel;
                o[1] = p.Flags; o[2] = p.Pfn; o[3] = B(p.IsNone(mode)); o[4] = B(p.IsPresent(mode)); o[5] = B(p.IsBad(mode));
                break;
            }
            case FuzzLevel.Swap:
            {
                var p = new Pte(value);
                o[1] = B(p.Present); o[2] = B(p.None); o[3] = B(p.IsSwap); o[4] = B(p.SwpSoftDirty);
                o[5] = B(p.SwpExclusive); o[6] = B(p.SwpUffdWp);
                o[7] = (ulong)SwpEntry.ArchType(p); o[8] = SwpEntry.ArchOffset(p);
                SwpEntry e = SwpEntry.FromPte(p);
                o[9] = e.Val; o[10] = (ulong)e.Type; o[11] = e.Offset;
                o[12] = B(e.IsMigration); o[13] = B(e.IsHwpoison); o[14] = B(e.IsDevicePrivate);
                o[15] = B(e.IsDeviceExclusive); o[16] = B(e.IsPteMarker); o[17] = B(e.IsNonSwap);
                var raw = new SwpEntry(value);
                o[18] = (ulong)raw.Type; o[19] = raw.Offset; o[20] = raw.ToPte().Value;
                break;
            }
            case FuzzLevel.PfError:
            {
                var code = (X86PfError)(uint)value;
                for (int i = 0; i < PfBits.Length; i++)
                    o[1 + i] = B((code & PfBits[i]) != 0);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(level));
        }
    }

    private static ulong B(bool b) => b ? 1UL : 0UL;

    internal static Exception Unsupported(FuzzLevel level, FuzzOp op)
        => new NotSupportedException($"{op} is not an operation of level {FuzzCatalog.Name(level)}");
}

/// <summary>The oracle side: NativeMmu.Fuzz.Oracle, written from the kernel headers and the SDM.</summary>
internal sealed class OracleSubject : IEncodingSubject
{
    /// <summary>The oracle as the kernel behaves (pmd_modify keeps D since the 2025 MADV_FREE/THP fix).</summary>
    public static readonly OracleSubject Reference = new();


    public ulong Apply(FuzzLevel level, FuzzOp op, ulong v, ulong a, ulong b) => level switch
    {
        FuzzLevel.Pte => ApplyPte(op, v, a, b),
        FuzzLevel.Pmd => ApplyPmd(op, v, a, b),
        FuzzLevel.Pud => ApplyPud(op, v, a, b),
        FuzzLevel.P4d => op switch
        {
            FuzzOp.SetFlags => v | a,
            FuzzOp.ClearFlags => v & ~a,
            FuzzOp.Populate => OracleP4d.Populate(a),
            FuzzOp.PopulateKernel => OracleP4d.PopulateKernel(a),
            _ => throw ProductionSubject.Unsupported(level, op),
        },
        FuzzLevel.Pgd4 or FuzzLevel.Pgd5 => op switch
        {
            FuzzOp.SetFlags => v | a,
            FuzzOp.ClearFlags => v & ~a,
            FuzzOp.Populate => OraclePgd.Populate(a),
            FuzzOp.PopulateKernel => OraclePgd.PopulateKernel(a),
            _ => throw ProductionSubject.Unsupported(level, op),
        },
        FuzzLevel.Swap => ApplySwap(op, v, a, b),
        FuzzLevel.PfError => op switch
        {
            FuzzOp.PfSet => OraclePfError.With((uint)v, (int)a, set: true),
            FuzzOp.PfClear => OraclePfError.With((uint)v, (int)a, set: false),
            _ => throw ProductionSubject.Unsupported(level, op),
        },
        _ => throw ProductionSubject.Unsupported(level, op),
    };

    private static ulong ApplyPte(FuzzOp op, ulong v, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => OraclePte.SetFlags(v, a),
        FuzzOp.ClearFlags => OraclePte.ClearFlags(v, a),
        FuzzOp.MkWrite => OraclePte.MkWrite(v),
        FuzzOp.MkWriteNovma => OraclePte.MkWriteNovma(v),
        FuzzOp.Wrprotect => OraclePte.Wrprotect(v),
        FuzzOp.MkDirty => OraclePte.MkDirty(v),
        FuzzOp.MkClean => OraclePte.MkClean(v),
        FuzzOp.MkYoung => OraclePte.MkYoung(v),
        FuzzOp.MkOld => OraclePte.MkOld(v),
        FuzzOp.MkSpecial => OraclePte.MkSpecial(v),
        FuzzOp.MkExec => OraclePte.MkExec(v),
        FuzzOp.MkHuge => OraclePte.MkHuge(v),
        FuzzOp.ClrHuge => OraclePte.ClrHuge(v),
        FuzzOp.MkGlobal => OraclePte.MkGlobal(v),
        FuzzOp.ClrGlobal => OraclePte.ClrGlobal(v),
        FuzzOp.MkSavedDirty => OraclePte.MkSavedDirty(v),
        FuzzOp.ClearSavedDirty => OraclePte.ClearSavedDirty(v),
        FuzzOp.MkSoftDirty => OraclePte.MkSoftDirty(v),
        FuzzOp.ClearSoftDirty => OraclePte.ClearSoftDirty(v),
        FuzzOp.MkUffdWp => OraclePte.MkUffdWp(v),
        FuzzOp.ClearUffdWp => OraclePte.ClearUffdWp(v),
        FuzzOp.Modify => OraclePte.Modify(v, a),
        FuzzOp.PfnEntry => OraclePte.PfnPte(a, b),
        FuzzOp.Rebuild => OraclePte.PfnPte(OraclePte.Pfn(v), OraclePte.Flags(v)),
        FuzzOp.AdvancePfn => OraclePte.AdvancePfn(v, a),
        _ => throw ProductionSubject.Unsupported(FuzzLevel.Pte, op),
    };

    private ulong ApplyPmd(FuzzOp op, ulong v, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => OraclePmd.SetFlags(v, a),
        FuzzOp.ClearFlags => OraclePmd.ClearFlags(v, a),
        FuzzOp.MkHuge => OraclePmd.MkHuge(v),
        FuzzOp.MkOld => OraclePmd.MkOld(v),
        FuzzOp.MkYoung => OraclePmd.MkYoung(v),
        FuzzOp.MkClean => OraclePmd.MkClean(v),
        FuzzOp.MkDirty => OraclePmd.MkDirty(v),
        FuzzOp.Wrprotect => OraclePmd.Wrprotect(v),
        FuzzOp.MkWriteNovma => OraclePmd.MkWriteNovma(v),
        FuzzOp.MkWrite => OraclePmd.MkWrite(v),
        FuzzOp.MkSavedDirty => OraclePmd.MkSavedDirty(v),
        FuzzOp.ClearSavedDirty => OraclePmd.ClearSavedDirty(v),
        FuzzOp.MkSoftDirty => OraclePmd.MkSoftDirty(v),
        FuzzOp.ClearSoftDirty => OraclePmd.ClearSoftDirty(v),
        FuzzOp.MkInvalid => OraclePmd.MkInvalid(v),
        FuzzOp.Modify => OraclePmd.Modify(v, a),
        FuzzOp.PfnEntry => OraclePmd.PfnPmd(a, b),
        FuzzOp.Rebuild => OraclePmd.PfnPmd(OraclePmd.Pfn(v), OraclePmd.Flags(v)),
        FuzzOp.Populate => OraclePmd.Populate(a),
        FuzzOp.PopulateKernel => OraclePmd.PopulateKernel(a),
        _ => throw ProductionSubject.Unsupported(FuzzLevel.Pmd, op),
    };

    private static ulong ApplyPud(FuzzOp op, ulong v, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => v | a,
        FuzzOp.ClearFlags => v & ~a,
        FuzzOp.MkHuge => OraclePud.MkHuge(v),
        FuzzOp.MkOld => OraclePud.MkOld(v),
        FuzzOp.MkYoung => OraclePud.MkYoung(v),
        FuzzOp.MkClean => OraclePud.MkClean(v),
        FuzzOp.MkDirty => OraclePud.MkDirty(v),
        FuzzOp.Wrprotect => OraclePud.Wrprotect(v),
        FuzzOp.MkWrite => OraclePud.MkWrite(v),
        FuzzOp.PfnEntry => OraclePud.PfnPud(a, b),
        FuzzOp.Rebuild => OraclePud.PfnPud(OraclePud.Pfn(v), OraclePud.Flags(v)),
        FuzzOp.Populate => OraclePud.Populate(a),
        FuzzOp.PopulateKernel => OraclePud.PopulateKernel(a),
        _ => throw ProductionSubject.Unsupported(FuzzLevel.Pud, op),
    };

    private static ulong ApplySwap(FuzzOp op, ulong v, ulong a, ulong b) => op switch
    {
        FuzzOp.SetFlags => v | a,
        FuzzOp.ClearFlags => v & ~a,
        FuzzOp.SwpMkSoftDirty => OracleSwap.MkSoftDirty(v),
        FuzzOp.SwpClearSoftDirty => OracleSwap.ClearSoftDirty(v),
        FuzzOp.SwpMkExclusive => OracleSwap.MkExclusive(v),
        FuzzOp.SwpClearExclusive => OracleSwap.ClearExclusive(v),
        FuzzOp.SwpMkUffdWp => OracleSwap.MkUffdWp(v),
        FuzzOp.SwpClearUffdWp => OracleSwap.ClearUffdWp(v),
        FuzzOp.SwpClearFlags => OracleSwap.ClearFlags(v),
        FuzzOp.SwpArchEncode => OracleSwap.ArchEncode(a, b),
        FuzzOp.SwpEntryToPte => OracleSwap.EntryToPte(OracleSwap.Entry(a, b)),
        FuzzOp.SwpRoundTrip => OracleSwap.EntryToPte(OracleSwap.PteToEntry(v)),
        _ => throw ProductionSubject.Unsupported(FuzzLevel.Swap, op),
    };

    public void Observe(FuzzLevel level, ulong v, Span<ulong> o)
    {
        switch (level)
        {
            case FuzzLevel.Pte:
            {
                DecodedEntry e = DecodedEntry.Decode(v);
                o[1] = OraclePte.Flags(e); o[2] = OraclePte.Pfn(e); o[3] = B(OraclePte.None(e));
                o[4] = B(OraclePte.Present(e)); o[5] = B(OraclePte.Protnone(e)); o[6] = B(OraclePte.Write(e));
                o[7] = B(OraclePte.Dirty(e)); o[8] = B(e.Accessed); o[9] = B(e.UserMode);
                o[10] = B(!e.ExecuteDisable); o[11] = B(e.Global); o[12] = B(e.Special);
                o[13] = B(e.SoftDirty); o[14] = B(e.UffdWp); o[15] = B(e.PageSize);
                break;
            }
            case FuzzLevel.Pmd:
            {
                DecodedEntry e = DecodedEntry.Decode(v);
                o[1] = OraclePmd.PfnMask(e); o[2] = OraclePmd.Flags(e); o[3] = OraclePmd.Pfn(e);
                o[4] = B(OraclePmd.None(e)); o[5] = B(OraclePmd.Present(e)); o[6] = B(e.PageSize);
                o[7] = B(e.PageSize); o[8] = B(OraclePte.Protnone(e)); o[9] = B(OraclePmd.Bad(e));
                o[10] = B(OraclePmd.Write(e)); o[11] = B(OraclePte.Dirty(e)); o[12] = B(e.Accessed);
                o[13] = B(e.UserMode); o[14] = B(e.SoftDirty);
                break;
            }
            case FuzzLevel.Pud:
            {
                DecodedEntry e = DecodedEntry.Decode(v);
                o[1] = OraclePud.PfnMask(e); o[2] = OraclePud.Flags(e); o[3] = OraclePud.Pfn(e);
                o[4] = B(OraclePte.None(e)); o[5] = B(e.Present); o[6] = B(e.PageSize);
                o[7] = B(OraclePud.Bad(e)); o[8] = B(e.Writable); o[9] = B(OraclePte.Dirty(e));
                o[10] = B(e.Accessed);
                break;
            }
            case FuzzLevel.P4d:
            {
                DecodedEntry e = DecodedEntry.Decode(v);
                o[1] = OraclePte.Flags(e); o[2] = e.Frame; o[3] = B(OraclePte.None(e));
                o[4] = B(e.Present); o[5] = B(OracleP4d.Bad(e));
                break;
            }
            case FuzzLevel.Pgd4:
            case FuzzLevel.Pgd5:
            {
                bool l5 = level == FuzzLevel.Pgd5;
                DecodedEntry e = DecodedEntry.Decode(v);
                o[1] = OraclePte.Flags(e); o[2] = e.Frame; o[3] = B(OraclePgd.None(v, l5));
                o[4] = B(OraclePgd.Present(v, l5)); o[5] = B(OraclePgd.Bad(e, l5));
                break;
            }
            case FuzzLevel.Swap:
            {
                o[1] = B(OraclePte.Present(v)); o[2] = B(OraclePte.None(v)); o[3] = B(OracleSwap.IsSwapPte(v));
                o[4] = B(OracleSwap.SoftDirty(v)); o[5] = B(OracleSwap.Exclusive(v)); o[6] = B(OracleSwap.UffdWp(v));
                o[7] = OracleSwap.ArchType(v); o[8] = OracleSwap.ArchOffset(v);
                ulong e = OracleSwap.PteToEntry(v);
                o[9] = e; o[10] = OracleSwap.EntryType(e); o[11] = OracleSwap.EntryOffset(e);
                o[12] = B(OracleSwap.IsMigration(e)); o[13] = B(OracleSwap.IsHwpoison(e));
                o[14] = B(OracleSwap.IsDevicePrivate(e)); o[15] = B(OracleSwap.IsDeviceExclusive(e));
                o[16] = B(OracleSwap.IsPteMarker(e)); o[17] = B(OracleSwap.IsNonSwap(e));
                o[18] = OracleSwap.EntryType(v); o[19] = OracleSwap.EntryOffset(v); o[20] = OracleSwap.EntryToPte(v);
                break;
            }
            case FuzzLevel.PfError:
            {
                OraclePfError code = OraclePfError.Decode((uint)v);
                for (int i = 0; i < OraclePfError.Count; i++)
                    o[1 + i] = B(code[i]);
                break;
            }
            default:
                throw new ArgumentOutOfRangeException(nameof(level));
        }
    }

    private static ulong B(bool b) => b ? 1UL : 0UL;
}
