using NativeMmu.Arch.X86;
using NativeMmu.Fuzz.Oracle;

namespace NativeMmu.Tests.Arch;

/// <summary>The #PF error code bits of arch/x86/include/asm/trap_pf.h.</summary>
public class PageFaultErrorTests
{
    [TestCase(X86PfError.Prot, 0)]
    [TestCase(X86PfError.Write, 1)]
    [TestCase(X86PfError.User, 2)]
    [TestCase(X86PfError.Rsvd, 3)]
    [TestCase(X86PfError.Instr, 4)]
    [TestCase(X86PfError.Pk, 5)]
    [TestCase(X86PfError.Shstk, 6)]
    [TestCase(X86PfError.Sgx, 15)]
    [TestCase(X86PfError.Rmp, 31)]
    public void Error_code_flag_sits_at_its_bit(X86PfError flag, int bit)
        => Assert.That((uint)flag, Is.EqualTo(1u << bit));

    [Test]
    public void Production_and_oracle_agree_on_every_defined_bit()
    {
        X86PfError[] flags = [X86PfError.Prot, X86PfError.Write, X86PfError.User, X86PfError.Rsvd, X86PfError.Instr,
            X86PfError.Pk, X86PfError.Shstk, X86PfError.Sgx, X86PfError.Rmp];
        Assert.That(flags.Select(f => (uint)f), Is.EqualTo(OraclePfError.Masks.ToArray()));
    }

    [Test]
    public void A_user_write_to_a_not_present_page_reads_as_0x6()
    {
        var code = X86PfError.User | X86PfError.Write;
        OraclePfError decoded = OraclePfError.Decode((uint)code);
        Assert.Multiple(() =>
        {
            Assert.That((uint)code, Is.EqualTo(6u));
            Assert.That(code.HasFlag(X86PfError.Prot), Is.False, "PROT clear: the page was not present");
            Assert.That(decoded.Write && decoded.User && !decoded.Protection, Is.True);
        });
    }

    [Test]
    public void An_instruction_fetch_blocked_by_protection_keys_reads_as_0x35()
    {
        var code = X86PfError.Prot | X86PfError.User | X86PfError.Instr | X86PfError.Pk;
        Assert.That((uint)code, Is.EqualTo(0x35u));
    }

    [Test]
    public void No_error_is_zero() => Assert.That((uint)X86PfError.None, Is.Zero);
}
