using System.Reflection;
using ArchUnitNET.Domain;
using ArchUnitNET.Fluent;
using ArchUnitNET.Loader;
using ArchUnitNET.NUnit;
using static ArchUnitNET.Fluent.ArchRuleDefinition;
using ArchType = ArchUnitNET.Domain.IType;

namespace NativeMmu.Tests.Layering;

/// <summary>
/// The layers of src/NativeMmu and the rules between them (DESIGN.md): dependencies point down only,
/// unsafe code stays in the layers that own memory, and the public surface exposes no raw pointer
/// without saying why.
/// </summary>
[TestFixture]
public sealed class LayerTests
{
    private static readonly System.Reflection.Assembly Library = typeof(Kernel).Assembly;
    private static readonly Architecture Architecture = new ArchLoader().LoadAssemblies(Library).Build();

    /// <summary>
    /// The configuration every layer may see, as Kconfig's autoconf.h and uapi's errno.h are included
    /// everywhere in the kernel: it lives in the root namespace for its public spelling, below every layer
    /// but the architecture's.
    /// </summary>
    private const string ConfigTypes = "^(KernelConfig|PtReclaimMode|LargeFolioWp|HvoMode|CowPteMode|Errno|ErrnoException)$";

    /// <summary>The layers from the bottom up: each may use the ones before it, never one after.</summary>
    private static readonly (string Name, IObjectProvider<ArchType> Types)[] Layers =
    [
        ("Arch", Types().That().ResideInNamespaceOrBelow("NativeMmu.Arch").As("Arch")),
        ("Config", Types().That().ResideInNamespace("NativeMmu").And().HaveNameMatching(ConfigTypes).As("Config")),
        ("Sync", Types().That().ResideInNamespaceOrBelow("NativeMmu.Sync").As("Sync")),
        ("Physical", Types().That().ResideInNamespaceOrBelow("NativeMmu.Physical").As("Physical")),
        ("Cpus", Types().That().ResideInNamespaceOrBelow("NativeMmu.Cpus").As("Cpus")),
        ("Diagnostics", Types().That().ResideInNamespaceOrBelow("NativeMmu.Diagnostics").As("Diagnostics")),
        ("Mm", Types().That().ResideInNamespaceOrBelow("NativeMmu.Mm").As("Mm")),
        ("Machine", Types().That().ResideInNamespace("NativeMmu").And().DoNotHaveNameMatching(ConfigTypes).As("Machine")),
    ];

    private static IEnumerable<TestCaseData> LowerLayers()
        => Enumerable.Range(0, Layers.Length - 1).Select(i => new TestCaseData(i).SetArgDisplayNames(Layers[i].Name));

    [TestCaseSource(nameof(LowerLayers))]
    public void A_layer_uses_no_type_of_a_layer_above_it(int layer)
    {
        foreach (var higher in Layers.Skip(layer + 1))
        {
            IArchRule rule = Types().That().Are(Layers[layer].Types).Should().NotDependOnAny(higher.Types)
                .Because($"{Layers[layer].Name} lies below {higher.Name}")
                .WithoutRequiringPositiveResults();
            rule.Check(Architecture);
        }
    }

    [Test]
    public void Every_type_of_the_library_belongs_to_one_layer()
    {
        var placed = Layers.SelectMany(l => l.Types.GetObjects(Architecture)).Select(t => t.FullName).ToHashSet();
        var stray = Architecture.Types.Where(t => t.Namespace.FullName.StartsWith("NativeMmu", StringComparison.Ordinal))
            .Select(t => t.FullName).Where(n => !placed.Contains(n)).ToList();
        Assert.That(stray, Is.Empty, "a namespace outside the layer table escapes the order between layers");
    }
}
