using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;

namespace NativeMmu.Tests.Arch;

/// <summary>Pfn, PhysAddr and VirtAddr: one word each, with the kernel's conversions between them.</summary>
public class AddressTypeTests
{
    [Test]
    public void Each_address_type_is_one_word()
    {
        Assert.Multiple(() =>
        {
            Assert.That(Unsafe.SizeOf<Pfn>(), Is.EqualTo(8), "sizeof(Pfn)");
            Assert.That(Unsafe.SizeOf<PhysAddr>(), Is.EqualTo(8), "sizeof(PhysAddr)");
            Assert.That(Unsafe.SizeOf<VirtAddr>(), Is.EqualTo(8), "sizeof(VirtAddr)");
        });
    }

    [TestCase(0UL, 0UL)]
    [TestCase(1UL, 0x1000UL)]
    [TestCase(0x12345UL, 0x12345000UL)]
    [TestCase(0xF_FFFF_FFFFUL, 0xFFFF_FFFF_F000UL)]
    public void Pfn_phys_and_phys_pfn_are_inverse_on_frame_boundaries(ulong pfn, ulong phys)
    {
        Assert.Multiple(() =>
        {
            Assert.That(new Pfn(pfn).Phys.Value, Is.EqualTo(phys), "PFN_PHYS");
            Assert.That(new PhysAddr(phys).Pfn, Is.EqualTo(new Pfn(pfn)), "PHYS_PFN");
        });
    }

    [Test]
    public void A_physical_address_inside_a_frame_names_that_frame_and_the_byte_in_it()
    {
        var a = new PhysAddr(0x12345678);
        Assert.Multiple(() =>
        {
            Assert.That(a.Pfn.Value, Is.EqualTo(0x12345UL), "PHYS_PFN drops the offset");
            Assert.That(a.PageOffset, Is.EqualTo(0x678UL), "offset_in_page");
            Assert.That(a.PageAlignDown.Value, Is.EqualTo(0x12345000UL));
            Assert.That((a + 0x988).Pfn.Value, Is.EqualTo(0x12346UL), "the next frame starts 0x988 bytes on");
        });
    }

    [Test]
    public void Pfn_alignment_and_arithmetic_are_in_frames()
    {
        var p = new Pfn(0x200);
        Assert.Multiple(() =>
        {
            Assert.That(p.IsAligned(9), Is.True, "0x200 starts a 2 MiB block");
            Assert.That((p + 1).IsAligned(1), Is.False);
            Assert.That((p + 8) - p, Is.EqualTo(8UL));
            Assert.That(p - 1 < p, Is.True);
        });
    }

    [Test]
    public void A_virtual_address_splits_into_the_indices_of_every_level()
    {
        // 0x7f12_3456_789a: PGD 254, PUD 72, PMD 418, PTE 359 (4-level); offset 0x89a.
        var va = new VirtAddr(0x7f12_3456_789aUL);
        Assert.Multiple(() =>
        {
            Assert.That(va.PgdIndex(PagingMode.FourLevel), Is.EqualTo(254));
            Assert.That(va.PudIndex, Is.EqualTo(72));
            Assert.That(va.PmdIndex, Is.EqualTo(418));
            Assert.That(va.PteIndex, Is.EqualTo(359));
            Assert.That(va.PageOffset, Is.EqualTo(0x89aUL));
            Assert.That(va.PageNumber, Is.EqualTo(0x7f12_3456_789aUL >> 12));
            Assert.That(va.HugePageNumber, Is.EqualTo(0x7f12_3456_789aUL >> 21));
            Assert.That(va.PmdOffset, Is.EqualTo(0x7f12_3456_789aUL & 0x1f_ffff));
            Assert.That(va.PageAlignDown.Value, Is.EqualTo(0x7f12_3456_7000UL));
            Assert.That(va.PmdAlignDown.Value, Is.EqualTo(0x7f12_3440_0000UL));
        });
    }

    [Test]
    public void The_pgd_index_follows_the_paging_mode()
    {
        var va = new VirtAddr(0x00ff_8000_0000_0000UL);
        Assert.Multiple(() =>
        {
            Assert.That(va.PgdIndex(PagingMode.FiveLevel), Is.EqualTo(255), "PGDIR_SHIFT 48 with LA57");
            Assert.That(va.P4dIndex, Is.EqualTo(256), "bits 47..39");
            Assert.That(new VirtAddr(0x7fff_ffff_f000UL).PgdIndex(PagingMode.FourLevel), Is.EqualTo(255), "PGDIR_SHIFT 39");
        });
    }
}
