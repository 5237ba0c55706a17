using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// The TLB checks of the invariant mode (KernelConfig.DebugVm). They report, the moment a CPU creates
/// it, each of the two situations of the 2024 PT-reclaim series that x86 forbids: one address with both
/// a 4 KiB and a 2 MiB translation, and one address translatable through two different PTE tables.
/// </summary>
public sealed unsafe partial class Cpu
{
    /// <summary>What a table frame is filled with once RCU has freed it (invariant mode): never a user entry (USER clear).</summary>
    public const ulong FreedTablePoison = 0x6b6b_6b6b_6b6b_6b6bUL;

    private readonly bool _checkTlb;

    /// <summary>A 2 MiB region's PSC entry is being filled: no 4 KiB translation in it may come from another table.</summary>
    private void CheckPscFill(ulong hpn, ulong tablePfn)
    {
        ulong first = hpn << (Geometry.PmdShift - Geometry.PageShift);
        for (ulong i = 0; i < (ulong)Geometry.PtrsPerPte; i++)
        {
            ulong vpn = first + i;
            TlbEntry* e = TlbSlot(vpn);
            if (e->Tag == TlbTag(vpn) && e->TablePfn != (uint)tablePfn)
                Platform.ReportTlbConflict(this, vpn << Geometry.PageShift,
                    $"CPU {Id}: {vpn << Geometry.PageShift:x} is cached through PTE table {e->TablePfn:x} while the paging-structure cache now points at table {tablePfn:x}");
        }
    }

    /// <summary>A 4 KiB translation is being filled: no 2 MiB or 1 GiB one for the region, no other table for the address.</summary>
    private void CheckTlbFill4K(ulong va, uint tablePfn)
    {
        CheckNoGigaTranslation(va, "4 KiB");
        ulong hpn = va >> Geometry.PmdShift;
        TlbEntry* h = HugeTlbSlot(hpn);
        if (h->Tag == TlbTag(hpn))
            Platform.ReportTlbConflict(this, va, $"CPU {Id}: {va:x} has a 2 MiB translation and now a 4 KiB one");
        PscEntry* psc = PscSlot(hpn);
        if (psc->Tag == PscTag(hpn) && psc->TablePfn != tablePfn)
            Platform.ReportTlbConflict(this, va, $"CPU {Id}: {va:x} translated through PTE table {tablePfn:x} while the paging-structure cache points at {psc->TablePfn:x}");
    }

    /// <summary>A 2 MiB translation is being filled: no 4 KiB translation may remain in the region, and no 1 GiB one cover it.</summary>
    private void CheckTlbFill2M(ulong va)
    {
        CheckNoGigaTranslation(va, "2 MiB");
        ulong first = (va & Geometry.PmdMask) >> Geometry.PageShift;
        for (ulong i = 0; i < (ulong)Geometry.PtrsPerPte; i++)
        {
            ulong vpn = first + i;
            TlbEntry* e = TlbSlot(vpn);
            if (e->Tag == TlbTag(vpn))
                Platform.ReportTlbConflict(this, va, $"CPU {Id}: {va & Geometry.PmdMask:x} gets a 2 MiB translation while {vpn << Geometry.PageShift:x} has a 4 KiB one");
        }
    }

    private void CheckNoGigaTranslation(ulong va, string size)
    {
        ulong gpn = va >> Geometry.PudShift;
        TlbEntry* g = GigaTlbSlot(gpn);
        if (g->Tag == TlbTag(gpn))
            Platform.ReportTlbConflict(this, va, $"CPU {Id}: {va:x} has a 1 GiB translation and now a {size} one");
    }

    /// <summary>A 1 GiB translation is being filled: no 4 KiB or 2 MiB translation may remain inside its range.</summary>
    private void CheckTlbFill1G(ulong va)
    {
        ulong gpn = va >> Geometry.PudShift;
        for (ulong i = 0; i <= _tlbMask; i++)
        {
            TlbEntry* e = _tlb + i;
            ulong vpn = TagPage(e->Tag);
            if (e->Tag != 0 && e->Tag == TlbTag(vpn) && vpn >> (Geometry.PudShift - Geometry.PageShift) == gpn)
                Platform.ReportTlbConflict(this, va, $"CPU {Id}: {va & Geometry.PudMask:x} gets a 1 GiB translation while {vpn << Geometry.PageShift:x} has a 4 KiB one");
        }
        for (ulong i = 0; i <= _tlbHugeMask; i++)
        {
            TlbEntry* h = _tlbHuge + i;
            ulong hpn = TagPage(h->Tag);
            if (h->Tag != 0 && h->Tag == TlbTag(hpn) && hpn >> (Geometry.PudShift - Geometry.PmdShift) == gpn)
                Platform.ReportTlbConflict(this, va, $"CPU {Id}: {va & Geometry.PudMask:x} gets a 1 GiB translation while {hpn << Geometry.PmdShift:x} has a 2 MiB one");
        }
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void TableReadAfterFree(ulong va, ulong* slot)
        => Bug.Throw($"CPU {Id}: the page walk for {va:x} read a freed page table (frame {_phys.PfnOf(slot).Value:x})");
}
