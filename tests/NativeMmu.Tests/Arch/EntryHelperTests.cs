using NativeMmu.Arch.X86;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Tests.Arch;

/// <summary>The pte/pmd/pud manipulators of arch/x86/include/asm/pgtable.h, pinned on concrete values.</summary>
public class EntryHelperTests
{
    // P|U|A|NX on PFN 0x12345: a clean, read-only user page.
    private const ulong CleanReadOnly = 0x8000_0000_1234_5025;
    // The same page writable and dirty.
    private const ulong DirtyWritable = 0x8000_0000_1234_5067;
    private const ulong Bit58 = 1UL << 58;

    [Test]
    public void Wrprotect_undoes_MkWrite_on_a_clean_entry()
    {
        var pte = new Pte(CleanReadOnly);
        Assert.That(pte.MkWrite().Wrprotect(), Is.EqualTo(pte));
    }

    [Test]
    public void MkWrite_undoes_Wrprotect_on_a_dirty_writable_entry()
    {
        var pte = new Pte(DirtyWritable);
        Assert.That(pte.Wrprotect().MkWrite(), Is.EqualTo(pte));
    }

    [Test]
    public void Wrprotect_moves_a_set_dirty_bit_to_saved_dirty()
    {
        Pte wp = new Pte(DirtyWritable).Wrprotect();
        Assert.Multiple(() =>
        {
            Assert.That(wp.Value, Is.EqualTo(0x8400_0000_1234_5025UL));
            Assert.That(wp.Write, Is.False);
            Assert.That(wp.Dirty, Is.True, "pte_dirty also reads SAVED_DIRTY");
            Assert.That(wp.Value & Dirty, Is.Zero, "no Write=0, Dirty=1 entry");
        });
    }

    [Test]
    public void MkWrite_moves_saved_dirty_back_to_the_dirty_bit()
        => Assert.That(new Pte(0x8400_0000_1234_5025).MkWrite().Value, Is.EqualTo(DirtyWritable));

    [Test]
    public void MkWriteNovma_sets_only_RW_and_leaves_saved_dirty_parked()
        => Assert.That(new Pte(0x8400_0000_1234_5025).MkWriteNovma().Value, Is.EqualTo(0x8400_0000_1234_5027UL));

    [Test]
    public void MkDirty_on_a_read_only_entry_lands_in_saved_dirty_and_sets_soft_dirty()
        => Assert.That(new Pte(CleanReadOnly).MkDirty().Value, Is.EqualTo(CleanReadOnly | Bit58 | SoftDirty));

    [Test]
    public void MkDirty_on_a_writable_entry_sets_dirty_and_soft_dirty()
        => Assert.That(new Pte(CleanReadOnly | Rw).MkDirty().Value, Is.EqualTo(CleanReadOnly | Rw | Dirty | SoftDirty));

    [Test]
    public void MkClean_clears_dirty_and_saved_dirty()
        => Assert.That(new Pte(DirtyWritable | Bit58).MkClean().Value, Is.EqualTo(DirtyWritable & ~Dirty));

    [Test]
    public void MkSavedDirty_moves_dirty_only_when_RW_is_clear()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(CleanReadOnly | Dirty).MkSavedDirty().Value, Is.EqualTo(CleanReadOnly | Bit58));
            Assert.That(new Pte(DirtyWritable).MkSavedDirty().Value, Is.EqualTo(DirtyWritable));
        });
    }

    [Test]
    public void ClearSavedDirty_moves_saved_dirty_back_only_when_RW_is_set()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(CleanReadOnly | Rw | Bit58).ClearSavedDirty().Value, Is.EqualTo(CleanReadOnly | Rw | Dirty));
            Assert.That(new Pte(CleanReadOnly | Bit58).ClearSavedDirty().Value, Is.EqualTo(CleanReadOnly | Bit58));
        });
    }

    [Test]
    public void MkYoung_and_MkOld_set_and_clear_only_accessed()
    {
        var pte = new Pte(DirtyWritable & ~Accessed);
        Assert.Multiple(() =>
        {
            Assert.That(pte.MkYoung().Value, Is.EqualTo(DirtyWritable));
            Assert.That(pte.MkYoung().MkOld(), Is.EqualTo(pte));
            Assert.That(pte.MkYoung().Young, Is.True);
        });
    }

    [Test]
    public void MkUffdWp_sets_uffd_wp_and_write_protects()
    {
        Pte marked = new Pte(DirtyWritable).MkUffdWp();
        Assert.Multiple(() =>
        {
            Assert.That(marked.Value, Is.EqualTo(0x8400_0000_1234_5025UL | UffdWp));
            Assert.That(marked.UffdWp, Is.True);
            Assert.That(marked.ClearUffdWp().Value, Is.EqualTo(0x8400_0000_1234_5025UL));
        });
    }

    [Test]
    public void The_single_bit_helpers_set_and_clear_their_own_bit()
    {
        var pte = new Pte(CleanReadOnly);
        Assert.Multiple(() =>
        {
            Assert.That(pte.MkSpecial().Value, Is.EqualTo(CleanReadOnly | 0x200));
            Assert.That(pte.MkHuge().Value, Is.EqualTo(CleanReadOnly | 0x80));
            Assert.That(pte.MkHuge().ClrHuge(), Is.EqualTo(pte));
            Assert.That(pte.MkGlobal().Value, Is.EqualTo(CleanReadOnly | 0x100));
            Assert.That(pte.MkGlobal().ClrGlobal(), Is.EqualTo(pte));
            Assert.That(pte.MkExec().Value, Is.EqualTo(CleanReadOnly & ~(1UL << 63)));
            Assert.That(pte.MkSoftDirty().Value, Is.EqualTo(CleanReadOnly | 0x800));
            Assert.That(pte.MkSoftDirty().ClearSoftDirty(), Is.EqualTo(pte));
        });
    }

    /// <summary>The bits each helper may change; everything else must come out as it went in.</summary>
    private static readonly (string Name, Func<Pte, Pte> Helper, ulong MayChange)[] PteHelpers =
    [
        ("mkyoung", p => p.MkYoung(), Accessed),
        ("mkold", p => p.MkOld(), Accessed),
        ("mkclean", p => p.MkClean(), Dirty | Bit58),
        ("mkdirty", p => p.MkDirty(), Dirty | Bit58 | SoftDirty),
        ("wrprotect", p => p.Wrprotect(), Rw | Dirty | Bit58),
        ("mkwrite", p => p.MkWrite(), Rw | Dirty | Bit58),
        ("mkwrite_novma", p => p.MkWriteNovma(), Rw),
        ("mksaveddirty", p => p.MkSavedDirty(), Dirty | Bit58),
        ("clear_saveddirty", p => p.ClearSavedDirty(), Dirty | Bit58),
        ("mkspecial", p => p.MkSpecial(), 1UL << 9),
        ("mkhuge", p => p.MkHuge(), 1UL << 7),
        ("clrhuge", p => p.ClrHuge(), 1UL << 7),
        ("mkglobal", p => p.MkGlobal(), 1UL << 8),
        ("clrglobal", p => p.ClrGlobal(), 1UL << 8),
        ("mkexec", p => p.MkExec(), 1UL << 63),
        ("mksoft_dirty", p => p.MkSoftDirty(), 1UL << 11),
        ("clear_soft_dirty", p => p.ClearSoftDirty(), 1UL << 11),
        ("mkuffd_wp", p => p.MkUffdWp(), (1UL << 10) | Rw | Dirty | Bit58),
        ("clear_uffd_wp", p => p.ClearUffdWp(), 1UL << 10),
        ("swp_mksoft_dirty", p => p.SwpMkSoftDirty(), 1UL << 1),
        ("swp_mkexclusive", p => p.SwpMkExclusive(), 1UL << 3),
        ("swp_mkuffd_wp", p => p.SwpMkUffdWp(), 1UL << 2),
        ("swp_clear_flags", p => p.SwpClearFlags(), 0xE),
    ];

    public static IEnumerable<TestCaseData> PteHelperCases()
        => PteHelpers.Select(h => new TestCaseData(h.Name).SetName($"Pte_{h.Name}_never_touches_bits_outside_0x{h.MayChange:x}"));

    [TestCaseSource(nameof(PteHelperCases))]
    public void Pte_helper_never_touches_other_bits(string name)
    {
        var (_, helper, mayChange) = PteHelpers.Single(h => h.Name == name);
        var rng = new Random(12345);
        foreach (ulong v in Samples(rng))
        {
            ulong changed = helper(new Pte(v)).Value ^ v;
            Assert.That(changed & ~mayChange, Is.Zero, $"{name}(0x{v:x16}) changed 0x{changed & ~mayChange:x}");
        }
    }

    private static readonly (string Name, Func<Pmd, Pmd> Helper, ulong MayChange)[] PmdHelpers =
    [
        ("mkyoung", p => p.MkYoung(), Accessed),
        ("mkold", p => p.MkOld(), Accessed),
        ("mkclean", p => p.MkClean(), Dirty | Bit58),
        ("mkdirty", p => p.MkDirty(), Dirty | Bit58 | SoftDirty),
        ("wrprotect", p => p.Wrprotect(), Rw | Dirty | Bit58),
        ("mkwrite", p => p.MkWrite(), Rw | Dirty | Bit58),
        ("mkwrite_novma", p => p.MkWriteNovma(), Rw),
        ("mkhuge", p => p.MkHuge(), 1UL << 7),
        ("mksoft_dirty", p => p.MkSoftDirty(), 1UL << 11),
        ("clear_soft_dirty", p => p.ClearSoftDirty(), 1UL << 11),
    ];

    public static IEnumerable<TestCaseData> PmdHelperCases()
        => PmdHelpers.Select(h => new TestCaseData(h.Name).SetName($"Pmd_{h.Name}_never_touches_bits_outside_0x{h.MayChange:x}"));

    [TestCaseSource(nameof(PmdHelperCases))]
    public void Pmd_helper_never_touches_other_bits(string name)
    {
        var (_, helper, mayChange) = PmdHelpers.Single(h => h.Name == name);
        foreach (ulong v in Samples(new Random(54321)))
        {
            ulong changed = helper(new Pmd(v)).Value ^ v;
            Assert.That(changed & ~mayChange, Is.Zero, $"{name}(0x{v:x16}) changed 0x{changed & ~mayChange:x}");
        }
    }

    [Test]
    public void Pud_helpers_never_touch_bits_outside_their_own()
    {
        foreach (ulong v in Samples(new Random(99)))
        {
            var pud = new Pud(v);
            Assert.Multiple(() =>
            {
                Assert.That((pud.MkYoung().Value ^ v) & ~Accessed, Is.Zero);
                Assert.That((pud.MkOld().Value ^ v) & ~Accessed, Is.Zero);
                Assert.That((pud.MkClean().Value ^ v) & ~(Dirty | Bit58), Is.Zero);
                Assert.That((pud.MkDirty().Value ^ v) & ~(Dirty | Bit58 | SoftDirty), Is.Zero);
                Assert.That((pud.Wrprotect().Value ^ v) & ~(Rw | Dirty | Bit58), Is.Zero);
                Assert.That((pud.MkWrite().Value ^ v) & ~(Rw | Dirty | Bit58), Is.Zero);
                Assert.That((pud.MkHuge().Value ^ v) & ~Pse, Is.Zero);
            });
        }
    }

    [Test]
    public void Pmd_and_pud_wrprotect_and_mkwrite_move_dirty_like_the_pte_ones()
    {
        const ulong huge = 0x8000_0001_2340_00E7;
        Assert.Multiple(() =>
        {
            Assert.That(new Pmd(huge).Wrprotect().Value, Is.EqualTo(0x8400_0001_2340_00A5UL));
            Assert.That(new Pmd(0x8400_0001_2340_00A5).MkWrite().Value, Is.EqualTo(huge));
            Assert.That(new Pud(huge).Wrprotect().Value, Is.EqualTo(0x8400_0001_2340_00A5UL));
            Assert.That(new Pud(0x8400_0001_2340_00A5).MkWrite().Value, Is.EqualTo(huge));
            Assert.That(new Pmd(0x8000_0001_2340_00A5).MkDirty().Value, Is.EqualTo(0x8400_0001_2340_08A5UL));
        });
    }

    [Test]
    public void Pmd_mkinvalid_clears_present_keeps_PSE_and_inverts_the_frame()
    {
        var huge = new Pmd(0x0000_0001_2340_10E7);
        Pmd invalid = huge.MkInvalid();
        Assert.Multiple(() =>
        {
            Assert.That(invalid.Value, Is.EqualTo(0x000F_FFFE_DCA0_10E6UL));
            Assert.That(invalid.Pfn, Is.EqualTo(huge.Pfn));
            Assert.That(invalid.Present, Is.True, "pmd_present still sees PSE");
            Assert.That(invalid.Leaf, Is.True);
            Assert.That(invalid.Protnone, Is.False);
        });
    }

    [Test]
    public void Pmd_mkinvalid_of_a_PROT_NONE_huge_entry_clears_protnone_and_keeps_the_pfn()
    {
        Pmd protnone = Pmd.PfnPmd(0x12_3400, PgProt.PageNone | Pse);
        Pmd invalid = protnone.MkInvalid();
        Assert.Multiple(() =>
        {
            Assert.That(protnone.Protnone, Is.True);
            Assert.That(invalid.Protnone, Is.False);
            Assert.That(invalid.Value & (Present | ProtNone), Is.Zero);
            Assert.That(invalid.Pfn, Is.EqualTo(0x12_3400UL));
        });
    }

    [Test]
    public void Pte_modify_to_PROT_NONE_inverts_the_frame_and_parks_dirty()
    {
        Pte none = new Pte(DirtyWritable).Modify(PgProt.PageNone);
        Assert.Multiple(() =>
        {
            Assert.That(none.Value, Is.EqualTo(0x040F_FFFF_EDCB_A120UL));
            Assert.That(none.Protnone, Is.True);
            Assert.That(none.Pfn, Is.EqualTo(0x12345UL));
            Assert.That(none.Dirty, Is.True);
        });
    }

    [Test]
    public void Pte_modify_back_from_PROT_NONE_restores_the_frame_and_dirty()
        => Assert.That(new Pte(0x040F_FFFF_EDCB_A120).Modify(PgProt.PageShared).Value, Is.EqualTo(DirtyWritable));

    [Test]
    public void Pte_modify_keeps_the_change_mask_and_takes_the_rest_from_newprot()
    {
        // Kept from the old entry: PFN, PWT, PCD, PAT, SPECIAL, UFFD_WP, SOFT_DIRTY and A (clear here).
        // Taken from newprot: P, RW, U, G, the protection key and NX. newprot's A is ignored.
        const ulong old = 0x0000_0000_1234_5E99; // P|PWT|PCD|PAT|SPECIAL|UFFD_WP|SOFT_DIRTY
        ulong newprot = PgProt.PageShared | (5UL << 59) | Global | Accessed;
        Pte modified = new Pte(old).Modify(newprot);
        Assert.That(modified.Value, Is.EqualTo(0x8000_0000_1234_5E98UL | Present | Rw | User | (5UL << 59) | Global));
    }

    [Test]
    public void Pte_modify_never_takes_dirty_from_newprot()
        => Assert.That(new Pte(CleanReadOnly).Modify(PgProt.PageSharedExec | Dirty).Dirty, Is.False);

    [Test]
    public void Pmd_modify_keeps_PSE_and_PAT_LARGE()
    {
        Pmd modified = new Pmd(0x0000_0001_2340_10E7).Modify(PgProt.PageReadonly);
        Assert.Multiple(() =>
        {
            Assert.That(modified.Value & (Pse | PatLarge), Is.EqualTo(Pse | PatLarge));
            Assert.That(modified.Pfn, Is.EqualTo(0x12_3400UL));
            Assert.That(modified.Write, Is.False);
        });
    }

    [Test]
    public void Pmd_modify_keeps_a_set_dirty_bit_parking_it_in_saved_dirty_when_read_only()
    {
        // Until 6.17 pmd_modify masked D out (val &= _HPAGE_CHG_MASK & ~_PAGE_DIRTY), so a dirty THP
        // looked clean after mprotect and MADV_FREE could lose data; the 2025 fix keeps it.
        Pmd modified = new Pmd(0x8000_0001_2340_00E7).Modify(PgProt.PageReadonly);
        Assert.That(modified.Value, Is.EqualTo(0x8400_0001_2340_00A5UL));
        Assert.That(modified.Dirty, Is.True, "pmd_dirty must still see the page as dirty");
    }

    [Test]
    public void Pte_advance_pfn_steps_up_and_an_inverted_frame_steps_down()
    {
        Pte present = Pte.PfnPte(0x1234, PgProt.PageShared);
        Pte none = Pte.PfnPte(0x1234, PgProt.PageNone);
        Assert.Multiple(() =>
        {
            Assert.That(present.AdvancePfn(3).Pfn, Is.EqualTo(0x1237UL));
            Assert.That(none.AdvancePfn(3).Pfn, Is.EqualTo(0x1237UL));
            Assert.That(none.AdvancePfn(1).Value, Is.EqualTo(0x000F_FFFF_FEDC_A120UL));
            Assert.That(present.AdvancePfn(0), Is.EqualTo(present));
        });
    }

    [Test]
    public void Table_pointers_carry_PAGE_TABLE_or_KERNPG_TABLE()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Pmd.MkTable(0x1234).Value, Is.EqualTo(0x123_4067UL));
            Assert.That(Pmd.MkKernelTable(0x1234).Value, Is.EqualTo(0x123_4063UL));
            Assert.That(Pud.MkTable(0x1234).Value, Is.EqualTo(0x123_4067UL));
            Assert.That(P4d.MkTable(0x1234).Value, Is.EqualTo(0x123_4067UL));
            Assert.That(Pgd.MkKernelTable(0x1234).Value, Is.EqualTo(0x123_4063UL));
        });
    }

    /// <summary>Random and shaped 64-bit values: every combination of the flag bits that matter here, and noise.</summary>
    internal static IEnumerable<ulong> Samples(Random rng)
    {
        yield return 0;
        yield return ulong.MaxValue;
        foreach (ulong v in new[] { CleanReadOnly, DirtyWritable, 0x040F_FFFF_EDCB_A120UL, 0x07FF_FFFF_FFFF_FC0EUL })
            yield return v;
        for (int bits = 0; bits < 16; bits++)
        {
            // RW, D, SAVED_DIRTY and P in all combinations, on a random word.
            ulong v = (ulong)rng.NextInt64() & ~(Rw | Dirty | Bit58 | Present);
            if ((bits & 1) != 0) v |= Rw;
            if ((bits & 2) != 0) v |= Dirty;
            if ((bits & 4) != 0) v |= Bit58;
            if ((bits & 8) != 0) v |= Present;
            yield return v;
        }
        for (int i = 0; i < 200; i++)
            yield return (ulong)rng.NextInt64() ^ ((ulong)rng.Next(2) << 63);
    }
}
