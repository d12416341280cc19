using System.Diagnostics.Metrics;
using MQTTnet.Protocol;

namespace Broker.Engine.Diagnostics;

/// <summary>
/// Counters of what the broker did, readable directly (tests, $SYS) and published on one
/// <see cref="Meter"/> named <c>IMS.Broker</c> for /metrics. Increments are single interlocked adds.
/// </summary>
public sealed class BrokerCounters : IDisposable
{
    /// <summary>Prometheus (prometheus-net) names samples {meter}_{instrument}: ims_broker_connections, ims_broker_messages_received, ...</summary>
    public const string MeterName = "IMS.Broker";

    readonly Meter _meter;
    long _connections;
    long _connectionsRefused;
    readonly long[] _received = new long[3];
    readonly long[] _sent = new long[3];
    long _dropped;
    readonly long[] _publishRefused = new long[4]; // by PolicyDecision: -, not authorized, topic invalid, quota exceeded
    readonly long[] _subscribeRefused = new long[4]; // by PolicyDecision, as for publishes
    long _publishThrottled;
    long _rateDisconnects;
    long _readDenied;
    long _malformed;
    long _oversized;
    long _directUndeliverable;
    long _overMaxConnections;
    long _overSourceRate;
    long _loginFailures;
    long _loginsDelayed;
    long _loginsBusy;
    long _retainedRefused;

    public BrokerCounters()
    {
        _meter = new Meter(MeterName);
        _meter.CreateObservableUpDownCounter("connections", () => Connections, "{connection}", "Connected clients");
        _meter.CreateObservableCounter("connections.refused", () => ConnectionsRefused, "{connection}", "CONNECTs refused");
        _meter.CreateObservableCounter("messages.received", () => ByQos(_received), "{message}", "PUBLISH packets received, by QoS");
        _meter.CreateObservableCounter("messages.sent", () => ByQos(_sent), "{message}", "PUBLISH packets sent, by QoS");
        _meter.CreateObservableCounter("messages.dropped", () => Dropped, "{message}", "Messages dropped (queue full, expired)");
        _meter.CreateObservableCounter("publish.refused", () => ByReason(_publishRefused), "{message}", "Publishes refused by the rules, by reason");
        _meter.CreateObservableCounter("subscribe.refused", () => ByReason(_subscribeRefused), "{filter}", "Filters refused by the rules, by reason");
        _meter.CreateObservableCounter("delivery.denied", () => ReadDenied, "{message}", "Deliveries stopped by the read check");
        _meter.CreateObservableCounter("packets.malformed", () => Malformed, "{packet}", "Connections closed for a malformed packet");
        _meter.CreateObservableCounter("packets.oversized", () => Oversized, "{packet}", "Connections closed for a packet above the size limit");
        _meter.CreateObservableCounter("direct.undeliverable", () => DirectUndeliverable, "{message}", "Direct (P2P) messages for a client id with no session");
        _meter.CreateObservableCounter("connections.limited", () => (Measurement<long>[])
        [
            new(OverMaxConnections, new KeyValuePair<string, object?>("reason", "max_connections")),
            new(OverSourceRate, new KeyValuePair<string, object?>("reason", "source_rate")),
        ], "{connection}", "Connections closed on accept, before any MQTT is read, by reason");
        _meter.CreateObservableCounter("login.failures", () => LoginFailures, "{attempt}", "Logins (MQTT CONNECT, admin API) refused for a bad user name or password");
        _meter.CreateObservableCounter("login.delayed", () => LoginsDelayed, "{attempt}", "Logins held back by a failed-login penalty");
        _meter.CreateObservableCounter("login.busy", () => LoginsBusy, "{attempt}", "Logins (MQTT CONNECT, admin API) answered server busy: too many password checks at once");
        _meter.CreateObservableCounter("publish.throttled", () => PublishThrottled, "{wait}", "Times a connection's reading stopped until its user's publish rate limit refilled");
        _meter.CreateObservableCounter("publish.rate_disconnects", () => RateDisconnects, "{connection}", "Connections closed after RateGraceSeconds over the publish rate limit (v5 0x96)");
        _meter.CreateObservableCounter("retained.refused", () => RetainedRefused, "{message}", "Retained publishes refused (not retained, not delivered) at Broker:Limits:MaxRetainedMessages or MaxRetainedBytes");
    }

    /// <summary>The meter, for the host to add gauges that belong to other parts (sessions, store).</summary>
    public Meter Meter => _meter;

    public long Connections => Interlocked.Read(ref _connections);

    public long ConnectionsRefused => Interlocked.Read(ref _connectionsRefused);

    public long Received => Sum(_received);

    public long Sent => Sum(_sent);

    public long Dropped => Interlocked.Read(ref _dropped);

    public long PublishRefused => Sum(_publishRefused);

    public long SubscribeRefused => Sum(_subscribeRefused);

    public long ReadDenied => Interlocked.Read(ref _readDenied);

    public long Malformed => Interlocked.Read(ref _malformed);

    public long Oversized => Interlocked.Read(ref _oversized);

    public long DirectUndeliverable => Interlocked.Read(ref _directUndeliverable);

    /// <summary>Connections closed on accept because Broker:Limits:MaxConnections were open.</summary>
    public long OverMaxConnections => Interlocked.Read(ref _overMaxConnections);

    /// <summary>Connections closed on accept because their source address was over Broker:Limits:ConnectRatePerSource.</summary>
    public long OverSourceRate => Interlocked.Read(ref _overSourceRate);

    public long LoginFailures => Interlocked.Read(ref _loginFailures);

    public long LoginsDelayed => Interlocked.Read(ref _loginsDelayed);

    public long LoginsBusy => Interlocked.Read(ref _loginsBusy);

    /// <summary>Retained publishes refused because the retained messages were at a broker-wide bound.</summary>
    public long RetainedRefused => Interlocked.Read(ref _retainedRefused);

    /// <summary>Waits for a publish rate limit (a connection stopped being read until its bucket refilled).</summary>
    public long PublishThrottled => Interlocked.Read(ref _publishThrottled);

    /// <summary>Connections closed for staying over the publish rate limit for RateGraceSeconds.</summary>
    public long RateDisconnects => Interlocked.Read(ref _rateDisconnects);

    internal void PublishWasThrottled() => Interlocked.Increment(ref _publishThrottled);

    internal void RateDisconnected() => Interlocked.Increment(ref _rateDisconnects);

    internal void ConnectionOpened() => Interlocked.Increment(ref _connections);

    internal void ConnectionClosed() => Interlocked.Decrement(ref _connections);

    internal void ConnectionRefused() => Interlocked.Increment(ref _connectionsRefused);

    internal void MessageReceived(MqttQualityOfServiceLevel qos) => Interlocked.Increment(ref _received[(int)qos % 3]);

    internal void MessageSent(MqttQualityOfServiceLevel qos) => Interlocked.Increment(ref _sent[(int)qos % 3]);

    internal void MessageDropped() => Interlocked.Increment(ref _dropped);

    internal void MessageDropped(int count) => Interlocked.Add(ref _dropped, count);

    internal void PublishWasRefused(Policy.PolicyDecision decision) => Interlocked.Increment(ref _publishRefused[(int)decision % 4]);

    internal void SubscribeWasRefused(Policy.PolicyDecision decision) => Interlocked.Increment(ref _subscribeRefused[(int)decision % 4]);

    internal void ReadWasDenied() => Interlocked.Increment(ref _readDenied);

    internal void MalformedPacket() => Interlocked.Increment(ref _malformed);

    internal void OversizedPacket() => Interlocked.Increment(ref _oversized);

    internal void DirectRouteUndeliverable() => Interlocked.Increment(ref _directUndeliverable);

    internal long OverMaxConnectionsOnce() => Interlocked.Increment(ref _overMaxConnections);

    internal long OverSourceRateOnce() => Interlocked.Increment(ref _overSourceRate);

    internal long LoginFailed() => Interlocked.Increment(ref _loginFailures);

    internal void LoginDelayed() => Interlocked.Increment(ref _loginsDelayed);

    internal long LoginBusy() => Interlocked.Increment(ref _loginsBusy);

    internal long RetainWasRefused() => Interlocked.Increment(ref _retainedRefused);

    public void Dispose() => _meter.Dispose();

    static long Sum(long[] values)
    {
        long total = 0;
        for (var i = 0; i < values.Length; i++)
        {
            total += Interlocked.Read(ref values[i]);
        }

        return total;
    }

    static Measurement<long>[] ByReason(long[] byDecision) =>
    [
        new(Interlocked.Read(ref byDecision[(int)Policy.PolicyDecision.NotAuthorized]), new KeyValuePair<string, object?>("reason", "not_authorized")),
        new(Interlocked.Read(ref byDecision[(int)Policy.PolicyDecision.TopicInvalid]), new KeyValuePair<string, object?>("reason", "topic_invalid")),
        new(Interlocked.Read(ref byDecision[(int)Policy.PolicyDecision.QuotaExceeded]), new KeyValuePair<string, object?>("reason", "quota_exceeded")),
    ];

    static Measurement<long>[] ByQos(long[] values) =>
    [
        new(Interlocked.Read(ref values[0]), new KeyValuePair<string, object?>("qos", "0")),
        new(Interlocked.Read(ref values[1]), new KeyValuePair<string, object?>("qos", "1")),
        new(Interlocked.Read(ref values[2]), new KeyValuePair<string, object?>("qos", "2")),
    ];
}
