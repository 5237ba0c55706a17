using System.Runtime.InteropServices;
using NativeMmu.Arch.X86;
using NativeMmu.Physical;

namespace NativeMmu.Tests.Physical;

/// <summary>clear_page: exactly the 4 KiB page it is given goes to zero, whichever primitive this system uses.</summary>
public unsafe class ClearPageTests
{
    [Test]
    public void Clear_page_zeroes_the_page_and_not_a_byte_beside_it()
    {
        const int size = 3 * (int)Geometry.PageSize;
        byte* buffer = (byte*)NativeMemory.AlignedAlloc(size, (nuint)Geometry.PageSize);
        try
        {
            var rng = new Random(19);
            var span = new Span<byte>(buffer, size);
            for (int round = 0; round < 8; round++)
            {
                rng.NextBytes(span);
                for (int i = 0; i < size; i++) if (span[i] == 0) span[i] = 1;
                PhysicalMemory.ClearPage(buffer + Geometry.PageSize);
                for (int i = 0; i < size; i++)
                {
                    bool inside = i >= (int)Geometry.PageSize && i < 2 * (int)Geometry.PageSize;
                    if (inside != (span[i] == 0)) Assert.Fail($"byte {i} is {span[i]} after clearing page 1");
                }
            }
        }
        finally
        {
            NativeMemory.AlignedFree(buffer);
        }
    }

    [Test]
    public void A_zeroed_allocation_comes_back_zero_in_every_page_when_all_free_memory_is_dirty()
    {
        using Kernel kernel = TestSupport.Boot(cpus: 1);
        FrameAllocator alloc = kernel.Machine.Allocator;
        PhysicalMemory mem = kernel.Machine.Memory;
        foreach (int order in new[] { 0, 2, 9 })
        {
            // Dirty every block the allocator can hand out at this order, then give them all back.
            var taken = new List<ulong>();
            for (ulong pfn; (pfn = alloc.AllocPages(0, order, Gfp.None)) != 0;)
            {
                for (ulong i = 0; i < (1UL << order); i++) mem.Frame(pfn + i).Fill(0xa5);
                taken.Add(pfn);
            }
            Assert.That(taken, Is.Not.Empty);
            foreach (ulong pfn in taken) alloc.FreePages(0, pfn, order);
            ulong zeroed = alloc.AllocPages(0, order, Gfp.Zero);
            Assert.That(zeroed, Is.Not.Zero);
            for (ulong i = 0; i < (1UL << order); i++)
                Assert.That(mem.Frame(zeroed + i).IndexOfAnyExcept((byte)0), Is.EqualTo(-1), $"page {i} of the order-{order} block is zero");
            alloc.FreePages(0, zeroed, order);
        }
    }
}
