using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;

namespace Broker.Engine.Cluster;

/// <summary>
/// The engine's link to the other nodes of a cluster. The engine calls it at four points of its
/// pipeline (CONNECT, SUBSCRIBE/UNSUBSCRIBE, route, session end) and hears the other nodes through
/// <see cref="IClusterPeer"/>. One node alone uses <see cref="SingleNode"/>, where every call is a no-op:
/// the engine has no "if clustered" of its own.
/// </summary>
public interface IClusterLink
{
    /// <summary>This node's id (logs, metrics, admin API).</summary>
    string NodeId { get; }

    /// <summary>False while the shared state is out of reach (/readyz says not ready).</summary>
    bool IsReachable { get; }

    /// <summary>Unique among the live nodes, 0..255: the low bits of the message ids this node gives, so ids never collide across nodes.</summary>
    int NodeIndex { get; }

    /// <summary>Connects to the other nodes; <paramref name="peer"/> is how they reach this node's engine.</summary>
    Task StartAsync(IClusterPeer peer, CancellationToken cancellationToken);

    /// <summary>Leaves the cluster (after the engine closed its connections).</summary>
    Task StopAsync(CancellationToken cancellationToken);

    /// <summary>
    /// At CONNECT, after authentication and before the session opens: makes this node the session's
    /// owner (fenced, so a node that lost it can no longer change it), has the node that had it close
    /// its connection (v5 0x8E) and let it go, and returns the session's durable state. Null: no
    /// durable session (or clean start, which deletes it), or one node alone (the engine's own state
    /// is the truth). A new persistent session (<paramref name="expirySeconds"/> above 0) gets the direct
    /// messages that waited for its client id. Throws <see cref="ClusterUnavailableException"/> when the shared state is out of reach.
    /// </summary>
    ValueTask<ClaimedSession?> ClaimAsync(ClientPrincipal principal, bool cleanStart, uint expirySeconds, CancellationToken cancellationToken);

    /// <summary>A session is hosted here now (connected, or restored offline): its direct route reaches this node.</summary>
    void SessionHosted(Session session);

    /// <summary>
    /// A session left this node. <paramref name="ended"/>: it is gone for good (its durable readers go
    /// too); otherwise it lives on elsewhere (taken over) and only this node's interest ends.
    /// </summary>
    void SessionLeft(Session session, bool ended);

    /// <summary>A subscription of a session hosted here was added or removed (<paramref name="ended"/> as in <see cref="SessionLeft"/>).</summary>
    void SubscriptionChanged(Session session, Subscription subscription, bool added, bool ended = true);

    /// <summary>Completes when every change of sessions and subscriptions made before the call reaches the other nodes (CONNACK and SUBACK wait on it).</summary>
    ValueTask SettledAsync();

    /// <summary>
    /// After the local recipients of a routed message were found: writes rows for the durable readers
    /// hosted elsewhere and sends the message to the nodes that host readers of its route. The task
    /// completes when those rows are durable (the publisher's ack waits on it).
    /// </summary>
    ValueTask RouteAsync(BrokerMessage message, InboundPacket? inbound);

    /// <summary>
    /// A direct (P2P) message for a client id with no session on this node: true when the cluster took
    /// it (for the node that hosts that session, or the shared offline mailbox); <paramref name="durable"/>
    /// completes when it is stored. False: nothing beyond this node, use the local mailbox.
    /// </summary>
    bool TryRouteDirect(string clientId, BrokerMessage message, InboundPacket? inbound, out ValueTask durable);

    /// <summary>A retained message was set or (empty payload) deleted here: every node's copy follows.</summary>
    void RetainedChanged(BrokerMessage message);

    /// <summary>The persistent sessions the cluster keeps that are not hosted on this node (admin API); empty for one node alone.</summary>
    Task<IReadOnlyList<RemoteSession>> RemoteSessionsAsync(CancellationToken cancellationToken);

    /// <summary>
    /// A client connected here with a will: kept where a surviving node publishes it if this node dies, after
    /// <paramref name="delaySeconds"/> (the will delay, at most the session's expiry) unless the session is resumed first.
    /// </summary>
    void WillArmed(ClientPrincipal sender, BrokerMessage will, uint delaySeconds, uint expirySeconds);

    /// <summary>That will was published, discarded (normal DISCONNECT) or cancelled by this node.</summary>
    void WillDisarmed(string clientId);
}

/// <summary>What other nodes ask of this node's engine.</summary>
public interface IClusterPeer
{
    /// <summary>
    /// A message routed on another node, for the sessions hosted here. <paramref name="storedFor"/>: the
    /// client ids the publishing node wrote a row for; those read it from the store, in order.
    /// <paramref name="directClientId"/>: a direct message for that client id only.
    /// </summary>
    void Deliver(BrokerMessage message, string? directClientId, IReadOnlyCollection<string> storedFor);

    /// <summary>
    /// A message another node picked this session's shared subscription (key <c>$share/name/filter</c>) for:
    /// delivered to it alone. <paramref name="stored"/>: that node wrote its row (read from the store).
    /// </summary>
    void DeliverShared(BrokerMessage message, string clientId, string subscriptionKey, bool stored);

    /// <summary>A direct message this node routed for a client id without a session that nothing kept (QoS 0, or the bound on mailboxes): counted and logged.</summary>
    void DirectNotKept(string clientId, BrokerMessage message);

    /// <summary>Another node took the session over: close its connection here (v5 0x8E) and let it go, keeping its durable state.</summary>
    Task ReleaseAsync(string clientId);

    /// <summary>True when the session of <paramref name="clientId"/> is hosted on this node.</summary>
    bool Hosts(string clientId);

    /// <summary>Another node set or deleted (empty payload) a retained message.</summary>
    void RetainedChanged(BrokerMessage message);

    /// <summary>
    /// This node's link to the others was cut and is back: messages sent meanwhile may not have arrived.
    /// Persistent sessions read their queues from the store again (the rows were written for them);
    /// connected clean sessions with a QoS 1/2 subscription are disconnected, so no loss is silent.
    /// </summary>
    void MayHaveMissedMessages();

    /// <summary>Every retained message the cluster keeps (after the link was cut): this node's copy becomes exactly that.</summary>
    void ResyncRetained(IReadOnlyList<BrokerMessage> all);

    /// <summary>The will of a client whose node died: published here, under the same rules as any will.</summary>
    void PublishWill(BrokerMessage will, ClientPrincipal sender, uint expirySeconds);
}

/// <summary>
/// A session's durable state, read from the shared store by the node that claimed it; no
/// <paramref name="Record"/> when the client id has no session yet, only a <paramref name="Mailbox"/>.
/// </summary>
public sealed record ClaimedSession(
    SessionRecord? Record,
    IReadOnlyList<QueuedMessage> Inflight,
    int QueuedCount,
    long QueuedBytes,
    IReadOnlyList<ushort> InboundQos2,
    IReadOnlyList<(BrokerMessage Message, long ExpiresAtUnixMs)> Mailbox);

/// <summary>A session hosted on another node (or on none: its node died), as the shared store describes it.</summary>
public sealed record RemoteSession(SessionRecord Record, string? Node, bool Connected, int Queued, int Inflight);

/// <summary>The shared state is out of reach: the engine refuses what it cannot store (CONNACK 0x88 / 0x03).</summary>
public sealed class ClusterUnavailableException(string message, Exception? inner = null) : Exception(message, inner);
