using NativeMmu.Cpus;
using System.Runtime.CompilerServices;

namespace NativeMmu.Mm;

/// <summary>The memory-management per-CPU area: a reusable mmu_gather and the last VMA a fault found.</summary>
internal sealed class MmPerCpu : IDisposable
{
    private MmStruct? _cachedMm;
    private long _cachedSeq;
    private Vma? _cachedVma;
    private MmuGather? _gather;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public static MmPerCpu Of(Cpu cpu) => cpu.KernelData as MmPerCpu ?? Create(cpu);

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static MmPerCpu Create(Cpu cpu)
    {
        var data = new MmPerCpu();
        cpu.KernelData = data;
        return data;
    }

    /// <summary>
    /// find_vma with the per-thread vmacache the kernel had until 6.1: the last hit is reused while the
    /// mm's VMA sequence is unchanged. Caller holds mmap_lock.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vma? FindVmaCached(MmStruct mm, ulong address)
    {
        Vma? v = _cachedVma;
        if (v is not null && ReferenceEquals(_cachedMm, mm) && _cachedSeq == Volatile.Read(ref mm.VmaSeq)
            && v.VmStart <= address && address < v.VmEnd)
            return v;
        v = mm.Vmas.FindVma(address);
        if (v is not null && v.VmStart <= address)
        {
            _cachedMm = mm;
            _cachedSeq = Volatile.Read(ref mm.VmaSeq);
            _cachedVma = v;
        }
        return v;
    }

    /// <summary>An mmu_gather for this CPU. Gathers do not nest on one CPU, so one is enough.</summary>
    public MmuGather RentGather(Cpu cpu)
    {
        MmuGather g = _gather ??= new MmuGather(cpu);
        Sync.Bug.On(g.InUse, "mmu_gather started on CPU {0} while its gather is in use", cpu.Id);
        return g;
    }

    public void Dispose()
    {
        _gather?.Dispose();
        _gather = null;
    }
}
