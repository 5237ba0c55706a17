using NativeMmu.Cpus;
namespace NativeMmu.Mm;

/// <summary>
/// Points where deterministic tests may hold a CPU: null in normal operation (one null check on a path
/// that already freed a page table), so the emulator pays nothing for them.
/// </summary>
public static class TestHooks
{
    /// <summary>Called right after a reclaim cleared a PMD, before the batched TLB flush (the window the 2024 synchronous PT-reclaim series closes with arch_flush_tlb_before_set_pte_page).</summary>
    public static Action<Cpu, MmStruct, ulong>? AfterPmdCleared { get; set; }

    /// <summary>
    /// Copy-on-write PTE tables: when this returns true for (mm, the breaking walker's name), the break is
    /// skipped and the walker goes on to change the shared table, as a walker that forgot its break would
    /// (the review's first objection); the invariant mode's checksum must report it.
    /// </summary>
    public static Func<MmStruct, string, bool>? SkipCowPteBreak { get; set; }
}
