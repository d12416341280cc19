using Broker.Engine.Cluster;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Protocol;

namespace Broker.Cluster.Redis;

/// <summary>
/// What the cluster needs of the shared store beyond <see cref="IBrokerStore"/>: session ownership
/// (claim with a fencing epoch), a session's durable state read back by the node that claimed it,
/// direct messages decided next to the session they are for, and the durable readers of each route.
/// Every operation on one client id touches keys of one hash slot (<c>{c/&lt;cid&gt;}</c>), so it is one atomic script.
/// </summary>
public interface ISessionStore
{
    /// <summary>
    /// Makes <paramref name="incarnation"/> the session's owner: epoch + 1. Clean start deletes the
    /// durable session (record, queue, in-flight, inbound QoS 2) in the same script. Later session writes
    /// of this node carry the new epoch; a write with an older one is refused (<see cref="Fenced"/>).
    /// </summary>
    Task<ClaimResult> ClaimAsync(string clientId, string incarnation, bool cleanStart);

    /// <summary>
    /// The durable session of <paramref name="clientId"/> (null when none): its record, in-flight rows with
    /// their messages, the queued rows' count and bytes, inbound QoS 2 ids. A persistent session takes the
    /// client id's mailbox into its queue here, in the same script.
    /// </summary>
    Task<ClaimedSession?> LoadSessionAsync(string clientId);

    /// <summary>The direct messages waiting for a client id with no session yet, oldest first (not removed: the session's rows replace them one by one).</summary>
    Task<IReadOnlyList<(BrokerMessage Message, long ExpiresAtUnixMs)>> ReadMailboxAsync(string clientId);

    /// <summary>Keeps (or with null drops) the will of the client id's connection on this node, for a survivor to publish if this node dies.</summary>
    Task SetWillAsync(string clientId, string incarnation, byte[]? will, uint delaySeconds);

    /// <summary>
    /// A dead node's session: clears its ownership (Owned false: another node owns it now) and hands over its
    /// will to publish now, or, for a persistent session's delayed will, when it is due (Unix ms; the will
    /// stays with the session until <see cref="TakeDueWillAsync"/>). A persistent session's expiry deadline goes
    /// to the expiry index; one that was connected when its node died gets it now, its expiry interval counted
    /// from now (<see cref="ExpireOrphansAsync"/> deletes it when due).
    /// </summary>
    Task<(bool Owned, byte[]? Will, long DueAtUnixMs)> TakeOrphanAsync(string clientId, string deadIncarnation);

    /// <summary>A delayed will of a dead node's session whose delay passed; null when the session was resumed meanwhile [MQTT-3.1.3-9].</summary>
    Task<byte[]?> TakeDueWillAsync(string clientId);

    /// <summary>Every persistent session in the store (a scan of every primary: for operators, not hot paths).</summary>
    Task<IReadOnlyList<(SessionRecord Record, string? Owner, int Queued, int Inflight)>> ListSessionsAsync(CancellationToken cancellationToken);

    /// <summary>Every retained message of the cluster.</summary>
    Task<IReadOnlyList<BrokerMessage>> LoadRetainedAsync();

    /// <summary>Deletes the due sessions that no node hosts (their node died); returns how many went.</summary>
    Task<int> ExpireOrphansAsync(int max = 100);

    /// <summary>Clears the owner when it is still <paramref name="incarnation"/> (a session given up, not ended).</summary>
    Task ReleaseOwnershipAsync(string clientId, string incarnation);

    /// <summary>The incarnation that owns the session, or null.</summary>
    Task<string?> GetOwnerAsync(string clientId);

    /// <summary>
    /// Rows for recipients hosted on other nodes: each written only if that client id still has a persistent
    /// session; returns the client ids that got one (the message goes to their nodes with this list).
    /// </summary>
    Task<IReadOnlyList<string>> AppendRowsAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> rows, InboundPacket? inbound);

    /// <summary>
    /// A direct message, decided atomically next to its client id's session: a session exists → a row when it
    /// is persistent and the QoS is 1/2; no session → the mailbox (QoS 1/2) until <paramref name="mailboxExpiresAtUnixMs"/>,
    /// if the client id has one already or <paramref name="mayOpenMailbox"/>.
    /// </summary>
    /// <param name="announce">Also published on a sharded channel of the client id's slot, in the same script: the message as it
    /// reads when a row was written, or otherwise.</param>
    Task<DirectResult> AppendDirectAsync(string clientId, BrokerMessage message, long mailboxExpiresAtUnixMs, InboundPacket? inbound, DirectAnnouncement? announce = null, bool mayOpenMailbox = true);

    /// <summary>
    /// Writes the session's held delivery changes and waits until Redis has them: a node letting a session go to
    /// another answers only after this, so the state the other node loads has the acknowledgements made here.
    /// </summary>
    Task WriteHeldAsync(string clientId);

    /// <summary>Client ids with a mailbox in the cluster (those expired by <paramref name="nowUnixMs"/> are forgotten first).</summary>
    Task<long> CountMailboxesAsync(long nowUnixMs);

    /// <summary>A persistent session reads <paramref name="route"/> with this subscription (QoS 1/2 only).</summary>
    Task AddReaderAsync(string route, string clientId, SubscriptionRecord subscription);

    Task RemoveReaderAsync(string route, string clientId, string filter);

    /// <summary>The durable readers of a route: one entry per (client id, filter).</summary>
    Task<IReadOnlyList<RouteReader>> ReadReadersAsync(string route);

    /// <summary>A session write of this node was refused: another node owns the session now (epoch moved).</summary>
    event Action<string>? Fenced;
}

public readonly record struct ClaimResult(long Epoch, string? PreviousOwner, bool Existed);

/// <summary>A message to publish with a direct write (<see cref="ISessionStore.AppendDirectAsync"/>): on <paramref name="Channel"/>, one of two forms.</summary>
public readonly record struct DirectAnnouncement(string Channel, byte[] IfStored, byte[] Otherwise);

public readonly record struct DirectResult(bool SessionExists, bool Stored, bool Mailed)
{
    /// <summary>For a client id without a session, and the mailbox did not take it: QoS 0, or the bound on mailboxes.</summary>
    public bool NotKept => !SessionExists && !Mailed;

    /// <summary>A QoS 1/2 message the mailbox did not take (the bound on mailboxes).</summary>
    public bool Refused(MqttQualityOfServiceLevel qos) => qos != MqttQualityOfServiceLevel.AtMostOnce && NotKept;
}

public sealed record RouteReader(string ClientId, SubscriptionRecord Subscription);
