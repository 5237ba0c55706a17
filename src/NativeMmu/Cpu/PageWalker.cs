using System.Runtime.CompilerServices;
using NativeMmu.Arch.X86;
using NativeMmu.Sync;

namespace NativeMmu.Cpus;

/// <summary>
/// The MMU's page walk (SDM 4.5) and the #PF it raises when the walk finds no valid translation.
/// </summary>
/// <remarks>
/// The walk reads the paging structures without any lock, as the hardware does: each entry with one
/// 8-byte Volatile read, Accessed and Dirty set with a locked read-modify-write (Interlocked), restarted
/// when the entry changed under it. Tables it can reach stay allocated until it finishes because the
/// access it serves is an RCU read-side section (the odd access sequence, see Rcu).
/// </remarks>
public sealed unsafe partial class Cpu
{
    /// <summary>
    /// Delivers #PF to the kernel. A fault that never resolves is a kernel bug, not a hang. As the SDM
    /// requires (4.10.4.1), the CPU first drops the TLB entry and the paging-structure-cache entry it
    /// used for the faulting address, so the retry walks the tables afresh.
    /// </summary>
    private FaultResult RaisePageFault(ulong address, X86PfError error, int attempt)
    {
        FlushOneLocal(address);
        FlushPscOne(address);
        Bug.On(attempt > 10_000, "page fault at {0:x} (error {1}) retried 10000 times without progress", address, error);
        IPageFaultHandler handler = Platform.FaultHandler ?? throw new InvalidOperationException("no page-fault handler is installed");
        return handler.HandleUserFault(this, address, error | X86PfError.User);
    }

    /// <summary>
    /// The page walk of the MMU: 4 or 5 levels from CR3, U/S and R/W ANDed across levels, Accessed set
    /// on every entry used and Dirty on the leaf of a write, each with a locked cmpxchg that starts over
    /// when the entry changed under it. Fills the TLB on success.
    /// </summary>
    private byte* Walk(ulong va, bool write, out X86PfError error)
    {
        MmContext? mm = LoadedMm;
        if (mm is null || mm.IsDead) ThrowNoMm();
        error = write ? X86PfError.Write : X86PfError.None;
        if (!IsCanonicalUser(va)) { error |= X86PfError.Prot; return null; }
    restart:
        bool writable = true;
        ulong* table;
        ulong* slot;
        ulong entry;
        ulong hpn = va >> Geometry.PmdShift;
        PscEntry* psc = PscSlot(hpn);
        if (psc->Tag == PscTag(hpn))
        {
            // The paging-structure cache skips the upper levels, as the hardware's PDE cache does.
            writable = psc->Writable != 0;
            table = (ulong*)_phys.FrameAddress(psc->TablePfn);
            slot = table + Geometry.PteIndex(va);
            goto leaf;
        }
        table = (ulong*)_phys.FrameAddress(mm!.PgdPfn);
        slot = table + _paging.PgdIndex(va);
        if (_paging.L5Enabled)
        {
            if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
            if (RejectTable(entry, ref error)) return null;
            table = (ulong*)_phys.FrameAddress(new Pgd(entry).Pfn);
            slot = table + Geometry.P4dIndex(va);
        }
        if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
        if (RejectTable(entry, ref error)) return null;
        table = (ulong*)_phys.FrameAddress(new P4d(entry).Pfn);
        slot = table + Geometry.PudIndex(va);
        if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
        if ((entry & PageTableBits.Pse) != 0)
        {
            // 1 GiB leaf (a hugetlb PUD): bits 13..29 are reserved.
            if ((entry & (Geometry.PudSize - 1) & ~(Geometry.PageSize - 1) & ~PageTableBits.PatLarge) != 0)
            { error |= X86PfError.Rsvd | X86PfError.Prot; return null; }
            if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
            if (!SetLeafAccessDirty(slot, ref entry, write)) goto restart;
            ulong pfn1g = new Pud(entry).Pfn;
            Bug.On(pfn1g + (Geometry.PudSize >> Geometry.PageShift) > _phys.Frames, "PUD {0:x16} for {1:x} points beyond physical memory", entry, va);
            byte* base1g = _phys.FrameAddress(pfn1g);
            if (_checkTlb) CheckTlbFill1G(va);
            FillTlb1G(va, base1g, pfn1g, TlbPerm(entry, writable));
            return base1g + (va & (Geometry.PudSize - 1));
        }
        if (RejectTable(entry, ref error)) return null;
        table = (ulong*)_phys.FrameAddress(new Pud(entry).Pfn);
        slot = table + Geometry.PmdIndex(va);
        if (!WalkTableEntry(slot, ref writable, out entry)) return NotPresent(ref error, entry);
        if ((entry & PageTableBits.Pse) != 0)
        {
            // 2 MiB leaf: bits 13..20 are reserved.
            if ((entry & (Geometry.PmdSize - 1) & ~(Geometry.PageSize - 1) & ~PageTableBits.PatLarge) != 0)
            { error |= X86PfError.Rsvd | X86PfError.Prot; return null; }
            if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
            if (!SetLeafAccessDirty(slot, ref entry, write)) goto restart;
            ulong pfn2m = new Pmd(entry).Pfn;
            byte* base2m = _phys.FrameAddress(pfn2m);
            if (_checkTlb) CheckTlbFill2M(va);
            FillTlb2M(va, base2m, pfn2m, TlbPerm(entry, writable));
            return base2m + (va & (Geometry.PmdSize - 1));
        }
        if (RejectTable(entry, ref error)) return null;
        ulong ptePfn = new Pmd(entry).Pfn;
        if (_checkTlb) CheckPscFill(hpn, ptePfn);
        psc->Tag = PscTag(hpn);
        psc->TablePfn = ptePfn;
        psc->Writable = writable ? 1u : 0u;
        table = (ulong*)_phys.FrameAddress(ptePfn);
        slot = table + Geometry.PteIndex(va);
    leaf:
        entry = Volatile.Read(ref *slot);
        if (_checkTlb && entry == FreedTablePoison) TableReadAfterFree(va, slot);
        if ((entry & PageTableBits.Present) == 0) return NotPresent(ref error, entry);
        if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
        if (!SetLeafAccessDirty(slot, ref entry, write)) goto restart;
        ulong pfn = (entry & PageTableBits.PtePfnMask) >> Geometry.PageShift;
        Bug.On(pfn >= _phys.Frames, "PTE {0:x16} for {1:x} points beyond physical memory", entry, va);
        byte* host = _phys.FrameAddress(pfn);
        uint tablePfn = (uint)_phys.PfnOf(slot).Value;
        if (_checkTlb) CheckTlbFill4K(va, tablePfn);
        FillTlb4K(va, host, pfn, tablePfn, TlbPerm(entry, writable));
        return host + (va & (Geometry.PageSize - 1));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNoMm() => throw new InvalidOperationException(
        LoadedMm is null ? $"CPU {Id} has no mm loaded (Process.Enter)" : $"CPU {Id} runs an mm that has exited");

    private bool IsCanonicalUser(ulong va) => va <= _paging.TaskSizeMax + Geometry.PageSize - 1;

    /// <summary>Reads a non-leaf entry, sets its Accessed bit if clear, and folds its R/W and U/S into the walk.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool WalkTableEntry(ulong* slot, ref bool writable, out ulong entry)
    {
        entry = Volatile.Read(ref *slot);
        if ((entry & PageTableBits.Present) == 0) return false;
        if ((entry & PageTableBits.Accessed) == 0)
            entry = Interlocked.Or(ref *slot, PageTableBits.Accessed) | PageTableBits.Accessed;
        writable &= (entry & PageTableBits.Rw) != 0;
        return true;
    }

    /// <summary>A non-leaf entry must be a user table pointing inside physical memory.</summary>
    private bool RejectTable(ulong entry, ref X86PfError error)
    {
        if ((entry & PageTableBits.User) == 0) { error |= X86PfError.Prot; return true; }
        Bug.On(((entry & PageTableBits.PtePfnMask) >> Geometry.PageShift) >= _phys.Frames, "paging-structure entry {0:x16} points beyond physical memory", entry);
        return false;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool LeafPermits(ulong entry, bool writable, bool write)
        => (entry & PageTableBits.User) != 0 && (!write || (writable && (entry & PageTableBits.Rw) != 0));

    /// <summary>
    /// The locked A/D update; false when the entry changed under the walk (start over). The CAS is the
    /// hardware's locked update; the kernel's read-modify-writes that race with it (ptep_get_and_clear's
    /// xchg, its cmpxchg loops) are locked too, so neither side's change is lost.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool SetLeafAccessDirty(ulong* slot, ref ulong entry, bool write)
    {
        ulong want = entry | PageTableBits.Accessed | (write ? PageTableBits.Dirty : 0);
        if (want == entry) return true;
        if (Interlocked.CompareExchange(ref *slot, want, entry) != entry) return false;
        entry = want;
        return true;
    }

    private static byte* NotPresent(ref X86PfError error, ulong entry) => null;
}
