using System.Collections.Concurrent;
using Serilog.Core;
using Serilog.Events;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A Serilog sink that keeps every line in memory: register it as a service (the host reads sinks from
/// its services) to see what the broker logged, by event id.
/// </summary>
public sealed class LogCapture : ILogEventSink
{
    readonly ConcurrentQueue<LogEvent> _events = new();

    public void Emit(LogEvent logEvent) => _events.Enqueue(logEvent);

    /// <summary>The lines of one event id, rendered, in order.</summary>
    public IReadOnlyList<string> Lines(int eventId) => [.. Events(eventId).Select(e => e.RenderMessage(System.Globalization.CultureInfo.InvariantCulture))];

    public IReadOnlyList<LogEvent> Events(int eventId) => [.. _events.Where(e => IdOf(e) == eventId)];

    static int? IdOf(LogEvent e) =>
        e.Properties.TryGetValue("EventId", out var value) && value is StructureValue s
        && s.Properties.FirstOrDefault(p => p.Name == "Id")?.Value is ScalarValue { Value: int id }
            ? id
            : null;
}
