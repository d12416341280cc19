using System.Net;
using System.Threading.RateLimiting;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Broker.Engine.Admission;

/// <summary>
/// The front door of every listener (TCP, TLS, WebSocket, HTTP, the own TCP listener): one shared count of
/// open connections against <c>Broker:Limits:MaxConnections</c>, and a token bucket per source address
/// (<c>ConnectRatePerSource</c>, <c>ConnectBurstPerSource</c>). A refused connection is closed by the
/// transport at once, before any MQTT is read; refusals are counted and logged at most once a second.
/// </summary>
public sealed partial class ConnectionAdmission : IDisposable
{
    readonly int _maxConnections;
    readonly PartitionedRateLimiter<IPAddress>? _perSource;
    readonly BrokerCounters _counters;
    readonly ILogger _logger;
    readonly LogGate _overLimitLog = new(TimeSpan.FromSeconds(1));
    readonly LogGate _overRateLog = new(TimeSpan.FromSeconds(1));
    int _open;

    public ConnectionAdmission(IOptions<EngineOptions> options, BrokerCounters counters, ILogger<ConnectionAdmission> logger)
    {
        var limits = options.Value.Limits;
        _maxConnections = limits.MaxConnections;
        _counters = counters;
        _logger = logger;
        if (limits.ConnectRatePerSource > 0)
        {
            // No timer per source: the partitioned limiter refills every bucket from one timer and drops
            // buckets that have been full (idle) for a while, so memory follows the active sources.
            var bucket = new TokenBucketRateLimiterOptions
            {
                TokenLimit = limits.ConnectBurstPerSource,
                TokensPerPeriod = limits.ConnectRatePerSource,
                ReplenishmentPeriod = TimeSpan.FromSeconds(1),
                QueueLimit = 0,
                AutoReplenishment = false,
            };
            _perSource = PartitionedRateLimiter.Create<IPAddress, IPAddress>(source => RateLimitPartition.GetTokenBucketLimiter(source, _ => bucket));
        }

        counters.Meter.CreateObservableUpDownCounter("network.connections", () => OpenConnections, "{connection}", "Open network connections over all listeners, counted against Broker:Limits:MaxConnections");
    }

    /// <summary>Network connections open now, over all listeners.</summary>
    public int OpenConnections => Volatile.Read(ref _open);

    /// <summary>
    /// Whether a just-accepted connection may stay. True takes a place that <see cref="Release"/> must
    /// give back when the connection ends; false: close it without reading.
    /// </summary>
    public bool TryAdmit(EndPoint? remote)
    {
        if (_perSource is not null && SourceAddress.Of(remote) is { } source)
        {
            using var lease = _perSource.AttemptAcquire(source);
            if (!lease.IsAcquired)
            {
                var total = _counters.OverSourceRateOnce();
                if (_overRateLog.TryPass())
                {
                    LogOverSourceRate(_logger, source, total);
                }

                return false;
            }
        }

        if (Interlocked.Increment(ref _open) > _maxConnections)
        {
            Interlocked.Decrement(ref _open);
            var total = _counters.OverMaxConnectionsOnce();
            if (_overLimitLog.TryPass())
            {
                LogOverMaxConnections(_logger, _maxConnections, total);
            }

            return false;
        }

        return true;
    }

    /// <summary>An admitted connection has ended: its place is free.</summary>
    public void Release() => Interlocked.Decrement(ref _open);

    public void Dispose() => _perSource?.Dispose();

    [LoggerMessage(1100, LogLevel.Warning, "Connection refused: {Limit} connections are open (Broker:Limits:MaxConnections); {Total} refused so far")]
    static partial void LogOverMaxConnections(ILogger logger, int limit, long total);

    [LoggerMessage(1110, LogLevel.Warning, "Connection from {Source} refused: it opens connections faster than Broker:Limits:ConnectRatePerSource allows; {Total} refused so far (all sources)")]
    static partial void LogOverSourceRate(ILogger logger, IPAddress source, long total);
}
