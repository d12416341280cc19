using System.Collections;
using Microsoft.Extensions.Logging;

namespace Broker.Engine.Diagnostics;

/// <summary>
/// Keeps the log lines a client can cause from becoming a flood: per event id, broker-wide, the first
/// <see cref="LinesPerSecond"/> lines of each second are written and the rest are only counted; the next
/// line written says how many were held back, "(37 similar lines suppressed)". The counters in
/// <see cref="BrokerCounters"/> still count every occurrence.
/// <para>
/// It sits in the engine's loggers (<see cref="Wrap"/>), so every call site of a limited event goes
/// through it, in whichever file it is; which events are limited is the one list below. Lines an
/// operator causes and lines logged once per start are not in it.
/// </para>
/// </summary>
internal sealed class ClientLogLimiter(TimeProvider time)
{
    /// <summary>Lines per second per event id, broker-wide.</summary>
    public const int LinesPerSecond = 10;

    /// <summary>The events a client can cause, by id (docs/operations.md, "Logs", says the same).</summary>
    static readonly int[] Limited =
    [
        1003, // ConnectionRejected: closed before a valid CONNECT
        1004, // MalformedPacket
        1005, // PacketTooLarge
        1007, // ProtocolError
        2001, // ConnectRefused
        3001, // PublishRefused
        3002, // SubscribeRefused
        3003, // WillRefused
        5001, // MessageDropped (also at most once a second per session, and once a second for the mailbox)
        5003, // DirectUndeliverable
    ];

    readonly Window[] _windows = Limited.Select(_ => new Window()).ToArray();
    readonly long _second = time.TimestampFrequency;

    /// <summary>An <see cref="ILogger"/> that writes through <paramref name="inner"/>, limiting the events above.</summary>
    public ILogger Wrap(ILogger inner) => new LimitedLogger(inner, this);

    /// <summary>
    /// True when a line of <paramref name="eventId"/> may be written now; <paramref name="suppressed"/> is then
    /// the number held back since the last one written. Events not in the list always pass.
    /// </summary>
    public bool TryPass(int eventId, out long suppressed)
    {
        suppressed = 0;
        var index = Array.IndexOf(Limited, eventId);
        if (index < 0)
        {
            return true;
        }

        var window = _windows[index];
        var now = time.GetTimestamp();
        lock (window)
        {
            if (window.Written == 0 || now - window.StartedAt >= _second)
            {
                window.StartedAt = now;
                window.Written = 0;
            }

            if (window.Written >= LinesPerSecond)
            {
                window.Suppressed++;
                return false;
            }

            window.Written++;
            suppressed = window.Suppressed;
            window.Suppressed = 0;
            return true;
        }
    }

    /// <summary>One second of one event: the lines written in it, and those held back since the last one written.</summary>
    sealed class Window
    {
        public long StartedAt;
        public int Written;
        public long Suppressed;
    }

    sealed class LimitedLogger(ILogger inner, ClientLogLimiter limiter) : ILogger
    {
        public IDisposable? BeginScope<TState>(TState state)
            where TState : notnull => inner.BeginScope(state);

        public bool IsEnabled(LogLevel logLevel) => inner.IsEnabled(logLevel);

        public void Log<TState>(LogLevel logLevel, EventId eventId, TState state, Exception? exception, Func<TState, Exception?, string> formatter)
        {
            if (!limiter.TryPass(eventId.Id, out var suppressed))
            {
                return;
            }

            if (suppressed == 0)
            {
                inner.Log(logLevel, eventId, state, exception, formatter);
                return;
            }

            var withCount = new SuppressedState(state as IEnumerable<KeyValuePair<string, object?>>, suppressed, formatter(state, exception));
            inner.Log(logLevel, eventId, withCount, exception, static (s, _) => s.ToString());
        }
    }

    /// <summary>
    /// A line's properties plus <c>Suppressed</c>, and its template with " ({Suppressed} similar lines suppressed)"
    /// after it, so structured sinks (Serilog) keep every property and render the count. At most
    /// <see cref="LinesPerSecond"/> a second per event are built.
    /// </summary>
    sealed class SuppressedState : IReadOnlyList<KeyValuePair<string, object?>>
    {
        const string OriginalFormat = "{OriginalFormat}";
        readonly List<KeyValuePair<string, object?>> _properties = [];
        readonly string _message;

        public SuppressedState(IEnumerable<KeyValuePair<string, object?>>? properties, long suppressed, string message)
        {
            var suffix = $" ({suppressed} similar lines suppressed)";
            _message = message + suffix;
            foreach (var property in properties ?? [])
            {
                _properties.Add(property is { Key: OriginalFormat, Value: string format }
                    ? new(OriginalFormat, format + " ({Suppressed} similar lines suppressed)")
                    : property);
            }

            _properties.Insert(Math.Max(0, _properties.Count - 1), new("Suppressed", suppressed));
            if (!_properties.Exists(p => p.Key == OriginalFormat))
            {
                _properties.Add(new(OriginalFormat, _message.Replace("{", "{{", StringComparison.Ordinal).Replace("}", "}}", StringComparison.Ordinal)));
            }
        }

        public int Count => _properties.Count;

        public KeyValuePair<string, object?> this[int index] => _properties[index];

        public IEnumerator<KeyValuePair<string, object?>> GetEnumerator() => _properties.GetEnumerator();

        IEnumerator IEnumerable.GetEnumerator() => GetEnumerator();

        public override string ToString() => _message;
    }
}
