using NativeMmu.Arch.X86;

namespace NativeMmu.Mm;

/// <summary>
/// vm_area_struct: one mapping [VmStart, VmEnd) of an mm. Every field is written under the mm's
/// mmap_lock held for write; fault handlers read them under mmap_lock held for read.
/// </summary>
public sealed class Vma
{
    public Vma(MmStruct mm, ulong start, ulong end, VmFlags flags)
    {
        Mm = mm;
        _vmStart = start;
        _vmEnd = end;
        VmFlags = flags;
        VmPageProt = VmGetPageProt(flags);
    }

    public MmStruct Mm { get; private set; }

    private ulong _vmStart, _vmEnd;

    /// <summary>vm_start. Moving it on a linked VMA updates the tree's gap below this VMA.</summary>
    public ulong VmStart
    {
        get => _vmStart;
        set
        {
            _vmStart = value;
            if (TreeHeight != 0) VmaTree.GapChanged(this);
        }
    }

    /// <summary>vm_end. Moving it on a linked VMA updates the tree's gap above this VMA (below the next).</summary>
    public ulong VmEnd
    {
        get => _vmEnd;
        set
        {
            _vmEnd = value;
            if (TreeHeight != 0 && Next is { } next) VmaTree.GapChanged(next);
        }
    }
    public VmFlags VmFlags;
    /// <summary>vm_page_prot: the pgprot new PTEs start from (vm_get_page_prot of the flags).</summary>
    public ulong VmPageProt;
    /// <summary>vm_pgoff: for anonymous memory the page number of the original VmStart.</summary>
    public ulong VmPgoff;
    /// <summary>anon_vma: set by the first anonymous fault (anon_vma_prepare); shared by split halves.</summary>
    public AnonVma? AnonVma;
    /// <summary>vm_file and vm_private_data of a MAP_HUGETLB mapping (its hugetlbfs inode, reservation map and HPAGE_RESV_* flags); default otherwise.</summary>
    internal Huge.HugetlbVma Hugetlb;

    // Intrusive links of the mm's VMA tree (VmaTree): written under mmap_lock for write only.
    internal Vma? TreeLeft, TreeRight, TreeParent;
    internal int TreeHeight;
    /// <summary>rb_subtree_gap: the largest gap below any VMA of this node's subtree (VmStart minus the previous VmEnd).</summary>
    internal ulong TreeGap;
    /// <summary>The neighbours in address order, as vm_prev/vm_next were before the maple tree.</summary>
    internal Vma? Prev, Next;

    internal void Reinit(MmStruct mm, ulong start, ulong end, VmFlags flags)
    {
        Mm = mm;
        _vmStart = start;
        _vmEnd = end;
        VmFlags = flags;
        VmPageProt = VmGetPageProt(flags);
        VmPgoff = 0;
        AnonVma = null;
        Hugetlb = default;
    }

    public ulong Size => VmEnd - VmStart;
    public bool IsAnonymous => true;
    public bool IsAccessible => (VmFlags & VmFlags.AccessFlags) != 0;

    /// <summary>vma_pages.</summary>
    public ulong Pages => (VmEnd - VmStart) >> Geometry.PageShift;

    /// <summary>linear_page_index for anonymous memory.</summary>
    public ulong LinearPageIndex(ulong address) => ((address - VmStart) >> Geometry.PageShift) + VmPgoff;

    /// <summary>
    /// vm_get_page_prot (arch/x86/mm/pgprot.c): x86's protection_map, plus the VMA's four pkey bits moved to
    /// the PTE's bits 59-62. Private writable mappings get PAGE_COPY (no RW): write permission is granted
    /// per PTE by maybe_mkwrite, which is what makes copy-on-write work.
    /// </summary>
    public static ulong VmGetPageProt(VmFlags flags)
        => ProtectionMap(flags) | (((ulong)(flags & VmFlags.PkeyMask) >> Pkeys.VmPkeyShift) << PageTableBits.BitPkey0);

    private static ulong ProtectionMap(VmFlags flags)
    {
        bool shared = (flags & VmFlags.Shared) != 0;
        bool r = (flags & VmFlags.Read) != 0, w = (flags & VmFlags.Write) != 0, x = (flags & VmFlags.Exec) != 0;
        if (!r && !w && !x) return PgProt.PageNone;
        if (shared)
            return w ? (x ? PgProt.PageSharedExec : PgProt.PageShared) : (x ? PgProt.PageReadonlyExec : PgProt.PageReadonly);
        if (w) return x ? PgProt.PageCopyExec : PgProt.PageCopy;
        return x ? PgProt.PageReadonlyExec : PgProt.PageReadonly;
    }

    public override string ToString() => $"{VmStart:x12}-{VmEnd:x12} {FlagsString()}";

    /// <summary>The rwxp column of /proc/PID/maps.</summary>
    public string FlagsString() => string.Create(4, VmFlags, static (s, f) =>
    {
        s[0] = (f & VmFlags.Read) != 0 ? 'r' : '-';
        s[1] = (f & VmFlags.Write) != 0 ? 'w' : '-';
        s[2] = (f & VmFlags.Exec) != 0 ? 'x' : '-';
        s[3] = (f & VmFlags.Shared) != 0 ? 's' : 'p';
    });
}

/// <summary>anon_vma: the root an anonymous page's mapping points at (rmap); shared across VMA splits.</summary>
public sealed class AnonVma
{
    private static long s_nextId;
    private static readonly Lock s_lock = new();
    private static readonly Stack<AnonVma> s_free = new();

    /// <summary>The identity stored in struct page's mapping field with FOLIO_MAPPING_ANON set; new on every reuse.</summary>
    public long Id { get; private set; } = Interlocked.Increment(ref s_nextId);
    /// <summary>How many VMAs point at this anon_vma; written under mmap_lock for write (or before publication).</summary>
    internal int Users;
    /// <summary>
    /// anon_vma_fork made it for a child VMA, whose anon_vma_chain then also links the parent's
    /// anon_vma: vma_is_fork_child (mm/vma.c) holds for every VMA that points here.
    /// </summary>
    internal bool Forked;

    /// <summary>anon_vma_alloc from anon_vma_cachep (SLAB_TYPESAFE_BY_RCU there too: objects are reused).</summary>
    internal static AnonVma Alloc()
    {
        AnonVma? av;
        lock (s_lock) s_free.TryPop(out av);
        av ??= new AnonVma();
        av.Id = Interlocked.Increment(ref s_nextId);
        av.Users = 1;
        av.Forked = false;
        return av;
    }

    /// <summary>One VMA fewer points here; the last one returns it to the cache.</summary>
    internal static void Put(AnonVma av)
    {
        if (Interlocked.Decrement(ref av.Users) != 0) return;
        lock (s_lock) if (s_free.Count < VmAreaCache.Capacity) s_free.Push(av);
    }
}

/// <summary>
/// vm_area_cachep: VMAs are recycled as the kernel's slab recycles vm_area_struct, so mmap, split,
/// merge and munmap allocate nothing on the managed heap once the cache is warm.
/// </summary>
internal static class VmAreaCache
{
    public const int Capacity = 4096;
    private static readonly Lock s_lock = new();
    private static readonly Stack<Vma> s_free = new();

    /// <summary>vm_area_alloc.</summary>
    public static Vma Alloc(MmStruct mm, ulong start, ulong end, VmFlags flags)
    {
        Vma? v;
        lock (s_lock) s_free.TryPop(out v);
        if (v is null) return new Vma(mm, start, end, flags);
        v.Reinit(mm, start, end, flags);
        return v;
    }

    /// <summary>vm_area_free: the VMA is out of its tree; drop its anon_vma reference and keep it for reuse.</summary>
    public static void Free(Vma v)
    {
        if (v.AnonVma is { } av)
        {
            v.AnonVma = null;
            AnonVma.Put(av);
        }
        lock (s_lock) if (s_free.Count < Capacity) s_free.Push(v);
    }
}
