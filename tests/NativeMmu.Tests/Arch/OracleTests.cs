using NativeMmu.Fuzz.Oracle;

namespace NativeMmu.Tests.Arch;

/// <summary>The oracle on its own: its bit map, and the kernel helpers production does not have yet.</summary>
public class OracleTests
{
    [TestCase(0, "Present")]
    [TestCase(1, "Writable")]
    [TestCase(2, "UserMode")]
    [TestCase(3, "WriteThrough")]
    [TestCase(4, "CacheDisable")]
    [TestCase(5, "Accessed")]
    [TestCase(6, "Dirty")]
    [TestCase(7, "PageSize")]
    [TestCase(8, "Global")]
    [TestCase(9, "Special")]
    [TestCase(10, "UffdWp")]
    [TestCase(11, "SoftDirty")]
    [TestCase(57, "Software4")]
    [TestCase(58, "SavedDirty")]
    [TestCase(63, "ExecuteDisable")]
    public void Each_single_bit_decodes_into_its_named_flag(int bit, string field)
    {
        DecodedEntry e = DecodedEntry.Decode(1UL << bit);
        var set = typeof(DecodedEntry).GetFields()
            .Where(f => f.FieldType == typeof(bool) && (bool)f.GetValue(e)!)
            .Select(f => f.Name)
            .ToArray();
        Assert.Multiple(() =>
        {
            Assert.That(set, Is.EqualTo(new[] { field }));
            Assert.That(e.Frame, Is.Zero);
            Assert.That(e.Encode(), Is.EqualTo(1UL << bit));
        });
    }

    [Test]
    public void Bits_12_to_51_are_the_frame_number([Range(12, 51)] int bit)
        => Assert.That(DecodedEntry.Decode(1UL << bit).Frame, Is.EqualTo(1UL << (bit - 12)));

    [Test]
    public void Bits_52_to_56_are_unused_and_59_to_62_the_protection_key()
    {
        Assert.Multiple(() =>
        {
            Assert.That(DecodedEntry.Decode(0x01F0_0000_0000_0000).HighUnused, Is.EqualTo(0x1F));
            Assert.That(DecodedEntry.Decode(0x7800_0000_0000_0000).ProtectionKey, Is.EqualTo(0xF));
            Assert.That(DecodedEntry.Decode(1UL << 59).ProtectionKey, Is.EqualTo(1));
        });
    }

    [Test]
    public void Decoding_and_encoding_round_trips_every_word()
    {
        var rng = new Random(7);
        for (int i = 0; i < 10_000; i++)
        {
            ulong v = (ulong)rng.NextInt64() ^ ((ulong)rng.Next(2) << 63);
            Assert.That(DecodedEntry.Decode(v).Encode(), Is.EqualTo(v));
        }
    }

    [Test]
    public void Pud_modify_and_pmd_modify_both_keep_dirty()
    {
        const ulong huge = 0x8000_0001_0000_00E7; // 1 GiB leaf, writable and dirty
        Assert.Multiple(() =>
        {
            Assert.That(OraclePud.Modify(huge, OracleProt.PageReadonly), Is.EqualTo(0x8400_0001_0000_00A5UL));
            Assert.That(OraclePmd.Modify(huge, OracleProt.PageReadonly), Is.EqualTo(0x8400_0001_0000_00A5UL));
        });
    }

    [Test]
    public void Pud_mkinvalid_inverts_the_1_GiB_frame_and_keeps_PSE()
    {
        const ulong huge = 0x0000_0040_4000_10E7;
        ulong invalid = OraclePud.MkInvalid(huge);
        Assert.Multiple(() =>
        {
            Assert.That(invalid, Is.EqualTo(0x000F_FFBF_8000_10E6UL));
            Assert.That(OraclePud.Pfn(invalid), Is.EqualTo(OraclePud.Pfn(huge)));
            Assert.That(OraclePud.Present(invalid), Is.False);
            Assert.That(OraclePud.Leaf(invalid), Is.True);
        });
    }

    [Test]
    public void Mkwrite_shstk_makes_a_write_0_dirty_1_entry()
        => Assert.That(OraclePte.MkWriteShstk(0x8000_0000_1234_5027), Is.EqualTo(0x8000_0000_1234_5065UL));

    [Test]
    public void Pmd_uffd_wp_write_protects_like_the_pte_one()
        => Assert.That(OraclePmd.MkUffdWp(0x8000_0001_2340_00E7), Is.EqualTo(0x8400_0001_2340_04A5UL));

    [Test]
    public void The_oracle_flag_sets_match_pgtable_types()
    {
        Assert.Multiple(() =>
        {
            Assert.That(OracleProt.PageShared, Is.EqualTo(0x8000_0000_0000_0027UL));
            Assert.That(OracleProt.PageSharedExec, Is.EqualTo(0x27UL));
            Assert.That(OracleProt.PageCopy, Is.EqualTo(0x8000_0000_0000_0025UL));
            Assert.That(OracleProt.PageReadonlyExec, Is.EqualTo(0x25UL));
            Assert.That(OracleProt.PageKernel, Is.EqualTo(0x8000_0000_0000_0163UL));
            Assert.That(OracleProt.PageKernelRo, Is.EqualTo(0x8000_0000_0000_0161UL));
        });
    }

    [Test]
    public void Swap_type_and_offset_decoding_ignore_bits_0_to_8()
    {
        ulong pte = OracleSwap.ArchEncode(9, 0x1234) | 0x1FF;
        Assert.Multiple(() =>
        {
            Assert.That(OracleSwap.ArchType(pte), Is.EqualTo(9UL));
            Assert.That(OracleSwap.ArchOffset(pte), Is.EqualTo(0x1234UL));
        });
    }
}
