using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;

namespace Broker.Engine.Store;

/// <summary>
/// Rebuilds sessions, subscriptions, queues, in-flight and inbound QoS 2 state and retained
/// messages from the store, before the first connection is accepted, so a restored session is
/// indistinguishable from one that never went away.
/// </summary>
internal static class StoreRestore
{
    public static async Task<(int Sessions, int Messages, int Retained)> RestoreAsync(EngineContext engine, CancellationToken cancellationToken)
    {
        var snapshot = await engine.Store.LoadAsync(cancellationToken);
        engine.Ids.Restore(snapshot.MaxMessageId); // orphans too: a new message must never take an id still on disk
        foreach (var retained in snapshot.Retained)
        {
            engine.Retained.Set(retained);
            engine.Ids.Restore(retained.Id);
        }

        var now = engine.NowUnixMs;
        foreach (var record in snapshot.Sessions)
        {
            engine.Sessions.AddRestored(Build(engine, record, now));
        }

        var messages = 0;
        foreach (var row in snapshot.Deliveries)
        {
            if (engine.Sessions.Get(row.ClientId) is not { } session || !snapshot.Messages.TryGetValue(row.MessageId, out var message))
            {
                continue;
            }

            engine.Ids.Restore(message.Id);
            var ids = row.SubscriptionIds is null ? null : new List<uint>(row.SubscriptionIds);
            session.RestoreDelivery(new Delivery(message, row.Qos, row.Retain, ids, Stored: true), row.PacketId, row.State);
            messages++;
        }

        foreach (var (clientId, (count, bytes)) in snapshot.QueuedTotals)
        {
            engine.Sessions.Get(clientId)?.RestoreQueued(count, bytes);
            messages += count;
        }

        foreach (var (clientId, message, expires) in snapshot.Mailbox)
        {
            engine.Ids.Restore(message.Id);
            engine.Mailbox.Restore(clientId, message, expires);
        }

        foreach (var (clientId, packetId) in snapshot.InboundQos2)
        {
            engine.Sessions.Get(clientId)?.RestoreInboundQos2(packetId);
        }

        return (snapshot.Sessions.Count, messages, snapshot.Retained.Count);
    }

    /// <summary>A session read back by the node that claimed it in a cluster: the same rebuild, for one session.</summary>
    public static void Adopt(EngineContext engine, SessionRecord record, Cluster.ClaimedSession claimed)
    {
        var session = Build(engine, record, engine.NowUnixMs);
        foreach (var (row, message) in claimed.Inflight)
        {
            engine.Ids.Restore(message.Id);
            session.RestoreDelivery(new Delivery(message, row.Qos, row.Retain, row.SubscriptionIds is null ? null : [.. row.SubscriptionIds], Stored: true), row.PacketId, row.State);
        }

        session.RestoreQueued(claimed.QueuedCount, claimed.QueuedBytes);
        foreach (var packetId in claimed.InboundQos2)
        {
            session.RestoreInboundQos2(packetId);
        }

        engine.Sessions.AddRestored(session);
    }

    static Session Build(EngineContext engine, SessionRecord record, long now)
    {
        var session = new Session(engine, record.ClientId, new ClientPrincipal(record.ClientId, record.UserId, record.Role));
        session.Restore(record.ExpirySeconds, record.DisconnectedAtUnixMs == 0 ? now : record.DisconnectedAtUnixMs);
        foreach (var s in record.Subscriptions)
        {
            var shared = MqttTopic.TryParseShared(s.Filter, out var shareName, out var inner);
            session.RestoreSubscription(new Subscription
            {
                Session = session,
                Key = s.Filter,
                Filter = shared ? inner : s.Filter,
                ShareName = shared ? shareName : null,
                Qos = s.Qos,
                NoLocal = s.NoLocal,
                RetainAsPublished = s.RetainAsPublished,
                RetainHandling = s.RetainHandling,
                Identifier = s.SubscriptionId,
            });
        }

        return session;
    }
}
