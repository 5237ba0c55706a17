using NativeMmu.Mm;

namespace NativeMmu.Tests.Mm;

/// <summary>/sys/kernel/mm/transparent_hugepage: the knobs read and write as the kernel's sysfs files do.</summary>
public class ThpKnobTests
{
    [Test]
    public void Boot_defaults_are_madvise_at_the_top_inherit_for_pmd_size_and_never_for_smaller_sizes()
    {
        var thp = new Thp();
        Assert.That(thp.Read("enabled"), Is.EqualTo("always [madvise] never\n"));
        Assert.That(thp.Read("hugepages-2048kB/enabled"), Is.EqualTo("always [inherit] madvise never\n"));
        Assert.That(thp.Read("hugepages-64kB/enabled"), Is.EqualTo("always inherit madvise [never]\n"));
        Assert.That(thp.Read("hpage_pmd_size"), Is.EqualTo("2097152\n"));
        Assert.That(thp.Read("hugepages-64kB/stats/split_deferred"), Is.EqualTo("0\n"));
    }

    [Test]
    public void Allowable_orders_follow_the_per_size_knob_the_top_level_mode_and_the_vma_advice()
    {
        var thp = new Thp();
        thp.Write("hugepages-64kB/enabled", "always");
        thp.Write("hugepages-32kB/enabled", "madvise");
        thp.Write("hugepages-16kB/enabled", "inherit");
        Assert.That(thp.AllowableOrders(VmFlags.None), Is.EqualTo(1u << 4), "only 'always' without MADV_HUGEPAGE");
        Assert.That(thp.AllowableOrders(VmFlags.HugePage), Is.EqualTo((1u << 4) | (1u << 3) | (1u << 2) | (1u << 9)),
            "madvised: madvise sizes, and inherit sizes since the top level is madvise");
        Assert.That(thp.AllowableOrders(VmFlags.NoHugePage), Is.Zero, "MADV_NOHUGEPAGE forbids every order");
        thp.Write("enabled", "never");
        Assert.That(thp.AllowableOrders(VmFlags.HugePage), Is.EqualTo((1u << 4) | (1u << 3)), "inherit follows the top level to never");
        Assert.That(thp.AnyAnonOrderPossible, Is.True);
        thp.DisableAllSizes();
        Assert.That(thp.AnyAnonOrderPossible, Is.False, "the fault path skips the mTHP search entirely");
    }

    [TestCase("enabled", "inherit")]
    [TestCase("enabled", "sometimes")]
    [TestCase("hugepages-8kB/enabled", "always")]
    [TestCase("hugepages-48kB/enabled", "always")]
    public void Invalid_writes_are_refused(string path, string value)
    {
        var thp = new Thp();
        Assert.That(() => thp.Write(path, value), Throws.InstanceOf<ArgumentException>());
    }
}
