using System.Reflection;
using System.Text.RegularExpressions;
using System.Xml.Linq;

namespace NativeMmu.Tests.Layering;

/// <summary>Where unsafe code may live, and what of it the public surface may show.</summary>
[TestFixture]
public sealed class UnsafeCodeTests
{
    /// <summary>The folders of src/NativeMmu that own memory: the arena and struct pages, the CPUs' TLBs and walks, the lock words, the page tables.</summary>
    private static readonly string[] OwnersOfMemory = ["Physical", "Cpu", "Sync", "Mm"];

    private static readonly Regex UnsafeKeyword = new(@"\bunsafe\b", RegexOptions.Compiled);

    private static string RepositoryRoot()
    {
        for (var d = new DirectoryInfo(TestContext.CurrentContext.TestDirectory); d is not null; d = d.Parent)
            if (File.Exists(Path.Combine(d.FullName, "NativeMmu.sln"))) return d.FullName;
        throw new InvalidOperationException("the tests run outside the repository: NativeMmu.sln not found above " + TestContext.CurrentContext.TestDirectory);
    }

    /// <summary>The source with comments and string literals blanked, so only code can say unsafe.</summary>
    private static string Code(string path)
        => Regex.Replace(File.ReadAllText(path), @"//[^\n]*|/\*.*?\*/|@""(?:[^""]|"""")*""|""(?:\\.|[^""\\\n])*""", " ", RegexOptions.Singleline);

    [Test]
    public void Unsafe_code_appears_only_in_the_layers_that_own_memory()
    {
        string src = Path.Combine(RepositoryRoot(), "src");
        var offenders = Directory.EnumerateFiles(src, "*.cs", SearchOption.AllDirectories)
            .Where(f => !f.Contains($"{Path.DirectorySeparatorChar}obj{Path.DirectorySeparatorChar}", StringComparison.Ordinal))
            .Where(f => UnsafeKeyword.IsMatch(Code(f)))
            .Select(f => Path.GetRelativePath(src, f).Replace(Path.DirectorySeparatorChar, '/'))
            .Where(rel => !OwnersOfMemory.Any(layer => rel.StartsWith($"NativeMmu/{layer}/", StringComparison.Ordinal)))
            .Order(StringComparer.Ordinal)
            .ToList();
        Assert.That(offenders, Is.Empty,
            "unsafe code outside Physical/, Cpu/, Sync/ and Mm/: the entry encodings, the facade, diagnostics and the fuzz engine work on values and spans");
    }

    [Test]
    public void No_public_member_exposes_a_raw_pointer_without_documenting_why()
    {
        var docs = XDocument.Load(Path.ChangeExtension(typeof(Kernel).Assembly.Location, ".xml"));
        var remarks = docs.Descendants("member")
            .Where(m => m.Element("remarks") is { } r && !string.IsNullOrWhiteSpace(r.Value))
            .Select(m => (string)m.Attribute("name")!)
            .ToHashSet(StringComparer.Ordinal);

        const BindingFlags Declared = BindingFlags.Public | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;
        var undocumented = new List<string>();
        foreach (Type t in typeof(Kernel).Assembly.GetExportedTypes())
        {
            foreach (MemberInfo m in t.GetMembers(Declared))
            {
                if (!ExposesPointer(m)) continue;
                if (m is MethodInfo { IsSpecialName: true }) continue; // property accessors are judged with their property
                if (!remarks.Contains(DocId(m))) undocumented.Add($"{t.FullName}.{m.Name}");
            }
        }
        Assert.That(undocumented.Distinct().Order(StringComparer.Ordinal), Is.Empty,
            "a public member that hands out a raw pointer says in <remarks> why a Span, ref or value will not do");
    }

    private static bool ExposesPointer(MemberInfo m) => m switch
    {
        FieldInfo f => IsPointer(f.FieldType),
        PropertyInfo p => IsPointer(p.PropertyType),
        MethodBase mb => mb.GetParameters().Any(p => IsPointer(p.ParameterType)) || (mb is MethodInfo mi && IsPointer(mi.ReturnType)),
        _ => false,
    };

    private static bool IsPointer(Type t)
    {
        while (t.HasElementType && !t.IsPointer) t = t.GetElementType()!; // ref T, T[]
        return t.IsPointer || t.IsFunctionPointer || t.IsUnmanagedFunctionPointer;
    }

    /// <summary>The XML documentation ID of a member (ECMA-334 annex D), enough for the member kinds that can expose a pointer.</summary>
    private static string DocId(MemberInfo m)
    {
        string type = m.DeclaringType!.FullName!.Replace('+', '.');
        return m switch
        {
            FieldInfo => $"F:{type}.{m.Name}",
            PropertyInfo => $"P:{type}.{m.Name}",
            MethodBase mb => $"M:{type}.{(mb is ConstructorInfo ? "#ctor" : mb.Name)}{Parameters(mb)}",
            _ => m.Name,
        };
    }

    private static string Parameters(MethodBase mb)
    {
        var ps = mb.GetParameters();
        return ps.Length == 0 ? "" : "(" + string.Join(",", ps.Select(p => DocType(p.ParameterType))) + ")";
    }

    private static string DocType(Type t)
    {
        if (t.IsByRef) return DocType(t.GetElementType()!) + "@";
        if (t.IsPointer) return DocType(t.GetElementType()!) + "*";
        if (t.IsArray) return DocType(t.GetElementType()!) + "[]";
        if (t.IsGenericParameter) return (t.DeclaringMethod is null ? "`" : "``") + t.GenericParameterPosition;
        if (t.IsGenericType)
        {
            string name = t.GetGenericTypeDefinition().FullName!;
            name = name[..name.IndexOf('`')].Replace('+', '.');
            return name + "{" + string.Join(",", t.GetGenericArguments().Select(DocType)) + "}";
        }
        return t.FullName!.Replace('+', '.');
    }
}
