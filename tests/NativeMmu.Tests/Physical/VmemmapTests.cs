using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Physical;

/// <summary>The vmemmap: struct pages in arena frames, reached through init_mm's page table.</summary>
public unsafe class VmemmapTests
{
    [TestCase(4, 0xffff_ea00_0000_0000UL)]
    [TestCase(5, 0xffd4_0000_0000_0000UL)]
    public void Vmemmap_starts_at_the_kernels_vmemmap_base(int levels, ulong start)
    {
        using Kernel kernel = TestSupport.Boot(cpus: 1, pagingLevels: levels);
        Assert.That(kernel.Machine.Vmemmap.Start, Is.EqualTo(start));
        Assert.That(kernel.Machine.Vmemmap.PageVaddr(5), Is.EqualTo(start + 5 * 64), "VMEMMAP_START + pfn * sizeof(struct page)");
    }

    [Test]
    public void Pfn_to_page_lands_inside_the_vmemmap_frames()
    {
        using Kernel kernel = TestSupport.Boot(cpus: 1);
        Machine m = kernel.Machine;
        Vmemmap v = m.Vmemmap;
        byte* lo = m.Memory.FrameAddress(v.FirstFramePfn);
        byte* hi = m.Memory.FrameAddress(v.FirstFramePfn + v.FrameCount);
        Assert.That(v.FrameCount * Geometry.PageSize, Is.GreaterThanOrEqualTo(m.Memory.Frames * 64), "room for every struct page");
        Assert.That(v.FirstFramePfn + v.FrameCount, Is.LessThanOrEqualTo(m.Allocator.ZoneStartPfn), "the vmemmap frames are reserved at boot");
        foreach (ulong pfn in new ulong[] { 0, 1, 63, 64, 65, 1000, m.Memory.Frames / 2, m.Memory.Frames - 1 })
        {
            byte* page = (byte*)v.PfnToPage(pfn);
            Assert.That(page >= lo && page + 64 <= hi, Is.True, $"struct page of pfn {pfn:x} is inside the vmemmap frames");
            Assert.That((ulong)(page - lo), Is.EqualTo(pfn * 64), "the vmemmap is one linear array");
            Assert.That(v.PfnOfVaddr(v.PageVaddr(pfn)), Is.EqualTo(pfn), "page_to_pfn inverts pfn_to_page");
        }
    }

    [TestCase(4)]
    [TestCase(5)]
    public void The_kernel_page_table_maps_the_vmemmap_with_2MiB_leaves(int levels)
    {
        // 192 MiB of memory needs 3 MiB of struct pages: two PSE leaves.
        using Kernel kernel = TestSupport.Boot(cpus: 1, memoryBytes: 192UL << 20, pagingLevels: levels);
        Machine m = kernel.Machine;
        Vmemmap v = m.Vmemmap;
        PagingMode mode = m.Paging;
        Assert.That(v.FrameCount, Is.EqualTo(2 * (ulong)Geometry.HPagePmdNr));
        Assert.That(v.FirstFramePfn % (ulong)Geometry.HPagePmdNr, Is.Zero, "the struct pages sit in 2 MiB aligned blocks");

        for (ulong off = 0; off < v.FrameCount * Geometry.PageSize; off += Geometry.PmdSize)
        {
            ulong va = v.Start + off;
            ulong* table = (ulong*)m.Memory.FrameAddress(v.PgdPfn);
            ulong entry = table[mode.PgdIndex(va)];
            if (mode.L5Enabled)
            {
                Assert.That(entry & PageTableBits.Present, Is.Not.Zero, "PGD entry");
                table = (ulong*)m.Memory.FrameAddress(new Pgd(entry).Pfn);
                entry = table[Geometry.P4dIndex(va)];
            }
            Assert.That(entry & PageTableBits.Present, Is.Not.Zero, "P4D entry");
            table = (ulong*)m.Memory.FrameAddress(new P4d(entry).Pfn);
            var pud = new Pud(table[Geometry.PudIndex(va)]);
            Assert.That(pud.Present && !pud.Leaf, Is.True, "the PUD entry points to a PMD table");
            table = (ulong*)m.Memory.FrameAddress(pud.Pfn);
            var pmd = new Pmd(table[Geometry.PmdIndex(va)]);
            Assert.Multiple(() =>
            {
                Assert.That(pmd.Leaf, Is.True, $"the vmemmap at {va:x} is a PSE leaf");
                Assert.That(pmd.Value & PageTableBits.Present, Is.Not.Zero);
                Assert.That(pmd.User, Is.False, "a kernel mapping");
                Assert.That(pmd.Pfn, Is.EqualTo(v.FirstFramePfn + (off >> Geometry.PageShift)), "the leaf maps the struct page frames");
            });
        }
        // And a struct page in the second leaf is reached through it.
        ulong far = (ulong)Geometry.HPagePmdNr * Vmemmap.PagesPerVmemmapPage + 3;
        Assert.That((ulong)((byte*)v.PfnToPage(far) - m.Memory.Base), Is.EqualTo((v.FirstFramePfn << Geometry.PageShift) + far * 64));
    }

    [Test]
    public void Every_process_pgd_shares_the_kernel_half_of_init_mm()
    {
        using Kernel kernel = TestSupport.Boot(cpus: 1);
        Process p = kernel.CreateProcess();
        Machine m = kernel.Machine;
        ulong* user = (ulong*)m.Memory.FrameAddress(p.Mm.PgdPfn);
        ulong* init = (ulong*)m.Memory.FrameAddress(m.Vmemmap.PgdPfn);
        int vmemmapSlot = m.Paging.PgdIndex(m.Vmemmap.Start);
        Assert.That(init[vmemmapSlot], Is.Not.Zero);
        Assert.That(user[vmemmapSlot], Is.EqualTo(init[vmemmapSlot]), "pgd_ctor clones the kernel PGD entries");
        for (int i = 0; i < PgTable.KernelPgdBoundary; i++)
            Assert.That(user[i], Is.Zero, $"user PGD slot {i} starts empty");
        Page* pgd = m.Vmemmap.PfnToPage(p.Mm.PgdPfn);
        Assert.That(pgd->PageType, Is.EqualTo(PageTypes.Table << 24), "the PGD page is typed PGTY_table");
    }
}
