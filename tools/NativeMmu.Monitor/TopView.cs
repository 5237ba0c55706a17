using System.Globalization;
using System.Text;
using System.Text.Encodings.Web;
using System.Text.Json;
using Spectre.Console;

namespace NativeMmu.Monitor;

/// <summary>How `top` shows each interval: a live table on a terminal, a reprinted block otherwise, or JSON lines.</summary>
public static class TopView
{
    /// <summary>{"time":"...","pid":P,"counters":{"page-faults":123.0,...}}: rates per second, gauges as reported.</summary>
    public static string ToJsonLine(CounterSnapshot s)
    {
        using var buffer = new MemoryStream();
        using (var w = new Utf8JsonWriter(buffer, new JsonWriterOptions { Encoder = JavaScriptEncoder.UnsafeRelaxedJsonEscaping }))
        {
            w.WriteStartObject();
            w.WriteString("time", s.Time.UtcDateTime.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture));
            w.WriteNumber("pid", s.Pid);
            w.WriteStartObject("counters");
            foreach (CounterValue c in s.Counters) w.WriteNumber(c.Name, Math.Round(c.Value, 3));
            w.WriteEndObject();
            w.WriteEndObject();
        }
        return Encoding.UTF8.GetString(buffer.ToArray());
    }

    public static string FormatValue(CounterValue c)
        => c.Value.ToString(Math.Abs(c.Value) >= 100 || c.Value == Math.Floor(c.Value) ? "N0" : "N2", CultureInfo.InvariantCulture);

    /// <summary>The block printed per interval when stdout is not a terminal.</summary>
    public static string ToPlainText(CounterSnapshot s, TargetProcess target)
    {
        var sb = new StringBuilder();
        sb.Append(CultureInfo.InvariantCulture, $"[{NativeMmuMonitor.ProviderName}] pid {target.Pid} {target.Name}  {s.Time:HH:mm:ss}").AppendLine();
        int width = Math.Max(10, s.Counters.Count == 0 ? 0 : s.Counters.Max(c => c.DisplayName.Length + c.ShownUnits.Length + 3));
        foreach (CounterValue c in s.Counters)
        {
            string label = c.ShownUnits.Length > 0 ? $"{c.DisplayName} ({c.ShownUnits})" : c.DisplayName;
            sb.Append("    ").Append(label.PadRight(width)).Append(FormatValue(c).PadLeft(16)).AppendLine();
        }
        return sb.ToString();
    }

    private static Table Table(CounterSnapshot? s, TargetProcess target)
    {
        var table = new Table().Border(TableBorder.Rounded)
            .Title($"[bold]{NativeMmuMonitor.ProviderName}[/] pid {target.Pid} {Markup.Escape(target.Name)}")
            .Caption(s is null ? "waiting for the first interval..." : $"{s.Time:HH:mm:ss}   Ctrl+C to stop");
        table.AddColumn("Counter");
        table.AddColumn("Name");
        table.AddColumn(new TableColumn("Value").RightAligned());
        table.AddColumn("Units");
        if (s is not null)
            foreach (CounterValue c in s.Counters)
                table.AddRow(Markup.Escape(c.DisplayName), Markup.Escape(c.Name), FormatValue(c), Markup.Escape(c.ShownUnits));
        return table;
    }

    /// <summary>
    /// Runs `top` against <paramref name="pid"/> until <paramref name="ct"/> is cancelled or the process
    /// goes away. Returns the number of intervals shown.
    /// </summary>
    public static async Task<int> RunAsync(int pid, bool json, TextWriter output, CancellationToken ct)
    {
        TargetProcess target = TargetProcess.Describe(pid);
        int shown = 0;
        bool live = !json && !Console.IsOutputRedirected && ReferenceEquals(output, Console.Out) && AnsiConsole.Profile.Capabilities.Interactive;
        if (!live)
        {
            await NativeMmuMonitor.WatchCountersAsync(pid, s =>
            {
                output.WriteLine(json ? ToJsonLine(s) : ToPlainText(s, target));
                output.Flush();
                shown++;
            }, ct).ConfigureAwait(false);
            return shown;
        }

        await AnsiConsole.Live(Table(null, target)).AutoClear(false).StartAsync(async ctx =>
        {
            await NativeMmuMonitor.WatchCountersAsync(pid, s =>
            {
                ctx.UpdateTarget(Table(s, target));
                ctx.Refresh();
                shown++;
            }, ct).ConfigureAwait(false);
        }).ConfigureAwait(false);
        return shown;
    }
}
