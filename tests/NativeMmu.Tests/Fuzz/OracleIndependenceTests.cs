using System.Reflection;
using System.Reflection.Emit;
using System.Runtime.CompilerServices;
using System.Text.RegularExpressions;
using NativeMmu.Fuzz;
using NativeMmu.Fuzz.Oracle;

namespace NativeMmu.Tests.Fuzz;

/// <summary>
/// The encoding oracle is only worth something while it is written apart from the production
/// encodings it checks: if it borrowed a bit number from NativeMmu.Arch, a wrong bit would be wrong
/// on both sides and the fuzzer would never see it. These tests pin that down over the compiled
/// NativeMmu.Fuzz assembly: base types, interfaces, attributes, fields, properties, events, method
/// signatures, local variables, catch clauses and every type, method and field token in the method
/// bodies' IL. A constant copied from an Arch type leaves no trace in IL (the compiler inlines its
/// value), so the oracle's sources are also read for any mention of the Arch namespace, and the
/// project for a global import of it. Only calli signatures (function pointers) are not decoded; the
/// local or field that holds such a pointer is, with its signature.
/// </summary>
public partial class OracleIndependenceTests
{
    private const string OracleNamespace = "NativeMmu.Fuzz.Oracle";
    private const string ArchNamespace = "NativeMmu.Arch";

    private static readonly Assembly FuzzAssembly = typeof(SystemFuzzer).Assembly;

    private static IEnumerable<Type> OracleTypes
        => FuzzAssembly.GetTypes().Where(t => InNamespace(t.Namespace, OracleNamespace));

    [Test]
    public void The_oracle_namespace_holds_the_oracle_types()
    {
        string[] names = OracleTypes.Select(t => t.Name).ToArray();
        Assert.That(names, Is.SupersetOf(new[]
        {
            nameof(DecodedEntry), nameof(OraclePte), nameof(OraclePmd), nameof(OraclePud), nameof(OracleSwap), nameof(OraclePfError),
        }));
    }

    [Test]
    public void No_oracle_type_uses_a_type_of_the_production_encodings()
    {
        var uses = OracleTypes
            .SelectMany(t => References(t).Where(r => InNamespace(r.Type.Namespace, ArchNamespace)).Select(r => $"{t.FullName}: {r.Where} uses {r.Type.FullName}"))
            .Distinct()
            .ToList();
        Assert.That(uses, Is.Empty);
    }

    [Test]
    public void The_reference_scan_sees_the_production_encodings_where_the_production_subject_uses_them()
    {
        // ProductionSubject (outside the oracle) calls into NativeMmu.Arch.X86 in its method bodies:
        // the scan that finds nothing in the oracle must find those.
        Type subject = FuzzAssembly.GetType("NativeMmu.Fuzz.ProductionSubject", throwOnError: true)!;
        var found = References(subject).Where(r => InNamespace(r.Type.Namespace, ArchNamespace)).ToList();
        Assert.Multiple(() =>
        {
            Assert.That(found.Select(r => r.Type.Name), Does.Contain("Pte").And.Contain("Pmd").And.Contain("Pud").And.Contain("X86PfError"));
            Assert.That(found.Where(r => r.Where.Contains(" IL ", StringComparison.Ordinal)).Select(r => r.Type.Name), Does.Contain("Pte"),
                "the IL scan resolves the calls in the method bodies");
        });
    }

    [Test]
    public void No_oracle_source_file_names_the_production_encodings_namespace()
    {
        string project = Path.Combine(RepositoryRoot(), "src", "NativeMmu.Fuzz");
        string dir = Path.Combine(project, "Oracle");
        Assert.That(Directory.Exists(dir), Is.True, $"{dir} holds the oracle's sources");
        string[] files = Directory.GetFiles(dir, "*.cs", SearchOption.AllDirectories);
        Assert.That(files, Is.Not.Empty);
        var mentions = new List<string>();
        foreach (string file in files)
        {
            string code = Comments().Replace(File.ReadAllText(file), " ");
            foreach (Match m in ArchMention().Matches(code))
                mentions.Add($"{Path.GetRelativePath(project, file)}: '{m.Value}'");
        }
        // Nor may the project import it for every file (a global using, or a Using item).
        foreach (string file in Directory.GetFiles(project, "*.cs", SearchOption.AllDirectories).Where(f => !IsBuildOutput(project, f)))
        {
            string code = Comments().Replace(File.ReadAllText(file), " ");
            foreach (Match m in GlobalArchUsing().Matches(code))
                mentions.Add($"{Path.GetRelativePath(project, file)}: '{m.Value}'");
        }
        foreach (string file in Directory.GetFiles(project, "*.csproj"))
            foreach (Match m in ArchUsingItem().Matches(File.ReadAllText(file)))
                mentions.Add($"{Path.GetFileName(file)}: '{m.Value}'");
        Assert.That(mentions, Is.Empty);
    }

    private static bool InNamespace(string? ns, string root)
        => ns is not null && (ns == root || ns.StartsWith(root + ".", StringComparison.Ordinal));

    private static bool IsBuildOutput(string project, string file)
        => Path.GetRelativePath(project, file).Split(Path.DirectorySeparatorChar)[0] is "bin" or "obj";

    private static string RepositoryRoot([CallerFilePath] string thisFile = "")
        => Path.GetFullPath(Path.Combine(Path.GetDirectoryName(thisFile)!, "..", "..", ".."));

    /// <summary>Comments (line, block and XML doc) and string/char literals, so prose may name the namespace.</summary>
    [GeneratedRegex(@"//[^\n]*|/\*.*?\*/|@""(?:[^""]|"""")*""|""(?:[^""\\\n]|\\.)*""|'(?:[^'\\\n]|\\.)+'", RegexOptions.Singleline)]
    private static partial Regex Comments();

    /// <summary>NativeMmu.Arch, or Arch.X86 (which resolves to it from inside namespace NativeMmu.*), however spaced.</summary>
    [GeneratedRegex(@"\bNativeMmu\s*\.\s*Arch\b|\bArch\s*\.\s*X86\b|(?<![\w.])Arch\s*\.\s*[A-Z]\w*")]
    private static partial Regex ArchMention();

    [GeneratedRegex(@"\bglobal\s+using\b[^;]*\bNativeMmu\s*\.\s*Arch\b[^;]*;")]
    private static partial Regex GlobalArchUsing();

    [GeneratedRegex(@"<Using\b[^>]*\bNativeMmu\.Arch\b[^>]*>")]
    private static partial Regex ArchUsingItem();

    private readonly record struct Reference(string Where, Type Type);

    private const BindingFlags Declared = BindingFlags.Public | BindingFlags.NonPublic | BindingFlags.Instance | BindingFlags.Static | BindingFlags.DeclaredOnly;

    /// <summary>Every type <paramref name="t"/> names in its metadata and its method bodies, each with where.</summary>
    private static IEnumerable<Reference> References(Type t)
    {
        IEnumerable<Reference> Of(string where, Type? type) => Flatten(type).Select(x => new Reference(where, x));

        foreach (Reference r in Of("base type", t.BaseType)) yield return r;
        foreach (Type i in t.GetInterfaces())
            foreach (Reference r in Of("interface", i)) yield return r;
        foreach (Type g in t.IsGenericTypeDefinition ? t.GetGenericArguments() : [])
            foreach (Type c in g.GetGenericParameterConstraints())
                foreach (Reference r in Of("generic constraint", c)) yield return r;
        foreach (Reference r in AttributeReferences("attribute", t.CustomAttributes)) yield return r;

        foreach (FieldInfo f in t.GetFields(Declared))
        {
            foreach (Reference r in Of($"field {f.Name}", f.FieldType)) yield return r;
            foreach (Reference r in AttributeReferences($"field {f.Name} attribute", f.CustomAttributes)) yield return r;
        }
        foreach (PropertyInfo p in t.GetProperties(Declared))
        {
            foreach (Reference r in Of($"property {p.Name}", p.PropertyType)) yield return r;
            foreach (Reference r in AttributeReferences($"property {p.Name} attribute", p.CustomAttributes)) yield return r;
        }
        foreach (EventInfo e in t.GetEvents(Declared))
            foreach (Reference r in Of($"event {e.Name}", e.EventHandlerType)) yield return r;

        foreach (MethodBase m in t.GetMethods(Declared).Cast<MethodBase>().Concat(t.GetConstructors(Declared)))
        {
            string where = $"method {m.Name}";
            foreach (Reference r in MethodSignature(where, m)) yield return r;
            foreach (Reference r in AttributeReferences($"{where} attribute", m.CustomAttributes)) yield return r;
            foreach (ParameterInfo p in m.GetParameters())
                foreach (Reference r in AttributeReferences($"{where} parameter attribute", p.CustomAttributes)) yield return r;

            MethodBody? body = m.GetMethodBody();
            if (body is null) continue;
            foreach (LocalVariableInfo l in body.LocalVariables)
                foreach (Reference r in Of($"{where} local {l.LocalIndex}", l.LocalType)) yield return r;
            foreach (ExceptionHandlingClause c in body.ExceptionHandlingClauses)
                if (c.Flags == ExceptionHandlingClauseOptions.Clause)
                    foreach (Reference r in Of($"{where} catch", c.CatchType)) yield return r;
            foreach (MemberInfo member in IlMembers(m, body))
                foreach (Reference r in MemberReferences($"{where} IL {member.Name}", member)) yield return r;
        }
    }

    private static IEnumerable<Reference> MethodSignature(string where, MethodBase m)
    {
        foreach (Type x in Flatten(m.DeclaringType)) yield return new(where, x);
        if (m is MethodInfo mi)
            foreach (Type x in Flatten(mi.ReturnType)) yield return new($"{where} return", x);
        foreach (ParameterInfo p in m.GetParameters())
            foreach (Type x in Flatten(p.ParameterType)) yield return new($"{where} parameter {p.Name}", x);
        if (m.IsGenericMethod)
            foreach (Type g in m.GetGenericArguments())
            {
                foreach (Type x in Flatten(g)) yield return new($"{where} generic argument", x);
                if (g.IsGenericParameter)
                    foreach (Type c in g.GetGenericParameterConstraints())
                        foreach (Type x in Flatten(c)) yield return new($"{where} generic constraint", x);
            }
    }

    private static IEnumerable<Reference> MemberReferences(string where, MemberInfo member) => member switch
    {
        Type type => Flatten(type).Select(x => new Reference(where, x)),
        FieldInfo f => Flatten(f.DeclaringType).Concat(Flatten(f.FieldType)).Select(x => new Reference(where, x)),
        MethodBase m => MethodSignature(where, m),
        _ => Flatten(member.DeclaringType).Select(x => new Reference(where, x)),
    };

    private static IEnumerable<Reference> AttributeReferences(string where, IEnumerable<CustomAttributeData> attributes)
    {
        foreach (CustomAttributeData a in attributes)
        {
            foreach (Type x in Flatten(a.AttributeType)) yield return new(where, x);
            IEnumerable<CustomAttributeTypedArgument> args = a.ConstructorArguments.Concat(a.NamedArguments.Select(n => n.TypedValue));
            foreach (CustomAttributeTypedArgument arg in args)
            {
                foreach (Type x in Flatten(arg.ArgumentType)) yield return new(where, x);
                if (arg.Value is Type typeArg)
                    foreach (Type x in Flatten(typeArg)) yield return new(where, x);
            }
        }
    }

    /// <summary>A type and every type it is built from: element types, generic arguments, function-pointer signatures.</summary>
    private static IEnumerable<Type> Flatten(Type? type)
    {
        if (type is null || type.IsGenericParameter) yield break;
        if (type.HasElementType)
        {
            foreach (Type x in Flatten(type.GetElementType())) yield return x;
            yield break;
        }
        if (type.IsFunctionPointer)
        {
            foreach (Type x in Flatten(type.GetFunctionPointerReturnType())) yield return x;
            foreach (Type p in type.GetFunctionPointerParameterTypes())
                foreach (Type x in Flatten(p)) yield return x;
            yield break;
        }
        yield return type;
        if (type.IsGenericType && !type.IsGenericTypeDefinition)
            foreach (Type g in type.GetGenericArguments())
                foreach (Type x in Flatten(g)) yield return x;
    }

    private static readonly Dictionary<short, OpCode> OpCodesByValue = typeof(OpCodes)
        .GetFields(BindingFlags.Public | BindingFlags.Static)
        .Select(f => (OpCode)f.GetValue(null)!)
        .ToDictionary(o => o.Value);

    /// <summary>
    /// The members a method body's IL names: the operands of every instruction that takes a type, a
    /// method, a field or a token (ldtoken), resolved in the generic context of the method.
    /// </summary>
    private static IEnumerable<MemberInfo> IlMembers(MethodBase method, MethodBody body)
    {
        byte[] il = body.GetILAsByteArray() ?? [];
        Type[]? typeArgs = method.DeclaringType is { IsGenericType: true } d ? d.GetGenericArguments() : null;
        Type[]? methodArgs = method.IsGenericMethod ? method.GetGenericArguments() : null;
        int pc = 0;
        while (pc < il.Length)
        {
            short value = il[pc] == 0xFE ? (short)(0xFE00 | il[pc + 1]) : il[pc];
            if (!OpCodesByValue.TryGetValue(value, out OpCode op))
                throw new InvalidOperationException($"{method.DeclaringType}.{method.Name}: unknown opcode 0x{value:x} at IL_{pc:x4}");
            pc += op.Size;
            switch (op.OperandType)
            {
                case OperandType.InlineNone:
                    break;
                case OperandType.ShortInlineBrTarget or OperandType.ShortInlineI or OperandType.ShortInlineVar:
                    pc += 1;
                    break;
                case OperandType.InlineVar:
                    pc += 2;
                    break;
                case OperandType.InlineI8 or OperandType.InlineR:
                    pc += 8;
                    break;
                case OperandType.InlineSwitch:
                    pc += 4 + 4 * BitConverter.ToInt32(il, pc);
                    break;
                case OperandType.InlineField or OperandType.InlineMethod or OperandType.InlineType or OperandType.InlineTok:
                    yield return method.Module.ResolveMember(BitConverter.ToInt32(il, pc), typeArgs, methodArgs)!;
                    pc += 4;
                    break;
                default: // InlineI, InlineBrTarget, InlineSig, InlineString, ShortInlineR: a 4-byte operand naming no member
                    pc += 4;
                    break;
            }
        }
    }
}
