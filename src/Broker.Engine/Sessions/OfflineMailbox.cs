using Broker.Engine.Diagnostics;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Protocol;

namespace Broker.Engine.Sessions;

/// <summary>
/// Direct (P2P) messages for a client id that has no session yet (contract §5): kept for
/// <c>Broker:OfflineP2PTtl</c>, moved into the session when that client id connects with a
/// persistent session, dropped and counted when the time is up. QoS 0 is never kept, as in sessions.
/// At most <c>Broker:MaxQueuedMessages</c> per client id, oldest dropped first.
/// </summary>
internal sealed class OfflineMailbox(EngineContext engine)
{
    readonly object _gate = new();
    readonly Dictionary<string, Queue<(BrokerMessage Message, long ExpiresAtUnixMs)>> _byClient = new(StringComparer.Ordinal);
    int _count;

    public int Count => Volatile.Read(ref _count);

    /// <summary>
    /// Keeps a direct message for <paramref name="clientId"/> while that client id has no session (false
    /// when it has one now: deliver to it); a persistent publisher's QoS 2 packet id (<paramref name="inbound"/>)
    /// is written with it. <paramref name="durable"/> completes when the store has it.
    /// </summary>
    public bool TryAdd(string clientId, BrokerMessage message, InboundPacket? inbound, out ValueTask durable)
    {
        durable = ValueTask.CompletedTask;
        var expires = engine.NowUnixMs + (long)engine.Options.OfflineP2PTtl.TotalMilliseconds;
        BrokerMessage? dropped = null;
        var kept = false;
        lock (_gate)
        {
            // Under the lock DeliverTo takes after the session is registered: either the session is seen
            // here, or the message is in the mailbox before DeliverTo looks.
            if (engine.Sessions.Get(clientId) is not null)
            {
                return false;
            }

            if (message.Qos == MqttQualityOfServiceLevel.AtMostOnce)
            {
                // Not kept, as QoS 0 is not for an offline session.
            }
            else if (_byClient.TryGetValue(clientId, out var queue) || _byClient.Count < engine.Options.Limits.MaxMailboxClientIds)
            {
                if (queue is null)
                {
                    _byClient[clientId] = queue = new Queue<(BrokerMessage, long)>();
                }

                if (queue.Count >= engine.Options.MaxQueuedMessages)
                {
                    dropped = queue.Dequeue().Message;
                    _count--;
                }

                queue.Enqueue((message, expires));
                _count++;
                kept = true;

                // Handed to the store under the lock too, so it precedes DeliverTo's removal of it.
                durable = engine.Store.AddToMailboxAsync(clientId, message, expires, inbound);
            }
            // else: Broker:Limits:MaxMailboxClientIds reached (NotKept, below)
        }

        if (!kept)
        {
            NotKept(clientId, message);
        }
        else if (dropped is not null)
        {
            Drop(clientId, dropped, "mailbox full");
        }

        if (!kept && inbound is { } packet)
        {
            // Nothing of the message is kept, but the publisher's QoS 2 exchange goes on until its PUBREL.
            engine.Store.SetInboundQos2(packet.ClientId, packet.PacketId, pending: true);
        }

        return true;
    }

    /// <summary>Moves what waits for this client id into its (persistent) session, in arrival order.</summary>
    public void DeliverTo(Session session)
    {
        Queue<(BrokerMessage Message, long ExpiresAtUnixMs)>? queue;
        lock (_gate)
        {
            if (!_byClient.Remove(session.ClientId, out queue))
            {
                return;
            }

            _count -= queue.Count;
        }

        var now = engine.NowUnixMs;
        foreach (var (message, expires) in queue)
        {
            if (now >= expires || message.IsExpired(now))
            {
                Drop(session.ClientId, message, "expired in the mailbox");
                continue;
            }

            // The read check of every delivery applies here too (rules may have changed since it arrived).
            if (!engine.Router.CanRead(session, message))
            {
                Drop(session.ClientId, message, "not readable by this client");
                continue;
            }

            // The session's row first, then the mailbox row goes: a crash in between leaves a copy, never none.
            var delivery = new Delivery(message, message.Qos, false, null, Stored: true);
            session.RowAppending();
            engine.Observe(engine.Store.AppendAsync(message, [new StoredDelivery(session.ClientId, message.Id, message.Qos, false, null)]), message.Topic);
            engine.Store.RemoveFromMailbox(session.ClientId, message.Id);
            session.Enqueue(delivery);
        }
    }

    public void Restore(string clientId, BrokerMessage message, long expiresAtUnixMs)
    {
        lock (_gate)
        {
            if (!_byClient.TryGetValue(clientId, out var queue))
            {
                _byClient[clientId] = queue = new Queue<(BrokerMessage, long)>();
            }

            queue.Enqueue((message, expiresAtUnixMs));
            _count++;
        }
    }

    /// <summary>Heartbeat: messages whose time to live has passed are dropped and counted.</summary>
    public void Sweep(long nowUnixMs)
    {
        List<(string, BrokerMessage)>? expired = null;
        lock (_gate)
        {
            if (_count == 0)
            {
                return;
            }

            foreach (var (clientId, queue) in _byClient)
            {
                while (queue.TryPeek(out var head) && (nowUnixMs >= head.ExpiresAtUnixMs || head.Message.IsExpired(nowUnixMs)))
                {
                    queue.Dequeue();
                    _count--;
                    (expired ??= []).Add((clientId, head.Message));
                }
            }

            if (expired is not null)
            {
                foreach (var (clientId, _) in expired)
                {
                    if (_byClient.TryGetValue(clientId, out var q) && q.Count == 0)
                    {
                        _byClient.Remove(clientId);
                    }
                }
            }
        }

        if (expired is not null)
        {
            foreach (var (clientId, message) in expired)
            {
                Drop(clientId, message, "offline P2P time to live passed");
            }
        }
    }

    long _lastLogMs;

    /// <summary>
    /// A direct message for a client id without a session that no mailbox took: QoS 0 (never kept), or
    /// <c>Broker:Limits:MaxMailboxClientIds</c> reached. Counted and logged; the cluster reports its own here.
    /// </summary>
    public void NotKept(string clientId, BrokerMessage message)
    {
        if (message.Qos == MqttQualityOfServiceLevel.AtMostOnce)
        {
            engine.Counters.DirectRouteUndeliverable();
            EngineLog.DirectUndeliverable(engine.Logger, clientId, message.Topic);
        }
        else
        {
            // A sender cannot fill memory (or Redis) by inventing client ids.
            Drop(clientId, message, "too many client ids with a mailbox", stored: false);
        }
    }

    void Drop(string clientId, BrokerMessage message, string reason, bool stored = true)
    {
        engine.Counters.MessageDropped();
        if (stored)
        {
            engine.Store.RemoveFromMailbox(clientId, message.Id);
        }

        // One line per second at most, as for session queues.
        var now = Environment.TickCount64;
        if (now - Interlocked.Read(ref _lastLogMs) >= 1000)
        {
            Interlocked.Exchange(ref _lastLogMs, now);
            EngineLog.MessageDropped(engine.Logger, clientId, message.Topic, reason, engine.Counters.Dropped);
        }
    }
}
