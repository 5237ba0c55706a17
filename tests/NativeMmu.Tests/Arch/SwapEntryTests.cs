using NativeMmu.Arch.X86;
using NativeMmu.Fuzz.Oracle;

namespace NativeMmu.Tests.Arch;

/// <summary>The x86-64 swap PTE layout and the arch-independent swp_entry_t.</summary>
public class SwapEntryTests
{
    private const ulong MaxOffset = (1UL << 50) - 1;

    [TestCase(0UL, 0, 0x07FF_FFFF_FFFF_FE00UL, TestName = "Swap_offset_0_of_type_0_encodes_as_0x07FFFFFFFFFFFE00")]
    [TestCase(1UL, 0, 0x07FF_FFFF_FFFF_FC00UL, TestName = "Swap_offset_1_of_type_0_encodes_as_0x07FFFFFFFFFFFC00")]
    [TestCase(MaxOffset, 31, 0xF800_0000_0000_0000UL, TestName = "Swap_max_offset_of_type_31_encodes_as_the_type_bits_alone")]
    [TestCase(5UL, 2, 0x17FF_FFFF_FFFF_F400UL, TestName = "Swap_offset_5_of_type_2_encodes_as_0x17FFFFFFFFFFF400")]
    public void Arch_encoding(ulong offset, int type, ulong expected)
    {
        Assert.Multiple(() =>
        {
            Assert.That(SwpEntry.ArchEncode(type, offset).Value, Is.EqualTo(expected));
            Assert.That(OracleSwap.ArchEncode((ulong)type, offset), Is.EqualTo(expected));
        });
    }

    [Test]
    public void Every_type_round_trips_with_offsets_0_1_and_max([Range(0, 31)] int type)
    {
        foreach (ulong offset in new[] { 0UL, 1UL, MaxOffset, 0x1234UL })
        {
            Pte pte = SwpEntry.ArchEncode(type, offset);
            Assert.Multiple(() =>
            {
                Assert.That(SwpEntry.ArchType(pte), Is.EqualTo(type));
                Assert.That(SwpEntry.ArchOffset(pte), Is.EqualTo(offset));
                Assert.That(SwpEntry.FromPte(pte), Is.EqualTo(SwpEntry.Make(type, offset)));
                Assert.That(SwpEntry.Make(type, offset).ToPte(), Is.EqualTo(pte));
                Assert.That(pte.Value & 0x1FF, Is.Zero, "bits 0..8 (P, PSE, PROTNONE included) stay clear");
            });
        }
    }

    [Test]
    public void A_swap_entry_is_neither_present_nor_none([Range(0, 31)] int type)
    {
        foreach (ulong offset in new[] { 0UL, 1UL, 0x1234UL })
        {
            Pte pte = SwpEntry.ArchEncode(type, offset);
            Assert.Multiple(() =>
            {
                Assert.That(pte.Present, Is.False);
                Assert.That(pte.None, Is.False);
                Assert.That(pte.IsSwap, Is.True);
                Assert.That(new Pmd(pte.Value).Present, Is.False, "PSE stays clear, so pmd_present is false too");
            });
        }
    }

    [Test]
    public void The_largest_offset_of_type_0_encodes_as_an_empty_entry()
    {
        // The inversion makes offset 2^50 - 1 of type 0 the all-zero word, i.e. pte_none: the swap code
        // must never hand out that offset (the L1TF cap on the swap size keeps far below it).
        Pte pte = SwpEntry.ArchEncode(0, MaxOffset);
        Assert.Multiple(() =>
        {
            Assert.That(pte.Value, Is.Zero);
            Assert.That(pte.None, Is.True);
        });
    }

    [Test]
    public void Offset_bits_above_49_are_lost()
        => Assert.That(SwpEntry.ArchOffset(SwpEntry.ArchEncode(3, (1UL << 50) | 9)), Is.EqualTo(9UL));

    [Test]
    public void The_swap_flags_use_bits_1_to_3_and_do_not_disturb_decoding()
    {
        Pte pte = SwpEntry.ArchEncode(7, 0x1234);
        Pte flagged = pte.SwpMkSoftDirty().SwpMkUffdWp().SwpMkExclusive();
        Assert.Multiple(() =>
        {
            Assert.That(flagged.Value ^ pte.Value, Is.EqualTo(0xEUL));
            Assert.That(pte.SwpMkSoftDirty().Value ^ pte.Value, Is.EqualTo(0x2UL));
            Assert.That(pte.SwpMkUffdWp().Value ^ pte.Value, Is.EqualTo(0x4UL));
            Assert.That(pte.SwpMkExclusive().Value ^ pte.Value, Is.EqualTo(0x8UL));
            Assert.That(flagged.SwpSoftDirty && flagged.SwpUffdWp && flagged.SwpExclusive, Is.True);
            Assert.That(SwpEntry.FromPte(flagged), Is.EqualTo(SwpEntry.Make(7, 0x1234)));
            Assert.That(flagged.SwpClearFlags(), Is.EqualTo(pte));
            Assert.That(flagged.SwpClearExclusive().SwpExclusive, Is.False);
            Assert.That(flagged.SwpClearSoftDirty().SwpSoftDirty, Is.False);
            Assert.That(flagged.SwpClearUffdWp().SwpUffdWp, Is.False);
        });
    }

    [Test]
    public void Swp_entry_t_puts_the_type_at_bit_58()
    {
        SwpEntry e = SwpEntry.Make(5, 0x1234);
        Assert.Multiple(() =>
        {
            Assert.That(e.Val, Is.EqualTo((5UL << 58) | 0x1234));
            Assert.That(e.Type, Is.EqualTo(5));
            Assert.That(e.Offset, Is.EqualTo(0x1234UL));
            Assert.That(SwpEntry.Make(1, ulong.MaxValue).Offset, Is.EqualTo((1UL << 58) - 1));
            Assert.That(OracleSwap.Entry(5, 0x1234), Is.EqualTo(e.Val));
        });
    }

    [Test]
    public void The_special_types_take_the_top_eight_of_the_32_type_values()
    {
        Assert.Multiple(() =>
        {
            Assert.That(SwpEntry.MaxSwapfiles, Is.EqualTo(24));
            Assert.That(SwpEntry.SwpHwpoison, Is.EqualTo(24));
            Assert.That(SwpEntry.SwpMigrationRead, Is.EqualTo(25));
            Assert.That(SwpEntry.SwpMigrationReadExclusive, Is.EqualTo(26));
            Assert.That(SwpEntry.SwpMigrationWrite, Is.EqualTo(27));
            Assert.That(SwpEntry.SwpDeviceWrite, Is.EqualTo(28));
            Assert.That(SwpEntry.SwpDeviceRead, Is.EqualTo(29));
            Assert.That(SwpEntry.SwpDeviceExclusive, Is.EqualTo(30));
            Assert.That(SwpEntry.SwpPteMarker, Is.EqualTo(31));
        });
    }

    [Test]
    public void Each_type_is_classified_as_exactly_one_kind([Range(0, 31)] int type)
    {
        SwpEntry e = SwpEntry.Make(type, 1);
        int kinds = (e.IsMigration ? 1 : 0) + (e.IsHwpoison ? 1 : 0) + (e.IsDevicePrivate ? 1 : 0)
            + (e.IsDeviceExclusive ? 1 : 0) + (e.IsPteMarker ? 1 : 0);
        Assert.Multiple(() =>
        {
            Assert.That(e.IsNonSwap, Is.EqualTo(type >= 24));
            Assert.That(kinds, Is.EqualTo(type >= 24 ? 1 : 0));
            Assert.That(e.IsMigration, Is.EqualTo(OracleSwap.IsMigration(e.Val)));
            Assert.That(e.IsDevicePrivate, Is.EqualTo(OracleSwap.IsDevicePrivate(e.Val)));
        });
    }

    [Test]
    public void Pte_marker_bits_are_the_low_three_offset_bits()
    {
        Assert.Multiple(() =>
        {
            Assert.That(SwpEntry.PteMarkerUffdWp, Is.EqualTo(1UL));
            Assert.That(SwpEntry.PteMarkerPoisoned, Is.EqualTo(2UL));
            Assert.That(SwpEntry.PteMarkerGuard, Is.EqualTo(4UL));
            Assert.That(SwpEntry.Make(SwpEntry.SwpPteMarker, SwpEntry.PteMarkerGuard).ToPte().IsSwap, Is.True);
        });
    }
}
