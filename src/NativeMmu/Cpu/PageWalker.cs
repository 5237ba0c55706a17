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
        byte* phys = _physBase;
    restart:
        bool writable = true;
        ulong* slot;
        ulong entry;
        ulong hpn = va >> Geometry.PmdShift;
        PscEntry* psc = PscSlot(hpn);
        if (psc->Tag == PscTag(hpn))
        {
            // The paging-structure cache skips the upper levels, as the hardware's PDE cache does.
            writable = psc->Writable != 0;
            slot = (ulong*)(phys + (psc->TablePfn << Geometry.PageShift)) + Geometry.PteIndex(va);
            goto leaf;
        }
        slot = (ulong*)(phys + (mm!.PgdPfn << Geometry.PageShift)) + (int)((va >> _pgdirShift) & 511);
        if (_l5)
        {
            if (!WalkTableEntry(slot, ref writable, out entry)) return null;
            if (RejectTable(entry, ref error)) return null;
            slot = (ulong*)(phys + (entry & PageTableBits.PtePfnMask)) + Geometry.P4dIndex(va);
        }
        if (!WalkTableEntry(slot, ref writable, out entry)) return null;
        if (RejectTable(entry, ref error)) return null;
        slot = (ulong*)(phys + (entry & PageTableBits.PtePfnMask)) + Geometry.PudIndex(va);
        if (!WalkTableEntry(slot, ref writable, out entry)) return null;
        if ((entry & PageTableBits.Pse) != 0) return WalkHugeLeaf(va, write, slot, entry, writable, ref error, Geometry.PudSize);
        if (RejectTable(entry, ref error)) return null;
        slot = (ulong*)(phys + (entry & PageTableBits.PtePfnMask)) + Geometry.PmdIndex(va);
        if (!WalkTableEntry(slot, ref writable, out entry)) return null;
        if ((entry & PageTableBits.Pse) != 0) return WalkHugeLeaf(va, write, slot, entry, writable, ref error, Geometry.PmdSize);
        if (RejectTable(entry, ref error)) return null;
        ulong ptePfn = (entry & PageTableBits.PtePfnMask) >> Geometry.PageShift;
        if (_checkTlb) CheckPscFill(hpn, ptePfn);
        psc->Tag = PscTag(hpn);
        psc->TablePfn = ptePfn;
        psc->Writable = writable ? 1u : 0u;
        slot = (ulong*)(phys + (ptePfn << Geometry.PageShift)) + Geometry.PteIndex(va);
    leaf:
        entry = Volatile.Read(ref *slot);
        if (_checkTlb && entry == FreedTablePoison) TableReadAfterFree(va, slot);
        if ((entry & PageTableBits.Present) == 0) return null;
        if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
        if (_pku && !PkruPermits(entry, write)) { error |= X86PfError.Prot | X86PfError.Pk; return null; }
        if (!SetLeafAccessDirty(slot, ref entry, write)) goto restart;
        ulong frame = entry & PageTableBits.PtePfnMask;
        if (frame >= _physBytes) BeyondPhysical(entry, va);
        byte* host = phys + frame;
        uint tablePfn = (uint)((ulong)((byte*)slot - phys) >> Geometry.PageShift);
        if (_checkTlb) CheckTlbFill4K(va, tablePfn);
        FillTlb4K(va, host, frame >> Geometry.PageShift, tablePfn, LeafTlbPerm(entry, writable));
        return host + (va & (Geometry.PageSize - 1));
    }

    /// <summary>
    /// The walk ended at a large leaf: a 2 MiB one in the PMD slot or a 1 GiB one (hugetlb) in the PUD slot.
    /// Reserved bits (13..20 or 13..29), permissions, A/D, then the TLB fill of that size.
    /// </summary>
    [MethodImpl(MethodImplOptions.NoInlining)]
    private byte* WalkHugeLeaf(ulong va, bool write, ulong* slot, ulong entry, bool writable, ref X86PfError error, ulong size)
    {
        if ((entry & (size - 1) & ~(Geometry.PageSize - 1) & ~PageTableBits.PatLarge) != 0)
        { error |= X86PfError.Rsvd | X86PfError.Prot; return null; }
        if (!LeafPermits(entry, writable, write)) { error |= X86PfError.Prot; return null; }
        if (_pku && !PkruPermits(entry, write)) { error |= X86PfError.Prot | X86PfError.Pk; return null; }
        // The entry changed under the walk: start over from the top, as the hardware does.
        if (!SetLeafAccessDirty(slot, ref entry, write)) return Walk(va, write, out error);
        ulong pfn = (entry & PageTableBits.PtePfnMask & ~(size - 1)) >> Geometry.PageShift;
        if (pfn + (size >> Geometry.PageShift) > _phys.Frames) BeyondPhysical(entry, va);
        byte* host = _phys.FrameAddress(pfn);
        uint perm = LeafTlbPerm(entry, writable);
        if (size == Geometry.PmdSize)
        {
            if (_checkTlb) CheckTlbFill2M(va);
            FillTlb2M(va, host, pfn, perm);
        }
        else
        {
            if (_checkTlb) CheckTlbFill1G(va);
            FillTlb1G(va, host, pfn, perm);
        }
        return host + (va & (size - 1));
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void BeyondPhysical(ulong entry, ulong va)
        => Bug.Throw($"PTE {entry:x16} for {va:x} points beyond physical memory");

    [MethodImpl(MethodImplOptions.NoInlining)]
    private void ThrowNoMm() => throw new InvalidOperationException(
        LoadedMm is null ? $"CPU {Id} has no mm loaded (Process.Enter)" : $"CPU {Id} runs an mm that has exited");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool IsCanonicalUser(ulong va) => va <= _userVaLast;

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
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool RejectTable(ulong entry, ref X86PfError error)
    {
        if ((entry & PageTableBits.User) == 0) { error |= X86PfError.Prot; return true; }
        if ((entry & PageTableBits.PtePfnMask) >= _physBytes) TableBeyondPhysical(entry);
        return false;
    }

    [MethodImpl(MethodImplOptions.NoInlining)]
    private static void TableBeyondPhysical(ulong entry)
        => Bug.Throw($"paging-structure entry {entry:x16} points beyond physical memory");

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static bool LeafPermits(ulong entry, bool writable, bool write)
        => (entry & PageTableBits.User) != 0 && (!write || (writable && (entry & PageTableBits.Rw) != 0));

    /// <summary>
    /// The protection-key check of a user data access (SDM 4.6.2): the leaf's key (bits 59-62) indexes
    /// PKRU; AD denies the access, WD a write. Instruction fetches are not checked, and every access here
    /// is a data access.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private bool PkruPermits(ulong leaf, bool write)
        => PkruPermits(Pkru, (int)((leaf >> PageTableBits.BitPkey0) & 0xF), write);

    /// <summary>
    /// What the TLB may grant from this leaf. The hardware keeps the pkey in the TLB entry and checks PKRU
    /// on every access; PKRU here changes only with the task, so the entry holds the rights PKRU leaves:
    /// no write under a write-disabled key.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private uint LeafTlbPerm(ulong leaf, bool writable)
    {
        uint perm = TlbPerm(leaf, writable);
        if (_pku && !PkruPermits(leaf, write: true)) perm &= ~TlbWrite;
        return perm;
    }

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

}
