namespace NativeMmu.Fuzz.Model;

/// <summary>
/// Per-page attributes madvise sets, as /proc/PID/smaps shows them in VmFlags
/// (dc, wf, hg, nh, dd, sr, rr).
/// </summary>
[Flags]
public enum PageAttrs
{
    None = 0,
    /// <summary>MADV_DONTFORK (VM_DONTCOPY, "dc"): the child of a fork does not get the pages.</summary>
    DontFork = 1,
    /// <summary>MADV_WIPEONFORK (VM_WIPEONFORK, "wf"): the child of a fork reads zeroes there.</summary>
    WipeOnFork = 2,
    /// <summary>MADV_HUGEPAGE ("hg").</summary>
    HugePage = 4,
    /// <summary>MADV_NOHUGEPAGE ("nh").</summary>
    NoHugePage = 8,
    /// <summary>MADV_DONTDUMP ("dd").</summary>
    DontDump = 16,
    /// <summary>MADV_SEQUENTIAL ("sr").</summary>
    SeqRead = 32,
    /// <summary>MADV_RANDOM ("rr").</summary>
    RandRead = 64,
    /// <summary>A MAP_HUGETLB mapping of 2 MiB pages (VM_HUGETLB, "ht"): never in RssAnon.</summary>
    Hugetlb = 128,
}

/// <summary>A run of mapped pages [Start, End) with one protection and one set of attributes.</summary>
public sealed class ModelRegion(ulong start, ulong end, int prot, PageAttrs attrs)
{
    public ulong Start = start;
    public ulong End = end;
    /// <summary>PROT_READ | PROT_WRITE | PROT_EXEC bits.</summary>
    public int Prot = prot;
    public PageAttrs Attrs = attrs;

    public ModelRegion Clone() => new(Start, End, Prot, Attrs);
    public override string ToString() => $"{Start:x}-{End:x} {ModelProcess.ProtString(Prot)} {Attrs}";
}

/// <summary>
/// The contents of a page that may hold a frame. A page with no entry has never been written since it
/// was mapped or last discarded and reads as zeroes; <see cref="Data"/> is null while all of it is zero.
/// </summary>
public sealed class ModelPage
{
    public byte[]? Data;
    /// <summary>A store completed on this page since it was mapped or last discarded: it is resident for sure.</summary>
    public bool Written;
    /// <summary>MADV_FREE since the last completed store: reclaim (MADV_PAGEOUT) may discard it.</summary>
    public bool Lazyfree;
}

/// <summary>One line of the model's view of /proc/PID/maps: maximal runs with equal protection and attributes.</summary>
public readonly record struct ModelMapping(ulong Start, ulong End, int Prot, PageAttrs Attrs)
{
    public override string ToString() => $"{Start:x}-{End:x} {ModelProcess.ProtString(Prot)}{(Attrs == PageAttrs.None ? "" : " " + Attrs)}";
}

/// <summary>
/// One process of the reference model: the mapped address ranges with their protection and
/// attributes (a sorted list of disjoint regions), and the pages that may hold a frame, keyed by page
/// number. A page is in <see cref="Pages"/> exactly when a write may have given it a frame since it
/// was mapped or last discarded; every page in it lies inside a region.
/// </summary>
public sealed class ModelProcess
{
    private readonly List<ModelRegion> _regions = [];
    private readonly Dictionary<ulong, ModelPage> _pages = [];
    private long _written;
    private long _mappedPages;
    /// <summary>The 2 MiB extents (one PTE table each) this process wrote to since it was created: see <see cref="RssLowerBound"/>.</summary>
    private readonly HashSet<ulong> _ownTables = [];

    public ModelProcess(int id) => Id = id;

    public int Id { get; }
    public bool Exited { get; private set; }
    public IReadOnlyList<ModelRegion> Regions => _regions;
    public IReadOnlyDictionary<ulong, ModelPage> Pages => _pages;
    /// <summary>Pages that may hold a frame: an upper bound on RssAnon (hugetlb pages count in HugetlbPages instead).</summary>
    public long MaybeResidentPages => HasHugetlb ? _pages.Keys.Count(pn => !InHugetlb(pn)) : _pages.Count;
    /// <summary>Pages written (and not discarded since) that are still mapped: a lower bound on RssAnon.</summary>
    public long WrittenPages => HasHugetlb ? _pages.Count(kv => kv.Value.Written && !InHugetlb(kv.Key)) : _written;

    /// <summary>prctl(PR_SET_COW_PTE) since the last fork: MMF_COW_PTE_READY.</summary>
    public bool CowPteReady { get; set; }
    /// <summary>MMF_COW_PTE: this process's forks share PTE tables (a fork turned READY into it, or it was inherited).</summary>
    public bool CowPte { get; set; }
    /// <summary>
    /// Created by a fork that shared PTE tables: it may hold tables whose RSS is charged to their owner (the
    /// mm fork shared them from) or, once the owner let go, to nobody until this process breaks or reuses
    /// them (docs/cow-pte.md: RSS under a shared table is charged to the owner only).
    /// </summary>
    public bool MayHoldUnchargedTables { get; set; }

    /// <summary>
    /// The lower bound on RssAnon: <see cref="WrittenPages"/>; for a process that may hold tables charged to
    /// another mm, the written pages of the 2 MiB extents it wrote to itself. Only fork gives a process a
    /// table it is not charged for, and a write there breaks it first (a copy charges the breaker for every
    /// page of the table, a reuse charges the last holder); every table the process gets after its fork
    /// (a fault's, a break's) is charged to it, and it stays charged while it is shared from this process.
    /// </summary>
    public long RssLowerBound
    {
        get
        {
            if (!MayHoldUnchargedTables) return WrittenPages;
            bool hugetlb = HasHugetlb;
            long n = 0;
            foreach (var (pn, pg) in _pages)
                if (pg.Written && _ownTables.Contains(pn >> (Linux.PmdShift - Linux.PageShift)) && !(hugetlb && InHugetlb(pn))) n++;
            return n;
        }
    }

    private bool HasHugetlb => _regions.Exists(r => (r.Attrs & PageAttrs.Hugetlb) != 0);
    private bool InHugetlb(ulong pageNumber) => RegionAt(pageNumber << Linux.PageShift) is { } r && (r.Attrs & PageAttrs.Hugetlb) != 0;
    /// <summary>Mapped pages: total_vm (VmSize).</summary>
    public long MappedPages => _mappedPages;

    public static string ProtString(int prot) => string.Create(3, prot, static (s, p) =>
    {
        s[0] = (p & Linux.ProtRead) != 0 ? 'r' : '-';
        s[1] = (p & Linux.ProtWrite) != 0 ? 'w' : '-';
        s[2] = (p & Linux.ProtExec) != 0 ? 'x' : '-';
    });

    // ---------------------------------------------------------------------------------------------
    // Regions
    // ---------------------------------------------------------------------------------------------

    /// <summary>Index of the region containing addr, or the bitwise complement of where one would be inserted.</summary>
    private int Find(ulong addr)
    {
        int lo = 0, hi = _regions.Count - 1;
        while (lo <= hi)
        {
            int mid = (lo + hi) >>> 1;
            ModelRegion r = _regions[mid];
            if (addr < r.Start) hi = mid - 1;
            else if (addr >= r.End) lo = mid + 1;
            else return mid;
        }
        return ~lo;
    }

    public ModelRegion? RegionAt(ulong addr)
    {
        int i = Find(addr);
        return i >= 0 ? _regions[i] : null;
    }

    /// <summary>The first region ending above addr (the one find_vma would return).</summary>
    public ModelRegion? FirstEndingAbove(ulong addr)
    {
        int i = Find(addr);
        if (i < 0) i = ~i;
        return i < _regions.Count ? _regions[i] : null;
    }

    /// <summary>Whether no page of [start, end) is mapped.</summary>
    public bool IsFree(ulong start, ulong end)
    {
        ModelRegion? r = FirstEndingAbove(start);
        return r is null || r.Start >= end;
    }

    /// <summary>Whether every page of [start, end) is mapped.</summary>
    public bool IsFullyMapped(ulong start, ulong end) => MappedReach(start, end) == end;

    /// <summary>The end of the run of mapped pages that starts at start, capped at end (start when start is unmapped).</summary>
    public ulong MappedReach(ulong start, ulong end)
    {
        int i = Find(start);
        if (i < 0) return start;
        ulong reach = Math.Min(_regions[i].End, end);
        i++;
        while (reach < end && i < _regions.Count && _regions[i].Start == reach)
        {
            reach = Math.Min(_regions[i].End, end);
            i++;
        }
        return reach;
    }

    /// <summary>Whether some free range of len bytes lies in [low, high).</summary>
    public bool HasGap(ulong len, ulong low, ulong high)
    {
        ulong cursor = low;
        foreach (ModelRegion r in _regions)
        {
            if (r.End <= cursor) continue;
            if (r.Start >= high) break;
            if (r.Start > cursor && r.Start - cursor >= len) return true;
            cursor = Math.Max(cursor, r.End);
        }
        return high > cursor && high - cursor >= len;
    }

    private void SplitAt(ulong addr)
    {
        int i = Find(addr);
        if (i < 0) return;
        ModelRegion r = _regions[i];
        if (r.Start == addr) return;
        var upper = new ModelRegion(addr, r.End, r.Prot, r.Attrs);
        r.End = addr;
        _regions.Insert(i + 1, upper);
    }

    /// <summary>Splits the regions at start and end; returns the index range of the regions inside [start, end).</summary>
    private (int First, int Count) Carve(ulong start, ulong end)
    {
        SplitAt(start);
        SplitAt(end);
        int first = Find(start);
        if (first < 0) first = ~first;
        int last = first;
        while (last < _regions.Count && _regions[last].Start < end) last++;
        return (first, last - first);
    }

    /// <summary>Merges neighbours that touch and look alike, so that the list stays short.</summary>
    private void Coalesce()
    {
        for (int i = _regions.Count - 1; i > 0; i--)
        {
            ModelRegion a = _regions[i - 1], b = _regions[i];
            if (a.End == b.Start && a.Prot == b.Prot && a.Attrs == b.Attrs)
            {
                a.End = b.End;
                _regions.RemoveAt(i);
            }
        }
    }

    /// <summary>Removes the mappings of [start, end) and their pages.</summary>
    public void Unmap(ulong start, ulong end)
    {
        if (end <= start) return;
        DiscardPages(start, end);
        var (first, count) = Carve(start, end);
        for (int i = first; i < first + count; i++) _mappedPages -= (long)((_regions[i].End - _regions[i].Start) >> Linux.PageShift);
        _regions.RemoveRange(first, count);
        Coalesce();
    }

    /// <summary>Maps [start, end), which must be free, with fresh zero pages.</summary>
    public void Map(ulong start, ulong end, int prot, PageAttrs attrs = PageAttrs.None)
    {
        if (!IsFree(start, end)) throw new InvalidOperationException($"model: mapping over a mapped range {start:x}-{end:x}");
        int i = Find(start);
        _regions.Insert(~i, new ModelRegion(start, end, prot & Linux.ProtAccess, attrs));
        _mappedPages += (long)((end - start) >> Linux.PageShift);
        Coalesce();
    }

    /// <summary>Sets the protection of [start, end), which must be mapped.</summary>
    public void Protect(ulong start, ulong end, int prot)
    {
        var (first, count) = Carve(start, end);
        for (int i = first; i < first + count; i++) _regions[i].Prot = prot & Linux.ProtAccess;
        Coalesce();
    }

    /// <summary>Applies f to the attributes of the mapped parts of [start, end).</summary>
    public void ChangeAttrs(ulong start, ulong end, Func<PageAttrs, PageAttrs> f)
    {
        var (first, count) = Carve(start, end);
        for (int i = first; i < first + count; i++) _regions[i].Attrs = f(_regions[i].Attrs);
        Coalesce();
    }

    /// <summary>The regions intersecting [start, end), in address order (a snapshot).</summary>
    public List<ModelRegion> RegionsIn(ulong start, ulong end)
    {
        var list = new List<ModelRegion>();
        int i = Find(start);
        if (i < 0) i = ~i;
        for (; i < _regions.Count && _regions[i].Start < end; i++) list.Add(_regions[i]);
        return list;
    }

    /// <summary>The model's /proc/PID/maps: maximal runs with equal protection and attributes.</summary>
    public List<ModelMapping> Maps()
    {
        var list = new List<ModelMapping>(_regions.Count);
        foreach (ModelRegion r in _regions) list.Add(new ModelMapping(r.Start, r.End, r.Prot, r.Attrs));
        return list;
    }

    // ---------------------------------------------------------------------------------------------
    // Pages
    // ---------------------------------------------------------------------------------------------

    /// <summary>Drops the contents of [start, end): the pages read as zeroes again and hold no frame.</summary>
    public void DiscardPages(ulong start, ulong end)
    {
        if (end <= start || _pages.Count == 0) return;
        ulong first = start >> Linux.PageShift, last = (end - 1) >> Linux.PageShift;
        if (last - first + 1 <= (ulong)_pages.Count)
        {
            for (ulong pn = first; ; pn++)
            {
                if (_pages.Remove(pn, out ModelPage? pg) && pg.Written) _written--;
                if (pn == last) break;
            }
        }
        else
        {
            List<ulong>? drop = null;
            foreach (var kv in _pages)
                if (kv.Key >= first && kv.Key <= last) (drop ??= []).Add(kv.Key);
            if (drop is null) return;
            foreach (ulong pn in drop)
                if (_pages.Remove(pn, out ModelPage? pg) && pg.Written) _written--;
        }
    }

    /// <summary>Marks a page as possibly holding a frame (a write fault may have allocated one).</summary>
    public ModelPage Touch(ulong pageNumber)
    {
        if (!_pages.TryGetValue(pageNumber, out ModelPage? pg))
        {
            pg = new ModelPage();
            _pages.Add(pageNumber, pg);
        }
        return pg;
    }

    /// <summary>The pages that may hold a frame in [start, end), in no particular order.</summary>
    public IEnumerable<(ulong PageNumber, ModelPage Page)> PagesIn(ulong start, ulong end)
    {
        ulong first = start >> Linux.PageShift, last = (end - 1) >> Linux.PageShift;
        foreach (var kv in _pages)
            if (kv.Key >= first && kv.Key <= last) yield return (kv.Key, kv.Value);
    }

    /// <summary>A page that may hold a frame is no longer certain to (it may have gone to the zero page).</summary>
    public void Unwritten(ModelPage pg)
    {
        if (!pg.Written) return;
        pg.Written = false;
        _written--;
    }

    /// <summary>Marks a page as certainly holding a frame, written by this process (the PTE table over it is this process's own).</summary>
    public ModelPage MarkWritten(ulong pageNumber)
    {
        if (MayHoldUnchargedTables) _ownTables.Add(pageNumber >> (Linux.PmdShift - Linux.PageShift));
        ModelPage pg = Touch(pageNumber);
        if (!pg.Written)
        {
            pg.Written = true;
            _written++;
        }
        return pg;
    }

    /// <summary>Copies bytes of one page into dst (zeroes for a page never written).</summary>
    public void ReadPage(ulong address, Span<byte> dst)
    {
        if (_pages.TryGetValue(address >> Linux.PageShift, out ModelPage? pg) && pg.Data is { } data)
            data.AsSpan((int)(address & (Linux.PageSize - 1)), dst.Length).CopyTo(dst);
        else
            dst.Clear();
    }

    /// <summary>Stores bytes within one page and marks it written.</summary>
    public void WritePage(ulong address, ReadOnlySpan<byte> src)
    {
        ModelPage pg = MarkWritten(address >> Linux.PageShift);
        pg.Lazyfree = false;
        pg.Data ??= new byte[Linux.PageSize];
        src.CopyTo(pg.Data.AsSpan((int)(address & (Linux.PageSize - 1))));
    }

    // ---------------------------------------------------------------------------------------------
    // fork and exit
    // ---------------------------------------------------------------------------------------------

    /// <summary>
    /// dup_mmap: the child gets every region but the DONTFORK ones, with the same protection and
    /// attributes; WIPEONFORK regions start empty (zero, nothing resident); the other pages are copied.
    /// </summary>
    public ModelProcess Fork(int childId)
    {
        var child = new ModelProcess(childId);
        foreach (ModelRegion r in _regions)
        {
            if ((r.Attrs & PageAttrs.DontFork) != 0) continue;
            child._regions.Add(r.Clone());
            child._mappedPages += (long)((r.End - r.Start) >> Linux.PageShift);
        }
        child.Coalesce();
        foreach (var kv in _pages)
        {
            ModelRegion r = RegionAt(kv.Key << Linux.PageShift) ?? throw new InvalidOperationException("model: a page outside every region");
            if ((r.Attrs & (PageAttrs.DontFork | PageAttrs.WipeOnFork)) != 0) continue;
            var copy = new ModelPage { Data = kv.Value.Data is { } d ? (byte[])d.Clone() : null, Written = kv.Value.Written, Lazyfree = kv.Value.Lazyfree };
            child._pages.Add(kv.Key, copy);
            if (copy.Written) child._written++;
        }
        return child;
    }

    /// <summary>exit: everything goes.</summary>
    public void Exit()
    {
        Exited = true;
        _regions.Clear();
        _pages.Clear();
        _written = 0;
        _mappedPages = 0;
        _ownTables.Clear();
    }
}
