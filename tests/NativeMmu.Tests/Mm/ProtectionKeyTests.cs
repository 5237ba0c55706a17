using NativeMmu.Arch.X86;
using NativeMmu.Cpus;
using NativeMmu.Mm;
using static NativeMmu.Tests.TestSupport;

namespace NativeMmu.Tests.Mm;

/// <summary>
/// x86 protection keys as a kernel with OSPKE uses them without pkey_alloc: PROT_EXEC alone gives the
/// mapping the mm's execute-only key, which init_pkru_value denies every data access
/// (arch/x86/mm/pkeys.c, tools/testing/selftests/mm/protection_keys.c's test_implicit_mprotect_exec_only_memory).
/// </summary>
public class ProtectionKeyTests : OneProcessFixture
{
    private const ulong X = 0x2000_0000;

    private static KernelConfig Config(bool pku) => new() { MemoryBytes = 32UL << 20, Cpus = 2, DebugVm = true, Pku = pku };

    protected override Kernel BootKernel() => new(Config(pku: true));

    private static int PteKey(ulong pte) => (int)((pte >> PageTableBits.BitPkey0) & 0xF);

    [Test]
    public void A_load_from_untouched_exec_only_memory_is_segv_pkuerr_and_maps_nothing()
    {
        ulong a = MapAt(_p, X, PageSize, Prot.Exec);

        Assert.Multiple(() =>
        {
            Assert.That(_cpu.TryLoad<byte>(a, out _), Is.EqualTo(FaultResult.SegvPkuerr));
            Assert.That(_cpu.TryStore<byte>(a, 1), Is.EqualTo(FaultResult.SegvPkuerr), "access_error asks the key before VM_WRITE: a store is SEGV_PKUERR too");
            Assert.That(Pkeys.VmaPkey(_p.Mm.Vmas.FindVma(a)!), Is.EqualTo(1), "mm_pkey_alloc hands out the lowest free key");
            Assert.That(PteOf(_p, a) is null or 0, Is.True, "access_error refused the fault before anything was filled in");
        });
    }

    [Test]
    public void Without_pku_exec_only_memory_reads_like_any_other()
    {
        using var k = new Kernel(Config(pku: false));
        Process p = k.CreateProcess();
        using Cpu cpu = k.AttachCpu();
        p.Enter(cpu);
        ulong a = MapAt(p, X, PageSize, Prot.Exec);

        Assert.That(cpu.TryLoad<byte>(a, out byte v), Is.EqualTo(FaultResult.Retry));
        Assert.That(v, Is.Zero);
        Assert.That(Pkeys.VmaPkey(p.Mm.Vmas.FindVma(a)!), Is.Zero, "no OSPKE: every VMA has key 0");
    }

    [Test]
    public void Mprotect_to_exec_only_puts_the_key_in_present_ptes_and_the_walk_refuses_them_with_x86_pf_pk()
    {
        ulong a = MapAt(_p, X, 2 * PageSize);
        _cpu.Store<long>(a, 42);
        Assert.That(_p.Mprotect(a, PageSize, Prot.Exec), Is.EqualTo(Errno.Success));

        ulong pte = PteOf(_p, a)!.Value;
        Assert.Multiple(() =>
        {
            Assert.That(new Pte(pte).Present, Is.True, "change_protection keeps the page");
            Assert.That(PteKey(pte), Is.EqualTo(1), "vm_get_page_prot moved VM_PKEY_BIT0..3 to bits 59-62");
            Assert.That(_cpu.TryLoad<long>(a, out _), Is.EqualTo(FaultResult.SegvPkuerr));
            Assert.That(_cpu.TryLoad<long>(a + PageSize, out _), Is.EqualTo(FaultResult.Retry), "the rest of the old VMA keeps key 0");
            Assert.That(Pkeys.VmaPkey(_p.Mm.Vmas.FindVma(a + PageSize)!), Is.Zero, "mprotect split the VMA; only the exec-only part took the key");
        });
    }

    [Test]
    public void Mprotect_that_adds_read_to_exec_only_memory_goes_back_to_key_zero()
    {
        ulong a = MapAt(_p, X, PageSize);
        _cpu.Store<long>(a, 42);
        Assert.That(_p.Mprotect(a, PageSize, Prot.Exec), Is.EqualTo(Errno.Success));
        Assert.That(_cpu.TryLoad<long>(a, out _), Is.EqualTo(FaultResult.SegvPkuerr));

        Assert.That(_p.Mprotect(a, PageSize, Prot.Read | Prot.Exec), Is.EqualTo(Errno.Success));

        Assert.Multiple(() =>
        {
            Assert.That(_cpu.TryLoad<long>(a, out long v), Is.EqualTo(FaultResult.Retry));
            Assert.That(v, Is.EqualTo(42), "the page survived both changes");
            Assert.That(PteKey(PteOf(_p, a)!.Value), Is.Zero);
        });
    }

    [Test]
    public void Every_exec_only_mapping_of_an_mm_shares_one_key_and_a_forked_child_inherits_it()
    {
        ulong a = MapAt(_p, X, PageSize, Prot.Exec);
        ulong b = MapAt(_p, X + 4 * PageSize, PageSize, Prot.Exec);
        Assert.That(Pkeys.VmaPkey(_p.Mm.Vmas.FindVma(b)!), Is.EqualTo(Pkeys.VmaPkey(_p.Mm.Vmas.FindVma(a)!)));

        Process child = _p.Fork();
        child.Enter(_cpu);

        Assert.Multiple(() =>
        {
            Assert.That(child.Mm.ExecuteOnlyPkey, Is.EqualTo(1), "arch_dup_pkeys");
            Assert.That(_cpu.TryLoad<byte>(a, out _), Is.EqualTo(FaultResult.SegvPkuerr));
            ulong c = MapAt(child, X + 8 * PageSize, PageSize, Prot.Exec);
            Assert.That(Pkeys.VmaPkey(child.Mm.Vmas.FindVma(c)!), Is.EqualTo(1), "the child allocates no second key");
        });
        child.Exit();
    }

    [Test]
    public void Map_populate_leaves_exec_only_memory_untouched()
    {
        Assert.That(_p.Mmap(X, 4 * PageSize, Prot.Exec, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace | MapFlags.Populate, out ulong a),
            Is.EqualTo(Errno.Success), "mm_populate ignores check_vma_flags' -EFAULT");

        for (ulong i = 0; i < 4; i++)
            Assert.That(PteOf(_p, a + i * PageSize) is null or 0, Is.True, $"page {i}: GUP's data access was refused, nothing faulted in");
    }

    [Test]
    public void Map_populate_without_pku_maps_exec_only_memory()
    {
        using var k = new Kernel(Config(pku: false));
        Process p = k.CreateProcess();
        Assert.That(p.Mmap(X, PageSize, Prot.Exec, MapFlags.Private | MapFlags.Anonymous | MapFlags.FixedNoReplace | MapFlags.Populate, out ulong a),
            Is.EqualTo(Errno.Success));
        Assert.That(new Pte(PteOf(p, a)!.Value).Present, Is.True, "a read fault under FOLL_FORCE mapped the page");
    }
}
