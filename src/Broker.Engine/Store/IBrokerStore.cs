using Broker.Engine.Routing;
using MQTTnet.Protocol;

namespace Broker.Engine.Store;

/// <summary>
/// What the engine records so that persistent sessions, their queues and in-flight state, retained
/// messages and client-id bindings outlive the process. A message is stored once and referenced by a
/// row per persistent recipient. The engine awaits <see cref="AppendAsync"/> before it acknowledges a
/// publish, so a durable implementation acknowledges only what is on disk (group commit welcome).
/// Only sessions with an expiry above zero are recorded. Calls for one client id arrive in order.
/// The policy's own data lives next to it, behind <see cref="IPolicyRecords"/> and <see cref="IClientIdBindings"/>
/// (a store implements all three; each consumer sees only its room).
/// </summary>
public interface IBrokerStore : IAsyncDisposable
{
    /// <summary>Everything needed to rebuild the engine's state; called once before accepting connections.</summary>
    ValueTask<StoreSnapshot> LoadAsync(CancellationToken cancellationToken);

    /// <summary>Completes when every change made before the call is durable (CONNACK and SUBACK of persistent sessions wait on it).</summary>
    ValueTask FlushAsync();

    /// <summary>
    /// Completes when the store has room for more writes: at once while the writes not yet on disk are
    /// below the store's bound (<c>Broker:Store:MaxPendingWrites</c>), else when enough of them are.
    /// A connection awaits it before each PUBLISH it handles, so publishers that outrun the disk are
    /// read more slowly; every other write is still taken at once, never refused or blocked. Must be
    /// cheap and allocation-free when there is room; never fails.
    /// </summary>
    ValueTask WaitForRoomAsync();

    void UpsertSession(SessionRecord session);

    void DeleteSession(string clientId);

    /// <summary>
    /// Records a message and a queue row for each persistent recipient, and with <paramref name="inbound"/>
    /// the publisher's QoS 2 packet id, all in one commit; completes when durable.
    /// </summary>
    ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null);

    /// <summary>A queued message became in flight (packet id assigned) or moved on to PUBREL.</summary>
    void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state);

    /// <summary>Acknowledged, dropped or expired: the row goes; a message with no rows left goes too.</summary>
    void RemoveDelivery(string clientId, long messageId);

    /// <summary>
    /// The oldest queued rows of a session (not in flight), in order, with their messages: at most
    /// <paramref name="maxMessages"/>, and no more once <paramref name="maxBytes"/> of payload is
    /// reached (at least one). It sees every change handed to the store before the call: a persistent
    /// session's queue waits here, and only a window of it is in memory (contract §6).
    /// </summary>
    ValueTask<IReadOnlyList<QueuedMessage>> ReadQueueAsync(string clientId, int maxMessages, long maxBytes);

    /// <summary>Deletes a session's oldest queued rows until at least <paramref name="count"/> rows and <paramref name="bytes"/> payload bytes are gone; returns what went.</summary>
    ValueTask<(int Count, long Bytes)> DropOldestQueuedAsync(string clientId, int count, long bytes);

    /// <summary>Inbound QoS 2 packet ids between PUBREC and PUBREL (exactly once across a restart).</summary>
    void SetInboundQos2(string clientId, ushort packetId, bool pending);

    /// <summary>
    /// Keeps a direct (P2P) message for a client id that has no session yet, until it connects with a
    /// persistent session or <paramref name="expiresAtUnixMs"/> passes; completes when durable.
    /// </summary>
    ValueTask AddToMailboxAsync(string clientId, BrokerMessage message, long expiresAtUnixMs, InboundPacket? inbound = null);

    /// <summary>Delivered into a session (which now has its own row) or expired.</summary>
    void RemoveFromMailbox(string clientId, long messageId);

    ValueTask SetRetainedAsync(BrokerMessage message);

    ValueTask DeleteRetainedAsync(string topic);

}

public enum DeliveryState : byte
{
    Queued = 0,

    /// <summary>PUBLISH sent, waiting for PUBACK (QoS 1) or PUBREC (QoS 2).</summary>
    AwaitingAck = 1,

    /// <summary>PUBREC received and PUBREL sent: resume with PUBREL, never a second PUBLISH.</summary>
    AwaitingComp = 2,
}

public sealed record SubscriptionRecord(
    string Filter,
    MqttQualityOfServiceLevel Qos,
    bool NoLocal,
    bool RetainAsPublished,
    MqttRetainHandling RetainHandling,
    uint SubscriptionId);

public sealed record SessionRecord(
    string ClientId,
    string UserId,
    string Role,
    uint ExpirySeconds,
    long DisconnectedAtUnixMs,
    IReadOnlyList<SubscriptionRecord> Subscriptions);

public sealed record StoredDelivery(
    string ClientId,
    long MessageId,
    MqttQualityOfServiceLevel Qos,
    bool Retain,
    IReadOnlyList<uint>? SubscriptionIds,
    ushort PacketId = 0,
    DeliveryState State = DeliveryState.Queued);

/// <summary>
/// A persistent publisher's QoS 2 packet id, between PUBREC and PUBREL: written in the same commit as
/// the message it came with, so a crash leaves both or neither [engine invariant 2].
/// </summary>
public readonly record struct InboundPacket(string ClientId, ushort PacketId);

/// <summary>A queued row read back from the store with its message.</summary>
public readonly record struct QueuedMessage(StoredDelivery Row, BrokerMessage Message);

public sealed class StoreSnapshot
{
    public List<SessionRecord> Sessions { get; } = [];

    /// <summary>The messages of in-flight rows and of the mailbox; queued rows stay in the store until paged in.</summary>
    public Dictionary<long, BrokerMessage> Messages { get; } = [];

    /// <summary>In-flight rows (packet id given), in message order.</summary>
    public List<StoredDelivery> Deliveries { get; } = [];

    /// <summary>Per session, the queued rows that wait in the store and their payload bytes.</summary>
    public Dictionary<string, (int Count, long Bytes)> QueuedTotals { get; } = new(StringComparer.Ordinal);

    /// <summary>The highest message id on disk, orphans included: a new message never takes one of them.</summary>
    public long MaxMessageId { get; set; }

    public List<(string ClientId, ushort PacketId)> InboundQos2 { get; } = [];

    public List<BrokerMessage> Retained { get; } = [];

    /// <summary>Offline direct messages in the order they arrived.</summary>
    public List<(string ClientId, BrokerMessage Message, long ExpiresAtUnixMs)> Mailbox { get; } = [];
}
