using NativeMmu.Cpus;
using NativeMmu.Physical;

namespace NativeMmu.Mm;

/// <summary>
/// The huge zero folio of mm/huge_memory.c: one zeroed PMD-order folio, allocated on the first read
/// fault that wants it (thp_zero_page_alloc) and shared by every mm that maps it. Each such mm holds
/// one reference (MMF_HUGE_ZERO_PAGE), GUP holds its own; the folio is freed when the last goes, which
/// is what the kernel's shrinker does once only its own reference is left.
/// </summary>
public sealed unsafe class HugeZeroFolio(Machine m)
{
    private readonly Lock _lock = new();

    /// <summary>The head PFN, or 0 while there is none.</summary>
    public ulong Pfn { get; private set; }

    /// <summary>is_huge_zero_pfn.</summary>
    public bool IsHead(ulong pfn) => pfn != 0 && pfn == Pfn;

    /// <summary>mm_get_huge_zero_folio: the folio, with this mm's reference taken once; 0 when it cannot be allocated.</summary>
    internal ulong MmGet(Cpu cpu, MmStruct mm)
    {
        if (Volatile.Read(ref mm.HugeZeroPage)) return Pfn;
        lock (_lock)
        {
            if (mm.HugeZeroPage) return Pfn;
            if (Pfn == 0)
            {
                ulong pfn = m.Allocator.AllocPages(cpu.Id, Thp.PmdOrder, Gfp.Zero | Gfp.Comp);
                if (pfn == 0) return 0;
                m.Counters.Add(cpu.Id, VmEvent.ThpZeroPageAlloc);
                Pfn = pfn; // its first reference is this mm's
            }
            else
            {
                Interlocked.Increment(ref m.Vmemmap.PfnToPage(Pfn)->RefCount);
            }
            // Release: a reader of the flag outside the lock (the fast path above) then sees Pfn set.
            Volatile.Write(ref mm.HugeZeroPage, true);
            return Pfn;
        }
    }

    /// <summary>mm_put_huge_zero_folio (__mmput): the mm's reference goes.</summary>
    internal void MmPut(Cpu cpu, MmStruct mm)
    {
        if (!mm.HugeZeroPage) return;
        mm.HugeZeroPage = false;
        Put(cpu);
    }

    /// <summary>Drops one reference (an mm's, or one GUP grabbed); the last frees the folio.</summary>
    internal void Put(Cpu cpu)
    {
        lock (_lock)
        {
            Page* head = m.Vmemmap.PfnToPage(Pfn);
            if (Interlocked.Decrement(ref head->RefCount) != 0) return;
            m.Allocator.FreeFrozenPages(cpu.Id, Pfn, Thp.PmdOrder);
            Pfn = 0;
        }
    }
}
