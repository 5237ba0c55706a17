using System.Runtime.CompilerServices;

namespace NativeMmu.Mm;

/// <summary>
/// The set of an mm's VMAs, ordered by address: the role the maple tree (mm_mt) plays in the kernel, and the
/// rbtree plus vm_prev/vm_next list did before it. An intrusive AVL tree keyed by VmStart, threaded with the
/// Prev/Next list so neighbour steps are O(1). VMAs never overlap, so ordering by VmStart equals ordering by
/// VmEnd, which is what lets find_vma descend on VmEnd. Each node also keeps the largest free gap in its
/// subtree (rb_subtree_gap of the kernels from 3.8 to 6.0; the maple tree tracks its gaps the same way), so
/// get_unmapped_area finds the highest gap that fits in O(log n) instead of walking every VMA it passes.
/// </summary>
/// <remarks>
/// <para>No internal locking: callers hold the mm's mmap_lock, for write around Insert/Remove/Clear and any
/// change of a linked VMA's bounds, for read around lookups and iteration.</para>
/// <para>Callers (vma split, merge, expand, shrink) may change a linked VMA's VmStart/VmEnd in place, without a
/// Remove/Insert, only if the VMA still lies strictly between its Prev and Next: Prev.VmEnd &lt;= VmStart &lt;
/// VmEnd &lt;= Next.VmStart. The tree stores no keys of its own, so such an update keeps it valid; one that
/// reorders or overlaps VMAs silently corrupts every later lookup (Validate catches it).</para>
/// </remarks>
public sealed class VmaTree
{
    private Vma? _root;
    private Vma? _first;
    private Vma? _last;
    private int _count;

    /// <summary>The lowest VMA, or null when the mm has none.</summary>
    public Vma? First => _first;
    /// <summary>The highest VMA (the kernel's find_vma_prev(mm, ULONG_MAX) answer).</summary>
    public Vma? Last => _last;
    /// <summary>map_count.</summary>
    public int Count => _count;

    /// <summary>Links <paramref name="vma"/> into the tree and the address-ordered list (vma_link).</summary>
    public void Insert(Vma vma)
    {
        ArgumentNullException.ThrowIfNull(vma);
        if (vma.VmStart >= vma.VmEnd)
            throw new ArgumentException($"VMA {vma.VmStart:x12}-{vma.VmEnd:x12} is empty or inverted.", nameof(vma));
        if (IsLinked(vma))
            throw new InvalidOperationException($"VMA {vma.VmStart:x12}-{vma.VmEnd:x12} is already linked into a tree.");

        // One descent finds both the insertion point and the would-be neighbours, so the overlap check and the
        // list splice need no further search.
        Vma? parent = null, pred = null, succ = null;
        Vma? node = _root;
        bool goLeft = false;
        while (node != null)
        {
            parent = node;
            goLeft = vma.VmStart < node.VmStart;
            if (goLeft) { succ = node; node = node.TreeLeft; }
            else { pred = node; node = node.TreeRight; }
        }
        if (pred != null && pred.VmEnd > vma.VmStart) ThrowOverlap(vma, pred);
        if (succ != null && succ.VmStart < vma.VmEnd) ThrowOverlap(vma, succ);

        vma.TreeParent = parent;
        vma.TreeHeight = 1;
        if (parent == null) _root = vma;
        else if (goLeft) parent.TreeLeft = vma;
        else parent.TreeRight = vma;

        vma.Prev = pred;
        vma.Next = succ;
        if (pred != null) pred.Next = vma; else _first = vma;
        if (succ != null) succ.Prev = vma; else _last = vma;
        _count++;

        vma.TreeGap = OwnGap(vma);
        Rebalance(parent);
        // The new node joins every subtree above it, and it shortens the gap below its successor.
        GapChanged(vma);
        if (succ != null) GapChanged(succ);
    }

    /// <summary>Unlinks <paramref name="vma"/> from the tree and the list (vma_iter_clear plus the old __vma_unlink_list).</summary>
    public void Remove(Vma vma)
    {
        ArgumentNullException.ThrowIfNull(vma);
        if (!Contains(vma))
            throw new InvalidOperationException($"VMA {vma.VmStart:x12}-{vma.VmEnd:x12} is not linked into this tree.");

        Vma? rebalanceFrom;
        Vma? left = vma.TreeLeft, right = vma.TreeRight;
        if (left != null && right != null)
        {
            // The tree holds nodes, not keys, so the in-order successor is moved bodily into vma's slot rather
            // than having its key copied. With two children the successor is the leftmost node of the right
            // subtree, which is exactly the list neighbour.
            Vma succ = vma.Next!;
            if (succ.TreeParent == vma)
            {
                rebalanceFrom = succ;
            }
            else
            {
                Vma succParent = succ.TreeParent!;
                Vma? succRight = succ.TreeRight;
                succParent.TreeLeft = succRight;
                if (succRight != null) succRight.TreeParent = succParent;
                succ.TreeRight = right;
                right.TreeParent = succ;
                rebalanceFrom = succParent;
            }
            succ.TreeLeft = left;
            left.TreeParent = succ;
            succ.TreeHeight = vma.TreeHeight;
            succ.TreeParent = vma.TreeParent;
            ReplaceChild(vma.TreeParent, vma, succ);
        }
        else
        {
            Vma? child = left ?? right;
            Vma? parent = vma.TreeParent;
            if (child != null) child.TreeParent = parent;
            ReplaceChild(parent, vma, child);
            rebalanceFrom = parent;
        }
        Rebalance(rebalanceFrom);

        Vma? prev = vma.Prev, next = vma.Next;
        if (prev != null) prev.Next = next; else _first = next;
        if (next != null) next.Prev = prev; else _last = prev;
        _count--;

        // Every subtree that held the node lies on the path up from where it was unlinked; the gap below
        // its successor now reaches down to its predecessor.
        if (rebalanceFrom != null) GapChanged(rebalanceFrom);
        if (next != null) GapChanged(next);

        // Cleared so the VMA can be re-inserted (mremap, a failed merge) and so IsLinked stays truthful.
        vma.TreeLeft = vma.TreeRight = vma.TreeParent = null;
        vma.TreeHeight = 0;
        vma.TreeGap = 0;
        vma.Prev = vma.Next = null;
    }

    /// <summary>
    /// The gap below <paramref name="vma"/>: from the previous VMA's end (or address 0) to its start. Zero
    /// while a merge briefly has the previous VMA reach past it.
    /// </summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static ulong OwnGap(Vma vma)
    {
        ulong below = vma.Prev?.VmEnd ?? 0;
        return vma.VmStart > below ? vma.VmStart - below : 0;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdateGap(Vma node)
        => node.TreeGap = Math.Max(OwnGap(node), Math.Max(node.TreeLeft?.TreeGap ?? 0, node.TreeRight?.TreeGap ?? 0));

    /// <summary>
    /// vma_gap_callbacks_propagate: <paramref name="vma"/>'s own gap changed (its start, or the previous VMA's
    /// end, moved) or its subtree did; recomputes the subtree gaps from it up to the root.
    /// </summary>
    internal static void GapChanged(Vma vma)
    {
        for (Vma? n = vma; n != null; n = n.TreeParent) UpdateGap(n);
    }

    /// <summary>
    /// unmapped_area_topdown: the highest free range of <paramref name="len"/> bytes inside [low, high), found
    /// through the subtree gaps; false when none is. The free ranges are the gaps between VMAs and the one
    /// above the last VMA.
    /// </summary>
    public bool FindGapTopdown(ulong low, ulong high, ulong len, out ulong start)
    {
        start = 0;
        if (high < low || high - low < len) return false;
        if (_last == null || _last.VmEnd <= high - len)
        {
            start = high - len;
            return true;
        }
        Vma? v = HighestGap(_root, low, high, len);
        if (v == null) return false;
        start = Math.Min(v.VmStart, high) - len;
        return true;
    }

    /// <summary>The highest VMA of the subtree whose gap below it, clipped to [low, high), holds len bytes.</summary>
    private static Vma? HighestGap(Vma? node, ulong low, ulong high, ulong len)
    {
        while (node != null && node.TreeGap >= len)
        {
            // Right: the gaps above this VMA start at or above its end.
            if (node.VmEnd <= high - len && HighestGap(node.TreeRight, low, high, len) is { } right) return right;
            ulong gapStart = Math.Max(node.Prev?.VmEnd ?? 0, low), gapEnd = Math.Min(node.VmStart, high);
            if (gapEnd >= gapStart && gapEnd - gapStart >= len) return node;
            // Left: the gaps below end below this VMA's start.
            if (node.VmStart < low + len) return null;
            node = node.TreeLeft;
        }
        return null;
    }

    /// <summary>find_vma: the first VMA with VmEnd above <paramref name="addr"/>, which may start above it.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vma? FindVma(ulong addr)
    {
        Vma? result = null;
        Vma? node = _root;
        while (node != null)
        {
            if (node.VmEnd > addr)
            {
                result = node;
                if (node.VmStart <= addr) break;
                node = node.TreeLeft;
            }
            else
            {
                node = node.TreeRight;
            }
        }
        return result;
    }

    /// <summary>find_vma_prev: find_vma, plus the VMA before it (the last VMA when nothing ends above addr).</summary>
    public Vma? FindVmaPrev(ulong addr, out Vma? prev)
    {
        Vma? vma = FindVma(addr);
        prev = vma != null ? vma.Prev : _last;
        return vma;
    }

    /// <summary>find_vma_intersection: the first VMA overlapping [start, end); null for an empty range.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vma? FindVmaIntersection(ulong start, ulong end)
    {
        // The maple-tree version searches [start, end - 1], which is empty when end <= start.
        if (end <= start) return null;
        Vma? vma = FindVma(start);
        return vma != null && vma.VmStart < end ? vma : null;
    }

    /// <summary>vma_lookup: the VMA containing <paramref name="addr"/>, or null.</summary>
    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    public Vma? VmaLookup(ulong addr)
    {
        Vma? node = _root;
        while (node != null)
        {
            if (addr < node.VmStart) node = node.TreeLeft;
            else if (addr >= node.VmEnd) node = node.TreeRight;
            else return node;
        }
        return null;
    }

    /// <summary>Iterates the VMAs in address order (for_each_vma) without allocating.</summary>
    public Enumerator GetEnumerator() => new(_first);

    /// <summary>Unlinks every VMA (exit_mmap's teardown), leaving each one re-insertable.</summary>
    public void Clear()
    {
        Vma? vma = _first;
        while (vma != null)
        {
            Vma? next = vma.Next;
            vma.TreeLeft = vma.TreeRight = vma.TreeParent = null;
            vma.TreeHeight = 0;
            vma.TreeGap = 0;
            vma.Prev = vma.Next = null;
            vma = next;
        }
        _root = _first = _last = null;
        _count = 0;
    }

    /// <summary>
    /// validate_mm: checks every structural invariant (parent links, heights, AVL balance, ordering and
    /// non-overlap, list threading, First/Last, Count) and throws naming the first one broken.
    /// </summary>
    public void Validate()
    {
        if (_root == null)
        {
            if (_first != null || _last != null || _count != 0)
                throw Broken($"empty tree but First={_first}, Last={_last}, Count={_count}");
            return;
        }
        if (_root.TreeParent != null) throw Broken($"root {_root} has a parent");

        // In-order walk via parent links, in lockstep with the list; bounded by Count so a cycle cannot hang it.
        Vma? node = _root;
        while (node.TreeLeft != null) node = node.TreeLeft;
        Vma? listNode = _first;
        if (_first == null || _first.Prev != null) throw Broken($"First {_first} is null or has a Prev");
        Vma? previous = null;
        int seen = 0;
        while (node != null)
        {
            if (++seen > _count) throw Broken($"Count {_count} is below the number of nodes in the tree");
            if (!ReferenceEquals(node, listNode))
                throw Broken($"in-order node #{seen} {node} differs from list node {listNode?.ToString() ?? "null"}");
            CheckNode(node);
            if (node.Prev != previous)
                throw Broken($"{node}.Prev is {node.Prev?.ToString() ?? "null"}, expected {previous?.ToString() ?? "null"}");
            if (previous != null && previous.VmEnd > node.VmStart)
                throw Broken($"ordering/overlap: {previous} is followed by {node}");
            previous = node;
            listNode = node.Next;
            node = InOrderSuccessor(node);
        }
        if (listNode != null) throw Broken($"list continues past the last tree node with {listNode}");
        if (seen != _count) throw Broken($"Count is {_count} but the tree holds {seen}");
        if (!ReferenceEquals(previous, _last)) throw Broken($"Last is {_last}, expected {previous}");
    }

    private static void CheckNode(Vma node)
    {
        if (node.VmStart >= node.VmEnd) throw Broken($"{node} is empty or inverted");
        Vma? l = node.TreeLeft, r = node.TreeRight;
        if (l != null && l.TreeParent != node) throw Broken($"{l}.TreeParent does not point at {node}");
        if (r != null && r.TreeParent != node) throw Broken($"{r}.TreeParent does not point at {node}");
        // Each node checked against its children's stored heights proves every stored height by induction.
        int lh = Height(l), rh = Height(r);
        if (node.TreeHeight != 1 + Math.Max(lh, rh))
            throw Broken($"{node} has height {node.TreeHeight}, children give {1 + Math.Max(lh, rh)}");
        if (Math.Abs(lh - rh) > 1) throw Broken($"AVL balance at {node}: left height {lh}, right height {rh}");
        ulong gap = Math.Max(OwnGap(node), Math.Max(l?.TreeGap ?? 0, r?.TreeGap ?? 0));
        if (node.TreeGap != gap) throw Broken($"{node} has subtree gap {node.TreeGap:x}, its gap and children give {gap:x}");
    }

    private static Vma? InOrderSuccessor(Vma node)
    {
        if (node.TreeRight != null)
        {
            node = node.TreeRight;
            while (node.TreeLeft != null) node = node.TreeLeft;
            return node;
        }
        Vma? parent = node.TreeParent;
        while (parent != null && node == parent.TreeRight)
        {
            node = parent;
            parent = parent.TreeParent;
        }
        return parent;
    }

    private static InvalidOperationException Broken(string what) => new($"VmaTree invariant broken: {what}.");

    private static void ThrowOverlap(Vma vma, Vma existing) =>
        throw new InvalidOperationException(
            $"VMA {vma.VmStart:x12}-{vma.VmEnd:x12} overlaps existing VMA {existing.VmStart:x12}-{existing.VmEnd:x12}.");

    // A free-standing VMA has every link clear; the root of a one-node tree is the only linked VMA that
    // looks free, and that is only detectable for this tree.
    private bool IsLinked(Vma vma) =>
        vma.TreeParent != null || vma.TreeLeft != null || vma.TreeRight != null
        || vma.Prev != null || vma.Next != null || ReferenceEquals(vma, _root);

    // O(log n): cheap enough to keep Remove from corrupting this tree with another mm's VMA.
    private bool Contains(Vma vma)
    {
        Vma node = vma;
        while (node.TreeParent != null) node = node.TreeParent;
        return ReferenceEquals(node, _root) && _root != null;
    }

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static int Height(Vma? node) => node?.TreeHeight ?? 0;

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private static void UpdateHeight(Vma node) => node.TreeHeight = 1 + Math.Max(Height(node.TreeLeft), Height(node.TreeRight));

    [MethodImpl(MethodImplOptions.AggressiveInlining)]
    private void ReplaceChild(Vma? parent, Vma oldChild, Vma? newChild)
    {
        if (parent == null) _root = newChild;
        else if (parent.TreeLeft == oldChild) parent.TreeLeft = newChild;
        else parent.TreeRight = newChild;
    }

    /// <summary>
    /// Restores heights and balance from <paramref name="node"/> up. A stored height is still the subtree's height
    /// before the change, so once a (possibly rotated) subtree ends up at its old height nothing above can change:
    /// that stops an insert after at most one rotation and a remove at the first unchanged level.
    /// </summary>
    private void Rebalance(Vma? node)
    {
        while (node != null)
        {
            int oldHeight = node.TreeHeight;
            int balance = Height(node.TreeLeft) - Height(node.TreeRight);
            if (balance > 1)
            {
                Vma l = node.TreeLeft!;
                if (Height(l.TreeLeft) < Height(l.TreeRight)) RotateLeft(l);
                node = RotateRight(node);
            }
            else if (balance < -1)
            {
                Vma r = node.TreeRight!;
                if (Height(r.TreeRight) < Height(r.TreeLeft)) RotateRight(r);
                node = RotateLeft(node);
            }
            else
            {
                UpdateHeight(node);
            }
            if (node.TreeHeight == oldHeight) return;
            node = node.TreeParent;
        }
    }

    private Vma RotateLeft(Vma x)
    {
        Vma y = x.TreeRight!;
        Vma? inner = y.TreeLeft;
        x.TreeRight = inner;
        if (inner != null) inner.TreeParent = x;
        y.TreeParent = x.TreeParent;
        ReplaceChild(x.TreeParent, x, y);
        y.TreeLeft = x;
        x.TreeParent = y;
        UpdateHeight(x);
        UpdateHeight(y);
        UpdateGap(x);
        UpdateGap(y);
        return y;
    }

    private Vma RotateRight(Vma x)
    {
        Vma y = x.TreeLeft!;
        Vma? inner = y.TreeRight;
        x.TreeLeft = inner;
        if (inner != null) inner.TreeParent = x;
        y.TreeParent = x.TreeParent;
        ReplaceChild(x.TreeParent, x, y);
        y.TreeRight = x;
        x.TreeParent = y;
        UpdateHeight(x);
        UpdateHeight(y);
        UpdateGap(x);
        UpdateGap(y);
        return y;
    }

    /// <summary>
    /// Walks the Prev/Next list. The next VMA is read before Current is handed out, so the caller may Remove
    /// Current (as unmap loops do) without ending the walk; other changes during iteration are not supported.
    /// </summary>
    public struct Enumerator
    {
        private Vma? _next;
        private Vma? _current;

        internal Enumerator(Vma? first)
        {
            _next = first;
            _current = null;
        }

        public readonly Vma Current => _current!;

        public bool MoveNext()
        {
            _current = _next;
            if (_current == null) return false;
            _next = _current.Next;
            return true;
        }
    }
}
