using NativeMmu.Arch.X86;
using NativeMmu.Fuzz.Oracle;
using static NativeMmu.Arch.X86.PageTableBits;

namespace NativeMmu.Tests.Arch;

/// <summary>The physical-address field of every level, its PSE-dependent width and the L1TF inversion.</summary>
public class PfnEncodingTests
{
    [Test]
    public void Pte_pfn_round_trips_every_bit_of_the_physical_address_field([Range(12, 51)] int bit)
    {
        ulong pfn = 1UL << (bit - 12);
        Pte pte = Pte.PfnPte(pfn, PgProt.PageShared);
        Assert.Multiple(() =>
        {
            Assert.That(pte.Value, Is.EqualTo((1UL << bit) | PgProt.PageShared));
            Assert.That(pte.Pfn, Is.EqualTo(pfn));
            Assert.That(OraclePte.Pfn(pte.Value), Is.EqualTo(pfn));
        });
    }

    [Test]
    public void Pte_pfn_round_trips_every_bit_under_PROT_NONE_inversion([Range(12, 51)] int bit)
    {
        ulong pfn = 1UL << (bit - 12);
        Pte pte = Pte.PfnPte(pfn, PgProt.PageNone);
        Assert.Multiple(() =>
        {
            Assert.That(pte.Value, Is.EqualTo((~(1UL << bit) & PtePfnMask) | PgProt.PageNone));
            Assert.That(pte.Pfn, Is.EqualTo(pfn));
            Assert.That(pte.Protnone, Is.True);
        });
    }

    [Test]
    public void Huge_pmd_pfn_round_trips_every_bit_from_21_to_51([Range(21, 51)] int bit)
    {
        ulong pfn = 1UL << (bit - 12);
        Pmd pmd = Pmd.PfnPmd(pfn, PgProt.PageKernelLarge);
        Assert.Multiple(() =>
        {
            Assert.That(pmd.Value, Is.EqualTo((1UL << bit) | PgProt.PageKernelLarge));
            Assert.That(pmd.Pfn, Is.EqualTo(pfn));
            Assert.That(Pmd.PfnPmd(pfn, PgProt.PageNone | Pse).Pfn, Is.EqualTo(pfn), "inverted");
        });
    }

    [Test]
    public void Huge_pmd_drops_pfn_bits_below_2_MiB([Range(12, 20)] int bit)
    {
        ulong pfn = 1UL << (bit - 12);
        Assert.Multiple(() =>
        {
            Assert.That(Pmd.PfnPmd(pfn, PgProt.PageKernelLarge).Pfn, Is.Zero);
            Assert.That(Pmd.PfnPmd(pfn, PgProt.PageNone | Pse).Pfn, Is.Zero);
        });
    }

    [Test]
    public void Huge_pud_pfn_round_trips_every_bit_from_30_to_51([Range(30, 51)] int bit)
    {
        ulong pfn = 1UL << (bit - 12);
        Pud pud = Pud.PfnPud(pfn, PgProt.PageKernelLarge);
        Assert.Multiple(() =>
        {
            Assert.That(pud.Value, Is.EqualTo((1UL << bit) | PgProt.PageKernelLarge));
            Assert.That(pud.Pfn, Is.EqualTo(pfn));
            Assert.That(Pud.PfnPud(pfn, PgProt.PageNone | Pse).Pfn, Is.EqualTo(pfn), "inverted");
        });
    }

    [Test]
    public void Huge_pud_drops_pfn_bits_below_1_GiB([Range(12, 29)] int bit)
        => Assert.That(Pud.PfnPud(1UL << (bit - 12), PgProt.PageKernelLarge).Pfn, Is.Zero);

    [Test]
    public void A_pfn_wider_than_40_bits_falls_off_the_top_of_the_field()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Pte.PfnPte(1UL << 40, PgProt.PageShared).Value, Is.EqualTo(PgProt.PageShared));
            Assert.That(Pte.PfnPte((1UL << 40) | 7, PgProt.PageShared).Pfn, Is.EqualTo(7UL));
        });
    }

    [Test]
    public void Pat_large_is_a_flag_of_a_huge_pmd_but_an_address_bit_of_a_table_pointer()
    {
        var leaf = new Pmd(0x0000_0001_2340_10E7);
        var table = new Pmd(0x0000_0001_2340_1067);
        Assert.Multiple(() =>
        {
            Assert.That(leaf.Pfn, Is.EqualTo(0x12_3400UL));
            Assert.That(leaf.Flags, Is.EqualTo(0x10E7UL));
            Assert.That(leaf.PfnMask, Is.EqualTo(PhysicalPmdPageMask));
            Assert.That(table.Pfn, Is.EqualTo(0x12_3401UL));
            Assert.That(table.Flags, Is.EqualTo(0x67UL));
            Assert.That(table.PfnMask, Is.EqualTo(PtePfnMask));
        });
    }

    [Test]
    public void PROT_NONE_on_pfn_0x1234_stores_the_inverted_frame()
        => Assert.That(Pte.PfnPte(0x1234, PgProt.PageNone).Value, Is.EqualTo(0x000F_FFFF_FEDC_B120UL));

    [Test]
    public void A_zero_pgprot_is_not_inverted()
        => Assert.That(Pte.PfnPte(0x1234, 0).Value, Is.EqualTo(0x123_4000UL));

    [Test]
    public void A_non_present_pgprot_other_than_PAGE_NONE_is_inverted_too()
        => Assert.That(Pte.PfnPte(0x1234, Accessed).Pfn, Is.EqualTo(0x1234UL));

    [Test]
    public void Modify_flips_the_inversion_both_ways()
    {
        Pte present = Pte.PfnPte(0xABCDE, PgProt.PageCopy);
        Pte none = present.Modify(PgProt.PageNone);
        Pte back = none.Modify(PgProt.PageCopy);
        Assert.Multiple(() =>
        {
            Assert.That(none.Value & PtePfnMask, Is.EqualTo(~(0xABCDEUL << 12) & PtePfnMask), "into PROT_NONE: inverted");
            Assert.That(none.Pfn, Is.EqualTo(0xABCDEUL));
            Assert.That(back, Is.EqualTo(present), "out of PROT_NONE: restored");
            Assert.That(none.Modify(PgProt.PageNone), Is.EqualTo(none), "PROT_NONE to PROT_NONE: no flip");
        });
    }

    [Test]
    public void Pmd_modify_flips_only_the_2_MiB_address_bits()
    {
        var huge = new Pmd(0x0000_0001_2340_10E7);
        Pmd none = huge.Modify(PgProt.PageNone);
        Assert.Multiple(() =>
        {
            Assert.That(none.Value & PhysicalPmdPageMask, Is.EqualTo(~0x1_2340_0000UL & PhysicalPmdPageMask));
            Assert.That(none.Value & PatLarge, Is.EqualTo(PatLarge), "PAT_LARGE is not inverted");
            Assert.That(none.Pfn, Is.EqualTo(0x12_3400UL));
            Assert.That(none.Modify(PgProt.PageCopy).Pfn, Is.EqualTo(0x12_3400UL));
        });
    }

    [Test]
    public void P4d_and_pgd_pfn_are_never_inverted()
    {
        Assert.Multiple(() =>
        {
            Assert.That(new P4d(0x000F_FFFF_FEDC_B120).Pfn, Is.EqualTo(0xFF_FFFF_EDCBUL));
            Assert.That(new Pgd(0x000F_FFFF_FEDC_B120).Pfn, Is.EqualTo(0xFF_FFFF_EDCBUL));
        });
    }
}
