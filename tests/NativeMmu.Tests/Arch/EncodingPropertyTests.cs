using FsCheck;
using FsCheck.Fluent;
using NativeMmu.Arch.X86;
using NativeMmu.Fuzz;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Tests.Arch;

/// <summary>Laws of the encodings, checked by FsCheck on arbitrary 64-bit words.</summary>
public class EncodingPropertyTests
{
    private const ulong Frames40 = 0xFF_FFFF_FFFF;
    private const ulong MaxSwapOffset = (1UL << 50) - 1;

    private static readonly Config Runs = Config.QuickThrowOnFailure.WithMaxTest(2000);

    /// <summary>
    /// Full-width words: a third uniform, a third sparse, a third shaped like real entries (PROT_NONE,
    /// swap, table pointers, huge leaves...). Shrinking clears one set bit at a time.
    /// </summary>
    private static Arbitrary<ulong> Words { get; } = Arb.From(
        Gen.OneOf(
            Uniform(),
            from a in Gen.Choose(0, 63) from b in Gen.Choose(0, 63) select (1UL << a) | (1UL << b),
            from seed in Uniform() from level in Gen.Choose(0, 6) select Shaped(seed, (FuzzLevel)level)),
        v => Enumerable.Range(0, 64).Where(b => ((v >> b) & 1) != 0).Select(b => v & ~(1UL << b)));

    private static Gen<ulong> Uniform()
        => from hi in Gen.Choose(int.MinValue, int.MaxValue)
           from lo in Gen.Choose(int.MinValue, int.MaxValue)
           select ((ulong)(uint)hi << 32) | (uint)lo;

    private static ulong Shaped(ulong seed, FuzzLevel level)
    {
        var rng = new FuzzRandom(seed);
        return FuzzGenerator.Value(ref rng, level);
    }

    [Test]
    public void Production_matches_the_oracle_for_every_helper_and_observable_at_every_level()
    {
        var production = new ulong[FuzzCatalog.MaxObservables];
        var oracle = new ulong[FuzzCatalog.MaxObservables];
        Prop.ForAll(Words, Words, Words, (v, a, b) =>
        {
            for (int l = 0; l < FuzzCatalog.LevelCount; l++)
            {
                var level = (FuzzLevel)l;
                ulong value = level == FuzzLevel.PfError ? (uint)v : v;
                ProductionSubject.Instance.Observe(level, value, production);
                OracleSubject.Reference.Observe(level, value, oracle);
                if (!production.AsSpan(1, FuzzCatalog.ObservableCount(level) - 1).SequenceEqual(oracle.AsSpan(1, FuzzCatalog.ObservableCount(level) - 1)))
                    return false;
                foreach (FuzzOp op in FuzzCatalog.Ops(level))
                {
                    (ulong x, ulong y) = op switch
                    {
                        FuzzOp.SwpArchEncode or FuzzOp.SwpEntryToPte => (a & 63, b),
                        FuzzOp.PfSet or FuzzOp.PfClear => (a % 9, b),
                        _ => (a, b),
                    };
                    if (ProductionSubject.Instance.Apply(level, op, value, x, y) != OracleSubject.Reference.Apply(level, op, value, x, y))
                        return false;
                }
            }
            return true;
        }).Check(Runs);
    }

    [Test]
    public void Pfn_round_trips_through_pfn_pte_pfn_pmd_and_pfn_pud()
    {
        Prop.ForAll(Words, Words, (pfnWord, protWord) =>
        {
            ulong pfn = pfnWord & Frames40;
            // A zero pgprot is not inverted by pfn_pte, yet the non-zero entry it builds reads back
            // inverted; the kernel never builds entries from a zero pgprot, so neither does this law.
            ulong prot = (protWord & PteFlagsMask) is var p && p != 0 ? p : PgProt.PageNone;
            return Pte.PfnPte(pfn, prot).Pfn == pfn
                && Pmd.PfnPmd(pfn, prot | Pse).Pfn == (pfn & ~0x1FFUL)
                && Pud.PfnPud(pfn, prot | Pse).Pfn == (pfn & ~0x3FFFFUL);
        }).Check(Runs);
    }

    [Test]
    public void Rebuilding_an_entry_from_its_pfn_and_flags_gives_it_back()
    {
        Prop.ForAll(Words, v => (v & PteFlagsMask) == 0 || Pte.PfnPte(new Pte(v).Pfn, new Pte(v).Flags).Value == v)
            .Check(Runs);
    }

    [Test]
    public void Swap_entries_round_trip_through_the_pte_layout_whatever_the_flag_bits()
    {
        Prop.ForAll(Words, Words, (t, o) =>
        {
            int type = (int)(t & 31);
            ulong offset = o & MaxSwapOffset;
            Pte pte = SwpEntry.ArchEncode(type, offset);
            Pte flagged = pte.SetFlags((t >> 8) & 0xE);
            return SwpEntry.ArchType(pte) == type
                && SwpEntry.ArchOffset(pte) == offset
                && SwpEntry.FromPte(flagged) == SwpEntry.Make(type, offset)
                && SwpEntry.Make(type, offset).ToPte() == pte;
        }).Check(Runs);
    }

    [Test]
    public void Swp_entry_t_round_trips_when_its_offset_fits_50_bits()
    {
        Prop.ForAll(Words, v =>
        {
            ulong val = v & ((31UL << 58) | MaxSwapOffset);
            return SwpEntry.FromPte(new SwpEntry(val).ToPte()).Val == val;
        }).Check(Runs);
    }

    [Test]
    public void Wrprotect_undoes_MkWrite_on_clean_read_only_entries()
    {
        Prop.ForAll(Words, v =>
        {
            ulong c = v & ~(Rw | Dirty);
            return new Pte(c).MkWrite().Wrprotect().Value == c
                && new Pmd(c).MkWrite().Wrprotect().Value == c
                && new Pud(c).MkWrite().Wrprotect().Value == c;
        }).Check(Runs);
    }

    [Test]
    public void MkWrite_undoes_Wrprotect_on_writable_entries_without_saved_dirty()
    {
        Prop.ForAll(Words, v =>
        {
            ulong w = (v | Rw) & ~SavedDirty;
            return new Pte(w).Wrprotect().MkWrite().Value == w
                && new Pmd(w).Wrprotect().MkWrite().Value == w
                && new Pud(w).Wrprotect().MkWrite().Value == w;
        }).Check(Runs);
    }

    [Test]
    public void Dirtiness_survives_write_protection_and_making_writable()
    {
        Prop.ForAll(Words, v =>
        {
            var pte = new Pte(v);
            return pte.Wrprotect().Dirty == pte.Dirty
                && pte.MkWrite().Dirty == pte.Dirty
                && pte.MkSavedDirty().Dirty == pte.Dirty
                && pte.ClearSavedDirty().Dirty == pte.Dirty;
        }).Check(Runs);
    }

    [Test]
    public void No_helper_turns_an_entry_into_a_write_0_dirty_1_shadow_stack_lookalike()
    {
        static bool ShadowStackLike(ulong x) => (x & (Rw | Dirty)) == Dirty;
        Prop.ForAll(Words, Words, (v, prot) =>
        {
            if (ShadowStackLike(v))
                return true;
            var pte = new Pte(v);
            var pmd = new Pmd(v);
            ulong[] results =
            [
                pte.Wrprotect().Value, pte.MkWrite().Value, pte.MkWriteNovma().Value, pte.MkDirty().Value,
                pte.MkClean().Value, pte.MkUffdWp().Value, pte.Modify(prot).Value,
                pmd.Wrprotect().Value, pmd.MkWrite().Value, pmd.MkDirty().Value, pmd.Modify(prot).Value,
                new Pud(v).Wrprotect().Value, new Pud(v).MkDirty().Value,
            ];
            return !results.Any(ShadowStackLike);
        }).Check(Runs);
    }

    [Test]
    public void MkClean_after_MkDirty_leaves_only_soft_dirty_behind()
    {
        Prop.ForAll(Words, v => new Pte(v).MkDirty().MkClean().Value == ((v | SoftDirty) & ~DirtyBits)).Check(Runs);
    }

    [Test]
    public void Modify_keeps_the_pfn_of_ptes_and_huge_pmds_that_have_the_accessed_bit()
    {
        // With A set the modified entry is never the all-zero word, whose inversion state differs.
        Prop.ForAll(Words, Words, (v, prot) =>
        {
            ulong pte = v | Accessed;
            ulong huge = v | Accessed | Pse;
            return new Pte(pte).Modify(prot).Pfn == new Pte(pte).Pfn
                && new Pmd(huge).Modify(prot).Pfn == new Pmd(huge).Pfn;
        }).Check(Runs);
    }

    [Test]
    public void Advancing_a_present_or_PROT_NONE_pte_adds_to_its_pfn()
    {
        Prop.ForAll(Words, Words, (v, n) =>
        {
            ulong pte = (v & 1) != 0 ? v : v | ProtNone;
            ulong nr = n & 0xFFFF;
            return new Pte(pte).AdvancePfn(nr).Pfn == ((new Pte(pte).Pfn + nr) & Frames40);
        }).Check(Runs);
    }
}
