using NativeMmu.Arch.X86;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Tests.Arch;

/// <summary>present / none / leaf / bad / protnone / write / dirty / young at every level.</summary>
public class EntryPredicateTests
{
    [TestCase(0x20UL)]
    [TestCase(0x40UL)]
    [TestCase(0x60UL)]
    [TestCase(0UL)]
    public void None_ignores_accessed_and_dirty(ulong v)
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(v).None, Is.True, "pte");
            Assert.That(new Pmd(v).None, Is.True, "pmd");
            Assert.That(new Pud(v).None, Is.True, "pud");
            Assert.That(new P4d(v).None, Is.True, "p4d");
        });
    }

    [Test]
    public void None_is_false_for_any_other_single_bit([Range(0, 63)] int bit)
    {
        ulong v = 1UL << bit;
        bool expected = v == Accessed || v == Dirty;
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(v).None, Is.EqualTo(expected));
            Assert.That(new Pmd(v).None, Is.EqualTo(expected));
            Assert.That(new Pud(v).None, Is.EqualTo(expected));
            Assert.That(new P4d(v).None, Is.EqualTo(expected));
        });
    }

    [Test]
    public void Pgd_none_with_5_levels_has_no_accessed_dirty_leniency()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pgd(0).IsNone(PagingMode.FiveLevel), Is.True);
            Assert.That(new Pgd(0x60).IsNone(PagingMode.FiveLevel), Is.False);
        });
    }

    [Test]
    public void A_folded_pgd_is_never_none_always_present_and_never_bad()
    {
        foreach (ulong v in new[] { 0UL, 0x60UL, ulong.MaxValue, 0x8000UL })
        {
            var pgd = new Pgd(v);
            Assert.Multiple(() =>
            {
                Assert.That(pgd.IsNone(PagingMode.FourLevel), Is.False);
                Assert.That(pgd.IsPresent(PagingMode.FourLevel), Is.True);
                Assert.That(pgd.IsBad(PagingMode.FourLevel), Is.False);
            });
        }
    }

    [TestCase(0x1UL, true, TestName = "Pte_present_when_P_is_set")]
    [TestCase(0x100UL, true, TestName = "Pte_present_when_only_PROTNONE_is_set")]
    [TestCase(0x80UL, false, TestName = "Pte_not_present_with_only_PAT_set")]
    [TestCase(0x07FF_FFFF_FFFF_FE00UL, false, TestName = "Pte_not_present_for_a_swap_entry")]
    public void Pte_present(ulong v, bool present) => Assert.That(new Pte(v).Present, Is.EqualTo(present));

    [TestCase(0x80UL, true, TestName = "Pmd_present_with_only_PSE_set_during_a_split")]
    [TestCase(0x100UL, true, TestName = "Pmd_present_with_only_PROTNONE_set")]
    [TestCase(0x1UL, true, TestName = "Pmd_present_when_P_is_set")]
    [TestCase(0x2UL, false, TestName = "Pmd_not_present_with_only_RW_set")]
    public void Pmd_present(ulong v, bool present) => Assert.That(new Pmd(v).Present, Is.EqualTo(present));

    [TestCase(0x1UL, true, TestName = "Pud_present_when_P_is_set")]
    [TestCase(0x80UL, false, TestName = "Pud_not_present_with_only_PSE")]
    [TestCase(0x100UL, false, TestName = "Pud_not_present_with_only_PROTNONE")]
    public void Pud_present(ulong v, bool present) => Assert.That(new Pud(v).Present, Is.EqualTo(present));

    [TestCase(0x120UL, true)]
    [TestCase(0x121UL, false)]
    [TestCase(0x20UL, false)]
    public void Protnone_means_G_without_P(ulong v, bool protnone)
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(v).Protnone, Is.EqualTo(protnone));
            Assert.That(new Pmd(v).Protnone, Is.EqualTo(protnone));
        });
    }

    [Test]
    public void Leaf_and_trans_huge_follow_PSE()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pmd(0x80).Leaf, Is.True);
            Assert.That(new Pmd(0x80).TransHuge, Is.True);
            Assert.That(new Pmd(0x67).Leaf, Is.False);
            Assert.That(new Pud(0x80).Leaf, Is.True);
            Assert.That(new Pud(0x67).Leaf, Is.False);
            Assert.That(new Pte(0x80).Huge, Is.True);
        });
    }

    [TestCase(0x123_4067UL, false, TestName = "Pmd_bad_is_false_for_a_user_table")]
    [TestCase(0x123_4063UL, false, TestName = "Pmd_bad_is_false_for_a_kernel_table")]
    [TestCase(0x123_4047UL, false, TestName = "Pmd_bad_ignores_accessed")]
    [TestCase(0x123_4043UL, false, TestName = "Pmd_bad_is_false_for_exactly_P_RW_D")]
    [TestCase(0x123_4027UL, true, TestName = "Pmd_bad_needs_dirty")]
    [TestCase(0x123_4065UL, true, TestName = "Pmd_bad_needs_RW")]
    [TestCase(0x123_4066UL, true, TestName = "Pmd_bad_needs_present")]
    [TestCase(0x8000_0000_0123_4067UL, true, TestName = "Pmd_bad_for_NX")]
    [TestCase(0x123_40E7UL, true, TestName = "Pmd_bad_for_a_huge_leaf")]
    [TestCase(0x123_4167UL, true, TestName = "Pmd_bad_for_global")]
    [TestCase(0x123_4867UL, true, TestName = "Pmd_bad_for_soft_dirty")]
    [TestCase(0x0400_0000_0123_4067UL, true, TestName = "Pmd_bad_for_saved_dirty")]
    [TestCase(0x0UL, true, TestName = "Pmd_bad_for_zero")]
    public void Pmd_bad(ulong v, bool bad) => Assert.That(new Pmd(v).Bad, Is.EqualTo(bad));

    [TestCase(0x123_4067UL, false, TestName = "Pud_bad_is_false_for_a_user_table")]
    [TestCase(0x123_4000UL, false, TestName = "Pud_bad_is_false_when_bits_are_missing")]
    [TestCase(0x123_4001UL, false, TestName = "Pud_bad_is_false_for_present_only")]
    [TestCase(0x8000_0000_0123_4067UL, true, TestName = "Pud_bad_for_NX")]
    [TestCase(0x123_4167UL, true, TestName = "Pud_bad_for_global")]
    [TestCase(0x123_40E7UL, true, TestName = "Pud_bad_for_PSE")]
    [TestCase(0x0000_0040_4000_10E7UL, true, TestName = "Pud_bad_for_a_huge_leaf_with_PAT_LARGE")]
    [TestCase(0x123_4077UL, true, TestName = "Pud_bad_for_PCD")]
    public void Pud_bad(ulong v, bool bad) => Assert.That(new Pud(v).Bad, Is.EqualTo(bad));

    [TestCase(0x123_4067UL, false, TestName = "P4d_bad_is_false_for_a_user_table")]
    [TestCase(0x8000_0000_0123_4067UL, false, TestName = "P4d_bad_ignores_NX_with_PTI")]
    [TestCase(0x123_4000UL, false, TestName = "P4d_bad_is_false_when_bits_are_missing")]
    [TestCase(0x123_40E7UL, true, TestName = "P4d_bad_for_PSE")]
    [TestCase(0x123_4167UL, true, TestName = "P4d_bad_for_global")]
    [TestCase(0x0800_0000_0123_4067UL, true, TestName = "P4d_bad_for_a_protection_key_bit")]
    public void P4d_bad(ulong v, bool bad) => Assert.That(new P4d(v).Bad, Is.EqualTo(bad));

    [TestCase(0x123_4067UL, false, TestName = "Pgd5_bad_is_false_for_a_user_table")]
    [TestCase(0x8000_0000_0123_4063UL, false, TestName = "Pgd5_bad_ignores_NX_and_user")]
    [TestCase(0x123_4027UL, true, TestName = "Pgd5_bad_needs_dirty")]
    [TestCase(0x123_4047UL, true, TestName = "Pgd5_bad_needs_accessed")]
    [TestCase(0x0UL, true, TestName = "Pgd5_bad_for_zero")]
    public void Pgd_bad_with_5_levels(ulong v, bool bad) => Assert.That(new Pgd(v).IsBad(PagingMode.FiveLevel), Is.EqualTo(bad));

    [Test]
    public void Dirty_reads_D_or_saved_dirty_and_write_reads_RW()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(Dirty).Dirty, Is.True);
            Assert.That(new Pte(SavedDirty).Dirty, Is.True);
            Assert.That(new Pte(SoftDirty).Dirty, Is.False);
            Assert.That(new Pmd(SavedDirty).Dirty, Is.True);
            Assert.That(new Pud(SavedDirty).Dirty, Is.True);
            Assert.That(new Pte(Rw).Write, Is.True);
            Assert.That(new Pte(Dirty).Write, Is.False, "no shadow stacks on the emulated CPU");
            Assert.That(new Pte(Accessed).Young, Is.True);
            Assert.That(new Pmd(Accessed).Young, Is.True);
        });
    }
}
