using System.Diagnostics.Metrics;

namespace Broker.Engine.Diagnostics;

/// <summary>
/// Counters of what the broker did, readable directly (tests, $SYS) and published on one
/// <see cref="Meter"/> named <c>IMS.Broker</c> for /metrics. Increments are single interlocked adds.
/// </summary>
public sealed class BrokerCounters : IDisposable
{
    public const string MeterName = "IMS.Broker";

    readonly Meter _meter;
    long _connections;
    long _connectionsRefused;
    long _received;
    long _sent;
    long _dropped;
    long _publishRefused;
    long _subscribeRefused;
    long _readDenied;
    long _malformed;
    long _oversized;
    long _directUndeliverable;

    public BrokerCounters()
    {
        _meter = new Meter(MeterName);
        _meter.CreateObservableUpDownCounter("ims.broker.connections", () => Connections, "{connection}", "Connected clients");
        _meter.CreateObservableCounter("ims.broker.connections.refused", () => ConnectionsRefused, "{connection}", "CONNECTs refused");
        _meter.CreateObservableCounter("ims.broker.messages.received", () => Received, "{message}", "PUBLISH packets received");
        _meter.CreateObservableCounter("ims.broker.messages.sent", () => Sent, "{message}", "PUBLISH packets sent");
        _meter.CreateObservableCounter("ims.broker.messages.dropped", () => Dropped, "{message}", "Messages dropped (queue full, expired)");
        _meter.CreateObservableCounter("ims.broker.publish.refused", () => PublishRefused, "{message}", "Publishes refused by the rules");
        _meter.CreateObservableCounter("ims.broker.subscribe.refused", () => SubscribeRefused, "{filter}", "Filters refused by the rules");
        _meter.CreateObservableCounter("ims.broker.delivery.denied", () => ReadDenied, "{message}", "Deliveries stopped by the read check");
        _meter.CreateObservableCounter("ims.broker.packets.malformed", () => Malformed, "{packet}", "Connections closed for a malformed packet");
        _meter.CreateObservableCounter("ims.broker.packets.oversized", () => Oversized, "{packet}", "Connections closed for a packet above the size limit");
        _meter.CreateObservableCounter("ims.broker.direct.undeliverable", () => DirectUndeliverable, "{message}", "Direct (P2P) messages for a client id with no session");
    }

    public long Connections => Interlocked.Read(ref _connections);

    public long ConnectionsRefused => Interlocked.Read(ref _connectionsRefused);

    public long Received => Interlocked.Read(ref _received);

    public long Sent => Interlocked.Read(ref _sent);

    public long Dropped => Interlocked.Read(ref _dropped);

    public long PublishRefused => Interlocked.Read(ref _publishRefused);

    public long SubscribeRefused => Interlocked.Read(ref _subscribeRefused);

    public long ReadDenied => Interlocked.Read(ref _readDenied);

    public long Malformed => Interlocked.Read(ref _malformed);

    public long Oversized => Interlocked.Read(ref _oversized);

    public long DirectUndeliverable => Interlocked.Read(ref _directUndeliverable);

    internal void ConnectionOpened() => Interlocked.Increment(ref _connections);

    internal void ConnectionClosed() => Interlocked.Decrement(ref _connections);

    internal void ConnectionRefused() => Interlocked.Increment(ref _connectionsRefused);

    internal void MessageReceived() => Interlocked.Increment(ref _received);

    internal void MessagesSent(int count) => Interlocked.Add(ref _sent, count);

    internal void MessageDropped() => Interlocked.Increment(ref _dropped);

    internal void PublishWasRefused() => Interlocked.Increment(ref _publishRefused);

    internal void SubscribeWasRefused() => Interlocked.Increment(ref _subscribeRefused);

    internal void ReadWasDenied() => Interlocked.Increment(ref _readDenied);

    internal void MalformedPacket() => Interlocked.Increment(ref _malformed);

    internal void OversizedPacket() => Interlocked.Increment(ref _oversized);

    internal void DirectRouteUndeliverable() => Interlocked.Increment(ref _directUndeliverable);

    public void Dispose() => _meter.Dispose();
}
