using System.Globalization;

namespace NativeMmu.Cli.Host;

/// <summary>Readers for the kernel's own memory accounting: <c>/proc/[pid]/status</c> and <c>/proc/vmstat</c>.</summary>
public static class ProcStatus
{
    /// <summary>
    /// Reads a kB field such as <c>VmPTE</c> or <c>VmRSS</c> from <c>/proc/self/status</c>
    /// (or <c>/proc/<paramref name="pid"/>/status</c> when <paramref name="pid"/> is not 0).
    /// </summary>
    /// <param name="field">The field name, with or without its trailing colon.</param>
    /// <returns>The value in kB, or null when the file has no such field.</returns>
    /// <exception cref="FormatException">The field is present but does not hold a kB value.</exception>
    public static long? ReadKb(string field, int pid = 0)
    {
        ArgumentOutOfRangeException.ThrowIfNegative(pid);
        string path = pid == 0 ? "/proc/self/status" : $"/proc/{pid.ToString(CultureInfo.InvariantCulture)}/status";
        return ParseKb(File.ReadAllText(path), field, path);
    }

    /// <summary>Reads <c>/proc/vmstat</c> as counter name to value.</summary>
    public static IReadOnlyDictionary<string, long> ReadVmstat() => ParseVmstat(File.ReadAllText("/proc/vmstat"));

    /// <summary>Finds <paramref name="field"/> in status-file text (lines like <c>VmPTE:\t     48 kB</c>).</summary>
    internal static long? ParseKb(string status, string field, string source = "status")
    {
        ArgumentException.ThrowIfNullOrWhiteSpace(field);
        ReadOnlySpan<char> name = field.AsSpan().TrimEnd(':');

        foreach (ReadOnlySpan<char> line in status.AsSpan().EnumerateLines())
        {
            int colon = line.IndexOf(':');
            if (colon < 0 || !line[..colon].SequenceEqual(name))
                continue;

            ReadOnlySpan<char> value = line[(colon + 1)..].Trim();
            if (value.EndsWith(" kB", StringComparison.Ordinal)
                && long.TryParse(value[..^3].TrimEnd(), NumberStyles.None, CultureInfo.InvariantCulture, out long kb))
                return kb;
            throw new FormatException($"{name} in {source} is not a kB value: '{value}'.");
        }
        return null;
    }

    /// <summary>Parses vmstat text (lines like <c>pgfault 123456</c>); lines that do not fit are skipped.</summary>
    internal static IReadOnlyDictionary<string, long> ParseVmstat(string vmstat)
    {
        var counters = new Dictionary<string, long>(StringComparer.Ordinal);
        foreach (ReadOnlySpan<char> line in vmstat.AsSpan().EnumerateLines())
        {
            ReadOnlySpan<char> trimmed = line.Trim();
            int space = trimmed.IndexOf(' ');
            if (space <= 0)
                continue;
            if (long.TryParse(trimmed[(space + 1)..].Trim(), NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long value))
                counters[trimmed[..space].ToString()] = value;
        }
        return counters;
    }
}
