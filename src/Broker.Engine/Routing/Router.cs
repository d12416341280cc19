using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using MQTTnet.Protocol;

namespace Broker.Engine.Routing;

/// <summary>
/// Takes a published message to its recipients: a direct route (point to point) or the
/// subscription index, then per recipient the read check, the granted QoS and the queue.
/// Rows for persistent recipients are handed to the store before any queue sees the message, and
/// the returned task completes when the store has them: the publisher's ack waits on it.
/// </summary>
internal sealed class Router(EngineContext engine)
{
    [ThreadStatic]
    static Scratch? t_scratch;

    readonly Admission.LogGate _retainRefusedLog = new(TimeSpan.FromSeconds(1));

    /// <summary>Routes a publish. The task completes when the message is durable for every persistent recipient.</summary>
    public ValueTask RouteAsync(BrokerMessage message) => Route(message, hold: false, null, out _, out _, 0);

    /// <summary>
    /// As <see cref="RouteAsync(BrokerMessage)"/>; when <paramref name="retain"/> says refused, the retained
    /// message was over a bound and nothing was routed (see <see cref="ApplyRetain"/>).
    /// </summary>
    /// <param name="retainQuota">When above 0, the retained messages the publisher may own (<see cref="RetainedMessages.TrySet"/>).</param>
    public ValueTask RouteAsync(BrokerMessage message, out RetainResult retain, int retainQuota = 0) => Route(message, hold: false, null, out _, out retain, retainQuota);

    /// <summary>
    /// Routes a QoS 2 publish for exactly once at every crash point [engine invariant 2]: no recipient's
    /// queue sees it before its rows are durable, and a persistent publisher's packet id
    /// (<paramref name="inbound"/>) is written in the same commit as the message. Apart, a crash between
    /// the two would either lose it (the id alone: the re-send is answered and never routed) or route it
    /// twice (the message alone). When the task is not complete, <paramref name="held"/> holds the
    /// recipients: the caller releases them once the task succeeds, and never when it fails (not stored
    /// means neither acked nor delivered).
    /// </summary>
    public ValueTask RouteHeld(BrokerMessage message, InboundPacket? inbound, out HeldRoute? held, out RetainResult retain, int retainQuota = 0) =>
        Route(message, hold: true, inbound, out held, out retain, retainQuota);

    ValueTask Route(BrokerMessage message, bool hold, InboundPacket? inbound, out HeldRoute? held, out RetainResult retain, int retainQuota)
    {
        held = null;
        retain = RetainResult.None;
        var scratch = t_scratch ??= new Scratch();
        scratch.Clear();
        try
        {
            var target = engine.Policy.ResolveDirectRoute(message.Topic);
            if (target is not null)
            {
                // A direct message is for one device, now or when it is back: never retained for others.
                // The mailbox takes it only while that client id has no session, checked under the
                // mailbox's lock that its connect takes too: a P2P racing with the connect is never left
                // in the mailbox while the client is online.
                Session? session;
                ValueTask mailed;
                while ((session = engine.Sessions.Get(target)) is null)
                {
                    // Not on this node: the node that hosts it, or the cluster's mailbox; alone, the local mailbox.
                    if (engine.Cluster.TryRouteDirect(target, message, inbound, out mailed) || engine.Mailbox.TryAdd(target, message, inbound, out mailed))
                    {
                        return mailed;
                    }
                }

                if (CanRead(session, message))
                {
                    scratch.Recipients.Add(new Recipient(session, message.Qos, false, null));
                }

                return Deliver(message, scratch.Recipients, hold, inbound, ValueTask.CompletedTask, out held);
            }

            var retained = ValueTask.CompletedTask;
            if (message.Retain)
            {
                retain = ApplyRetain(message, retainQuota, out retained);
                if (retain.IsRefused())
                {
                    return ValueTask.CompletedTask; // refused as a whole: not retained, not delivered
                }
            }

            engine.Index.Match(message.Topic, scratch.Matches, scratch.SharedPicks);
            CollectSubscribers(message, scratch);

            // Readers on other nodes: their rows are written (and awaited with ours) before anyone gets it.
            return Deliver(message, scratch.Recipients, hold, inbound, Both(retained, engine.Cluster.RouteAsync(message, null)), out held);
        }
        finally
        {
            scratch.Clear();
        }
    }

    /// <summary>Completes when both have; no state machine when either is done already.</summary>
    static ValueTask Both(ValueTask first, ValueTask second)
    {
        if (first.IsCompletedSuccessfully)
        {
            first.GetAwaiter().GetResult();
            return second;
        }

        if (second.IsCompletedSuccessfully)
        {
            second.GetAwaiter().GetResult();
            return first;
        }

        return BothAsync(first, second);
    }

    static async ValueTask BothAsync(ValueTask first, ValueTask second)
    {
        await first;
        await second;
    }

    /// <summary>Retained messages for a new subscription [MQTT-3.3.1-6], with the retain flag set [MQTT-3.3.1-8].</summary>
    public void DeliverRetained(Session session, Subscription subscription)
    {
        var found = new List<BrokerMessage>();
        engine.Retained.CollectMatching(subscription.Filter, found);
        var now = engine.NowUnixMs;
        foreach (var retained in found)
        {
            if (retained.IsExpired(now) || !CanRead(session, retained))
            {
                continue;
            }

            // A fresh id: the retained message and this queued copy live and die separately in the store.
            var message = retained.With(id: engine.Ids.Next());
            var qos = Min(message.Qos, subscription.Qos);
            var delivery = new Delivery(message, qos, Retain: true, Ids(subscription), Stored: session.IsPersistent && qos != MqttQualityOfServiceLevel.AtMostOnce);
            if (delivery.Stored)
            {
                // Nobody waits on this copy's durability; the store still sees it before the queue does.
                session.RowAppending();
                engine.Observe(engine.Store.AppendAsync(message, [new StoredDelivery(session.ClientId, message.Id, delivery.Qos, true, delivery.SubscriptionIds)]), message.Topic);
            }

            session.Enqueue(delivery);
        }
    }

    /// <summary>A will goes through the same rules as any publish by its client.</summary>
    public async Task PublishWillAsync(BrokerMessage will, ClientPrincipal sender)
    {
        try
        {
            await RouteAsync(will.With(id: engine.Ids.Next()));
        }
        catch (Exception ex)
        {
            EngineLog.StoreFailed(engine.Logger, will.Topic, ex);
        }
    }

    /// <summary>
    /// Sets, replaces or (empty payload) deletes the retained message of a topic [MQTT-3.3.1-5, -10, -11],
    /// within Broker:Limits:MaxRetainedMessages / MaxRetainedBytes. Over a bound the publish is refused as a
    /// whole, counted and logged (one line a second at most): the caller routes nothing, and the publisher
    /// hears 0x97 (v5), as for any refused publish (docs/reliability.md, "Retained messages").
    /// </summary>
    RetainResult ApplyRetain(BrokerMessage message, int ownerQuota, out ValueTask stored)
    {
        stored = ValueTask.CompletedTask;
        if (message.Payload.IsEmpty)
        {
            engine.Retained.Remove(message.Topic);
            stored = engine.Store.DeleteRetainedAsync(message.Topic);
            engine.Cluster.RetainedChanged(message);
            return RetainResult.None;
        }

        // $SYS values are the broker's own state, a fixed set published afresh after a start: never
        // stored, never stale, never refused.
        var sys = message.Topic.StartsWith("$SYS/", StringComparison.Ordinal);
        var result = engine.Retained.TrySet(message, withinLimits: !sys, ownerQuota: sys ? 0 : ownerQuota);
        if (result.IsRefused())
        {
            var total = engine.Counters.RetainWasRefused();
            if (result == RetainResult.RefusedOwnerQuota)
            {
                if (_retainRefusedLog.TryPass())
                {
                    EngineLog.RetainedQuotaRefused(engine.Logger, message.SenderClientId, message.SenderUserId, message.Topic, ownerQuota, total);
                }
            }
            else if (_retainRefusedLog.TryPass())
            {
                var messages = result == RetainResult.RefusedMessages;
                EngineLog.RetainedRefused(engine.Logger, message.SenderClientId, message.Topic, messages ? "MaxRetainedMessages" : "MaxRetainedBytes",
                    messages ? engine.Retained.MaxMessages : engine.Retained.MaxBytes, total);
            }

            return result;
        }

        if (!sys)
        {
            stored = engine.Store.SetRetainedAsync(message);
            engine.Cluster.RetainedChanged(message);
        }

        return result;
    }

    void CollectSubscribers(BrokerMessage message, Scratch scratch)
    {
        // Overlapping subscriptions of one session give one delivery (DeliveryGrant).
        foreach (var sub in scratch.Matches)
        {
            if (DeliveryGrant.Of(message, sub.Session.ClientId, sub.Qos, sub.NoLocal, sub.RetainAsPublished, sub.Identifier) is not { } grant)
            {
                continue;
            }

            if (!scratch.IndexBySession.TryGetValue(sub.Session, out var at))
            {
                scratch.IndexBySession[sub.Session] = scratch.Recipients.Count;
                scratch.Recipients.Add(new Recipient(sub.Session, grant.Qos, grant.Retain, grant.SubscriptionIds));
                continue;
            }

            var r = scratch.Recipients[at];
            var merged = new DeliveryGrant(r.Qos, r.Retain, r.SubscriptionIds).Merge(grant);
            scratch.Recipients[at] = new Recipient(r.Session, merged.Qos, merged.Retain, merged.SubscriptionIds);
        }

        foreach (var sub in scratch.SharedPicks)
        {
            scratch.Recipients.Add(new Recipient(sub.Session, Min(message.Qos, sub.Qos), false, sub.Identifier != 0 ? [sub.Identifier] : null));
        }

        // The read check runs for every recipient and every message, so a wildcard never leaks.
        for (var i = scratch.Recipients.Count - 1; i >= 0; i--)
        {
            if (!CanRead(scratch.Recipients[i].Session, message))
            {
                scratch.Recipients.RemoveAt(i);
            }
        }
    }

    /// <param name="also">What else the publisher's ack waits for (the retained message, rows on other nodes).</param>
    ValueTask Deliver(BrokerMessage message, List<Recipient> recipients, bool hold, InboundPacket? inbound, ValueTask also, out HeldRoute? held)
    {
        held = null;
        List<StoredDelivery>? rows = null;
        for (var i = 0; i < recipients.Count; i++)
        {
            // No rows for a session that ended while this was routed (they would outlive it on disk).
            var r = recipients[i];
            if (r.Session.IsPersistent && r.Qos != MqttQualityOfServiceLevel.AtMostOnce && !r.Session.IsDiscarded)
            {
                r.Session.RowAppending();
                recipients[i] = r with { Stored = true };
                (rows ??= []).Add(new StoredDelivery(r.Session.ClientId, message.Id, r.Qos, r.Retain, r.SubscriptionIds));
            }
        }

        // Handed to the store before any queue: its rows precede every later state change.
        var durable = rows is not null ? engine.Store.AppendAsync(message, rows, inbound)
            : inbound is { } packet ? RecordInbound(packet)
            : ValueTask.CompletedTask;
        durable = Both(also, durable);

        if (hold && !durable.IsCompletedSuccessfully)
        {
            // The caller releases the recipients once the commit succeeds, or abandons them if it fails. No
            // second look at it here: it may finish on the store's thread (or Redis's) meanwhile, and a
            // success taken for a failure would ack the message and deliver it to nobody.
            held = recipients.Count == 0 ? null : new HeldRoute(message, [.. recipients]);
            return durable;
        }

        foreach (var r in recipients)
        {
            r.Enqueue(message);
        }

        return durable;
    }

    /// <summary>
    /// A message routed on another node of the cluster, for the sessions of this one: their read check and
    /// QoS as for any publish. The rows the publishing node wrote (<paramref name="storedFor"/>) are read from
    /// the store by their sessions; nothing is written here, and nothing goes back to the cluster.
    /// </summary>
    public void DeliverFromCluster(BrokerMessage message, string? directClientId, IReadOnlyCollection<string> storedFor)
    {
        var scratch = t_scratch ??= new Scratch();
        scratch.Clear();
        try
        {
            if (directClientId is not null)
            {
                if (engine.Sessions.Get(directClientId) is { } session && CanRead(session, message))
                {
                    scratch.Recipients.Add(new Recipient(session, message.Qos, false, null));
                }
            }
            else
            {
                // Shared subscriptions are not route readers: the publishing node picks their member (DeliverSharedFromCluster).
                engine.Index.Match(message.Topic, scratch.Matches, scratch.SharedPicks);
                scratch.SharedPicks.Clear();
                CollectSubscribers(message, scratch);
            }

            foreach (var r in scratch.Recipients)
            {
                var delivery = new Delivery(message, r.Qos, r.Retain, r.SubscriptionIds, Stored: true);
                if (storedFor.Count > 0 && storedFor.Contains(r.Session.ClientId))
                {
                    r.Session.StoredElsewhere(delivery);
                }
                else
                {
                    r.Session.Enqueue(delivery with { Stored = false });
                }
            }
        }
        finally
        {
            scratch.Clear();
        }
    }

    /// <summary>Another node picked this session's member of a shared subscription for the message [MQTT-4.8.2].</summary>
    public void DeliverSharedFromCluster(BrokerMessage message, string clientId, string subscriptionKey, bool stored)
    {
        if (engine.Sessions.Get(clientId) is not { } session || session.FindSubscription(subscriptionKey) is not { } sub || !CanRead(session, message))
        {
            return;
        }

        var delivery = new Delivery(message, Min(message.Qos, sub.Qos), false, Ids(sub), Stored: stored);
        if (stored)
        {
            session.StoredElsewhere(delivery);
        }
        else
        {
            session.Enqueue(delivery);
        }
    }

    /// <summary>Nothing of the message is stored (no persistent recipient): the packet id alone, and what waits for it waits for its commit.</summary>
    ValueTask RecordInbound(InboundPacket packet)
    {
        engine.Store.SetInboundQos2(packet.ClientId, packet.PacketId, pending: true);
        return engine.Store.FlushAsync();
    }

    /// <summary>The read check of every delivery: the policy's answer, and a count when it says no.</summary>
    public bool CanRead(Session session, BrokerMessage message)
    {
        if (engine.Policy.CanRead(session.Principal, message))
        {
            return true;
        }

        engine.Counters.ReadWasDenied();
        return false;
    }

    static List<uint>? Ids(Subscription s) => s.Identifier != 0 ? [s.Identifier] : null;

    static MqttQualityOfServiceLevel Min(MqttQualityOfServiceLevel a, MqttQualityOfServiceLevel b) => a < b ? a : b;

    static MqttQualityOfServiceLevel Max(MqttQualityOfServiceLevel a, MqttQualityOfServiceLevel b) => a > b ? a : b;

    internal readonly record struct Recipient(Session Session, MqttQualityOfServiceLevel Qos, bool Retain, List<uint>? SubscriptionIds, bool Stored = false)
    {
        public void Enqueue(BrokerMessage message) => Session.Enqueue(new Delivery(message, Qos, Retain, SubscriptionIds, Stored));
    }

    sealed class Scratch
    {
        public readonly List<Subscription> Matches = [];
        public readonly List<Subscription> SharedPicks = [];
        public readonly List<Recipient> Recipients = [];
        public readonly Dictionary<Session, int> IndexBySession = new(ReferenceEqualityComparer.Instance);

        public void Clear()
        {
            Matches.Clear();
            SharedPicks.Clear();
            Recipients.Clear();
            IndexBySession.Clear();
        }
    }
}

/// <summary>A routed QoS 2 message whose recipients wait for its commit (see <see cref="Router.RouteHeld"/>).</summary>
internal sealed class HeldRoute(BrokerMessage message, Router.Recipient[] recipients)
{
    /// <summary>The commit succeeded: every recipient's queue gets the message, in the order the publishes came.</summary>
    public void Release()
    {
        foreach (var r in recipients)
        {
            r.Enqueue(message);
        }
    }

    /// <summary>The commit failed: nobody gets it, and the sessions stop waiting for its rows.</summary>
    public void Abandon()
    {
        foreach (var r in recipients)
        {
            if (r.Stored)
            {
                r.Session.RowAbandoned();
            }
        }
    }
}
