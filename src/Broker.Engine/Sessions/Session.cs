using Broker.Engine.Connections;
using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Sessions;

/// <summary>
/// The state MQTT keeps per client id [MQTT-4.1]: subscriptions, the outbound queue, messages in
/// flight and inbound QoS 2 packet ids. It outlives connections (persistent sessions) and has one
/// writer at a time: every member below runs under <c>_gate</c>, which is never held while awaiting.
/// The connection's writer pulls from the queue, so the queue is the only buffer per client: a slow
/// client fills its own queue and loses its own oldest messages, nobody else's.
/// </summary>
public sealed class Session
{
    readonly object _gate = new();
    readonly EngineContext _engine;
    readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);
    readonly Queue<Delivery> _queue = new();
    readonly LinkedList<Inflight> _inflight = new();
    readonly Dictionary<ushort, LinkedListNode<Inflight>> _inflightById = [];
    HashSet<ushort>? _inboundQos2; // created by the first inbound QoS 2 publish: most chat clients never send one
    MqttConnection? _connection;
    ushort _lastPacketId;
    int _sendQuota = 20;
    bool _resendInflight;
    Task? _heldIdsDurable; // outbound QoS 2 packet ids on their way to the disk: their PUBLISH waits (see TakeOutbound)
    long _lastDropLogMs;

    internal Session(EngineContext engine, string clientId, ClientPrincipal principal)
    {
        _engine = engine;
        ClientId = clientId;
        Principal = principal;
    }

    public string ClientId { get; }

    /// <summary>The identity of the connection that owns the session now.</summary>
    public ClientPrincipal Principal { get; private set; }

    /// <summary>0: the session ends with its connection; uint.MaxValue: never expires [MQTT-3.1.2-23].</summary>
    public uint ExpirySeconds { get; private set; }

    public bool IsPersistent => ExpirySeconds > 0;

    public bool IsConnected => Volatile.Read(ref _connection) is not null;

    public long DisconnectedAtUnixMs { get; private set; }

    /// <summary>
    /// A will waiting for its v5 Will Delay Interval; cancelled if the client comes back first [MQTT-3.1.3-9].
    /// Its expiry interval starts when it is published, so it is kept here as an interval.
    /// </summary>
    internal (BrokerMessage Message, ClientPrincipal Sender, long DueUnixMs, uint ExpirySeconds)? PendingWill { get; set; }

    internal bool IsDiscarded { get; private set; }

    public int QueuedCount
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    public int InflightCount
    {
        get
        {
            lock (_gate)
            {
                return _inflight.Count;
            }
        }
    }

    internal MqttConnection? Connection => Volatile.Read(ref _connection);

    internal void Attach(MqttConnection connection, ClientPrincipal principal, uint expirySeconds, int sendQuota)
    {
        lock (_gate)
        {
            _connection = connection;
            DisconnectedAtUnixMs = 0; // connected: after a crash, expiry counts from the restart, not an older disconnect
            Principal = principal;
            ExpirySeconds = expirySeconds;
            _sendQuota = sendQuota;
            _resendInflight = _inflight.Count > 0; // [MQTT-4.4.0-1]: resend unacknowledged PUBLISH and PUBREL
            PendingWill = null;
        }

        PersistRecord();
    }

    /// <summary>Detaches the connection if it is still the current one (a takeover may have replaced it).</summary>
    internal bool Detach(MqttConnection connection, long nowUnixMs)
    {
        lock (_gate)
        {
            if (!ReferenceEquals(_connection, connection))
            {
                return false;
            }

            _connection = null;
            DisconnectedAtUnixMs = nowUnixMs;
        }

        PersistRecord();
        return true;
    }

    internal void SetExpiry(uint expirySeconds)
    {
        lock (_gate)
        {
            ExpirySeconds = expirySeconds;
        }

        PersistRecord();
    }

    internal bool IsExpired(long nowUnixMs) =>
        !IsConnected && ExpirySeconds != uint.MaxValue && nowUnixMs - DisconnectedAtUnixMs >= ExpirySeconds * 1000L;

    /// <summary>Ends the session: subscriptions leave the index and queued messages are released.</summary>
    internal void Discard()
    {
        Subscription[] subscriptions;
        lock (_gate)
        {
            IsDiscarded = true;
            subscriptions = [.. _subscriptions.Values];
            _subscriptions.Clear();
            _queue.Clear();
            _inflight.Clear();
            _inflightById.Clear();
            _inboundQos2?.Clear();
        }

        foreach (var s in subscriptions)
        {
            _engine.Index.Remove(s);
        }

        _engine.Store.DeleteSession(ClientId);
    }

    // ---- subscriptions -------------------------------------------------------------------------

    /// <summary>Adds or replaces a subscription [MQTT-3.8.4-3]; returns whether it existed before.</summary>
    internal bool Subscribe(Subscription subscription)
    {
        Subscription? previous;
        lock (_gate)
        {
            _subscriptions.TryGetValue(subscription.Key, out previous);
            _subscriptions[subscription.Key] = subscription;
        }

        if (previous is not null)
        {
            _engine.Index.Remove(previous);
        }

        _engine.Index.Add(subscription);
        PersistRecord();
        return previous is not null;
    }

    internal bool Unsubscribe(string key)
    {
        Subscription? removed;
        lock (_gate)
        {
            _subscriptions.Remove(key, out removed);
        }

        if (removed is null)
        {
            return false;
        }

        _engine.Index.Remove(removed);
        PersistRecord();
        return true;
    }

    public IReadOnlyList<Subscription> GetSubscriptions()
    {
        lock (_gate)
        {
            return [.. _subscriptions.Values];
        }
    }

    // ---- outbound ------------------------------------------------------------------------------

    /// <summary>
    /// Queues a message for this client. QoS 0 is not kept for an offline client (as mosquitto's
    /// default). A full queue drops its oldest entry, which is counted, logged and never resent.
    /// </summary>
    internal bool Enqueue(in Delivery delivery)
    {
        MqttConnection? signal;
        Delivery dropped = default;
        var droppedOne = false;
        lock (_gate)
        {
            if (IsDiscarded || (_connection is null && delivery.Qos == MqttQualityOfServiceLevel.AtMostOnce))
            {
                return false;
            }

            if (_queue.Count >= _engine.Options.MaxQueuedMessages)
            {
                dropped = _queue.Dequeue();
                droppedOne = true;
            }

            _queue.Enqueue(delivery);
            signal = _connection;
        }

        if (droppedOne)
        {
            OnDropped(dropped, "queue full");
        }

        signal?.SignalWrite();
        return true;
    }

    /// <summary>
    /// Moves what may be sent now into <paramref name="batch"/>: first the in-flight messages owed
    /// after a reconnect (PUBLISH with DUP, or PUBREL), then queued messages while the send quota
    /// (the client's Receive Maximum [MQTT-4.9.0-2]) allows. Returns true when more is waiting.
    /// </summary>
    internal bool TakeOutbound(MqttConnection caller, List<MqttPacket> batch, int max, bool v5, long nowUnixMs)
    {
        List<Delivery>? expired = null;
        Task? heldIdsDurable = null;
        lock (_gate)
        {
            if (!ReferenceEquals(_connection, caller))
            {
                return false; // taken over: the new connection sends from here on
            }

            if (_heldIdsDurable is { } held)
            {
                if (!held.IsCompleted)
                {
                    return false; // its completion wakes the writer; nothing overtakes the held messages
                }

                _heldIdsDurable = null;
                if (!_resendInflight)
                {
                    SendHeld(batch, v5, nowUnixMs);
                }
            }

            if (_resendInflight)
            {
                _resendInflight = false;
                for (var node = _inflight.First; node is not null; node = node.Next)
                {
                    var entry = node.Value;
                    node.Value = entry with { Held = false };
                    batch.Add(entry.State == DeliveryState.AwaitingComp
                        ? new MqttPubRelPacket { PacketIdentifier = entry.PacketId }
                        : BuildPublish(entry.Delivery, entry.PacketId, dup: true, v5, nowUnixMs));
                }
            }

            while (batch.Count < max && _queue.TryPeek(out var next))
            {
                if (heldIdsDurable is not null && next.Qos != MqttQualityOfServiceLevel.ExactlyOnce)
                {
                    break; // keeps the order: what follows a held QoS 2 message waits with it
                }

                if (next.Message.IsExpired(nowUnixMs))
                {
                    _queue.Dequeue();
                    (expired ??= []).Add(next);
                    continue;
                }

                if (next.Qos == MqttQualityOfServiceLevel.AtMostOnce)
                {
                    _queue.Dequeue();
                    batch.Add(BuildPublish(next, 0, dup: false, v5, nowUnixMs));
                    continue;
                }

                if (_inflight.Count >= _sendQuota)
                {
                    break;
                }

                _queue.Dequeue();
                var id = NextPacketId();

                // Outbound QoS 2 of a persistent session: the packet id must be durable before the PUBLISH
                // leaves, or after a crash the message would go out again under a new id (a duplicate) and
                // the old id be reused while the client still holds it (a loss) [engine invariant 2].
                var hold = IsPersistent && next.Qos == MqttQualityOfServiceLevel.ExactlyOnce;
                var node = _inflight.AddLast(new Inflight(id, next, DeliveryState.AwaitingAck, hold));
                _inflightById[id] = node;
                if (IsPersistent)
                {
                    _engine.Store.UpdateDelivery(ClientId, next.Message.Id, id, DeliveryState.AwaitingAck);
                }

                if (hold)
                {
                    heldIdsDurable = Task.CompletedTask; // the barrier is taken once, after the loop
                }
                else
                {
                    batch.Add(BuildPublish(next, id, dup: false, v5, nowUnixMs));
                }
            }

            if (heldIdsDurable is not null)
            {
                // One commit covers every id handed out above: the store writes in order.
                _heldIdsDurable = heldIdsDurable = _engine.Store.FlushAsync().AsTask();
            }
        }

        heldIdsDurable?.ContinueWith(static (_, state) => ((Session)state!).Connection?.SignalWrite(), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        if (expired is not null)
        {
            foreach (var d in expired)
            {
                OnDropped(d, "expired");
            }
        }

        return batch.Count >= max;
    }

    /// <summary>The QoS 2 PUBLISHes whose packet ids are durable now (a failed commit was logged by the store; they go all the same).</summary>
    void SendHeld(List<MqttPacket> batch, bool v5, long nowUnixMs)
    {
        for (var node = _inflight.First; node is not null; node = node.Next)
        {
            if (node.Value.Held)
            {
                node.Value = node.Value with { Held = false };
                batch.Add(BuildPublish(node.Value.Delivery, node.Value.PacketId, dup: false, v5, nowUnixMs));
            }
        }
    }

    /// <summary>Completes when every change this session has handed to the store so far is durable (at once when it is not persistent).</summary>
    internal Task Committed() => IsPersistent ? _engine.Store.FlushAsync().AsTask() : Task.CompletedTask;

    /// <summary>PUBACK (QoS 1) or PUBCOMP (QoS 2): the message is done. False for an unknown id.</summary>
    internal bool Complete(ushort packetId, DeliveryState expected)
    {
        long messageId;
        MqttConnection? signal;
        lock (_gate)
        {
            if (!_inflightById.TryGetValue(packetId, out var node) || node.Value.State != expected)
            {
                return false;
            }

            _inflightById.Remove(packetId);
            _inflight.Remove(node);
            messageId = node.Value.Delivery.Message.Id;
            signal = _queue.Count > 0 ? _connection : null; // a freed in-flight slot matters only if something waits
        }

        if (IsPersistent)
        {
            _engine.Store.RemoveDelivery(ClientId, messageId);
        }

        signal?.SignalWrite();
        return true;
    }

    /// <summary>PUBREC: remember "released pending" so a reconnect resumes with PUBREL [MQTT-4.3.3-4].</summary>
    internal bool Released(ushort packetId)
    {
        lock (_gate)
        {
            if (!_inflightById.TryGetValue(packetId, out var node) || node.Value.Delivery.Qos != MqttQualityOfServiceLevel.ExactlyOnce)
            {
                return false;
            }

            if (node.Value.State == DeliveryState.AwaitingAck)
            {
                node.Value = node.Value with { State = DeliveryState.AwaitingComp };
                if (IsPersistent)
                {
                    _engine.Store.UpdateDelivery(ClientId, node.Value.Delivery.Message.Id, packetId, DeliveryState.AwaitingComp);
                }
            }

            return true;
        }
    }

    /// <summary>A message the client cannot take (larger than its Maximum Packet Size [MQTT-3.1.2-25]) is discarded.</summary>
    internal void DiscardInflight(ushort packetId)
    {
        lock (_gate)
        {
            if (_inflightById.Remove(packetId, out var node))
            {
                _inflight.Remove(node);
                if (IsPersistent)
                {
                    _engine.Store.RemoveDelivery(ClientId, node.Value.Delivery.Message.Id);
                }
            }
        }
    }

    // ---- inbound QoS 2 -------------------------------------------------------------------------

    /// <summary>False when the packet id is already between PUBREC and PUBREL: a re-send, not to be routed again [MQTT-4.3.3-9].</summary>
    internal bool BeginInboundQos2(ushort packetId) => ChangeInboundQos2(packetId, pending: true);

    /// <summary>PUBREL: false for an id that was not pending.</summary>
    internal bool EndInboundQos2(ushort packetId) => ChangeInboundQos2(packetId, pending: false);

    bool ChangeInboundQos2(ushort packetId, bool pending)
    {
        bool changed;
        lock (_gate)
        {
            changed = pending ? (_inboundQos2 ??= []).Add(packetId) : _inboundQos2?.Remove(packetId) == true;
        }

        if (changed && IsPersistent)
        {
            _engine.Store.SetInboundQos2(ClientId, packetId, pending);
        }

        return changed;
    }

    internal int InboundQos2Count
    {
        get
        {
            lock (_gate)
            {
                return _inboundQos2?.Count ?? 0;
            }
        }
    }

    // ---- restore -------------------------------------------------------------------------------

    internal void Restore(uint expirySeconds, long disconnectedAtUnixMs)
    {
        ExpirySeconds = expirySeconds;
        DisconnectedAtUnixMs = disconnectedAtUnixMs;
    }

    internal void RestoreDelivery(in Delivery delivery, ushort packetId, DeliveryState state)
    {
        lock (_gate)
        {
            if (state == DeliveryState.Queued || packetId == 0)
            {
                _queue.Enqueue(delivery);
                return;
            }

            _inflightById[packetId] = _inflight.AddLast(new Inflight(packetId, delivery, state));
            _lastPacketId = Math.Max(_lastPacketId, packetId);
        }
    }

    internal void RestoreInboundQos2(ushort packetId)
    {
        lock (_gate)
        {
            (_inboundQos2 ??= []).Add(packetId);
        }
    }

    internal void RestoreSubscription(Subscription subscription)
    {
        lock (_gate)
        {
            _subscriptions[subscription.Key] = subscription;
        }

        _engine.Index.Add(subscription);
    }

    internal void PersistRecord()
    {
        if (!IsPersistent || IsDiscarded)
        {
            return;
        }

        SessionRecord record;
        lock (_gate)
        {
            var subs = new List<SubscriptionRecord>(_subscriptions.Count);
            foreach (var s in _subscriptions.Values)
            {
                subs.Add(new SubscriptionRecord(s.Key, s.Qos, s.NoLocal, s.RetainAsPublished, s.RetainHandling, s.Identifier));
            }

            record = new SessionRecord(ClientId, Principal.UserId, Principal.Role, ExpirySeconds, DisconnectedAtUnixMs, subs);
        }

        _engine.Store.UpsertSession(record);
    }

    ushort NextPacketId()
    {
        // Skip 0 and ids still in flight [MQTT-2.2.1-3].
        do
        {
            _lastPacketId = (ushort)(_lastPacketId == ushort.MaxValue ? 1 : _lastPacketId + 1);
        }
        while (_inflightById.ContainsKey(_lastPacketId));

        return _lastPacketId;
    }

    static MqttPublishPacket BuildPublish(in Delivery d, ushort packetId, bool dup, bool v5, long nowUnixMs)
    {
        var m = d.Message;
        var packet = new MqttPublishPacket
        {
            Topic = m.Topic,
            Payload = new System.Buffers.ReadOnlySequence<byte>(m.Payload),
            QualityOfServiceLevel = d.Qos,
            Retain = d.Retain,
            Dup = dup,
            PacketIdentifier = packetId,
        };
        if (v5)
        {
            // Properties pass through unchanged [MQTT-3.3.2-15..20]; expiry counts down [MQTT-3.3.2-6].
            packet.ContentType = m.ContentType;
            packet.ResponseTopic = m.ResponseTopic;
            packet.CorrelationData = m.CorrelationData;
            packet.PayloadFormatIndicator = m.PayloadFormat;
            packet.UserProperties = m.UserProperties;
            packet.SubscriptionIdentifiers = d.SubscriptionIds;
            packet.MessageExpiryInterval = m.RemainingExpirySeconds(nowUnixMs);
        }

        return packet;
    }

    void OnDropped(in Delivery delivery, string reason)
    {
        _engine.Counters.MessageDropped();
        if (IsPersistent)
        {
            _engine.Store.RemoveDelivery(ClientId, delivery.Message.Id);
        }

        // One line per second per session at most: a flood must not become a log flood.
        var now = Environment.TickCount64;
        if (now - Interlocked.Read(ref _lastDropLogMs) >= 1000)
        {
            Interlocked.Exchange(ref _lastDropLogMs, now);
            EngineLog.MessageDropped(_engine.Logger, ClientId, delivery.Message.Topic, reason, _engine.Counters.Dropped);
        }
    }

    /// <summary>A message in flight; <paramref name="Held"/>: its packet id is not durable yet, so its PUBLISH has not been sent.</summary>
    readonly record struct Inflight(ushort PacketId, Delivery Delivery, DeliveryState State, bool Held = false);
}
