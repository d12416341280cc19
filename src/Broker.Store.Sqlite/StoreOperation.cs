using Broker.Engine.Routing;
using Broker.Engine.Store;

namespace Broker.Store.Sqlite;

/// <summary>
/// One change for the writer. Calls on the store become operations on one ordered channel, so they
/// reach the file in the order the engine made them; those the engine awaits carry a completion.
/// </summary>
internal abstract record StoreOperation
{
    public TaskCompletionSource? Done { get; init; }

    /// <summary>A change nobody awaits that was in a failed commit and is tried once more (see the store's writer).</summary>
    public bool Retried { get; init; }

    public sealed record UpsertSession(SessionRecord Session) : StoreOperation;

    public sealed record DeleteSession(string ClientId) : StoreOperation;

    /// <summary>A message, its rows, and a persistent publisher's QoS 2 packet id when it came with one: one commit.</summary>
    public sealed record Append(BrokerMessage Message, IReadOnlyList<StoredDelivery> Deliveries, InboundPacket? Inbound = null) : StoreOperation;

    public sealed record UpdateDelivery(string ClientId, long MessageId, ushort PacketId, DeliveryState State) : StoreOperation;

    public sealed record RemoveDelivery(string ClientId, long MessageId) : StoreOperation;

    public sealed record InboundQos2(string ClientId, ushort PacketId, bool Pending) : StoreOperation;

    public sealed record MailboxAdd(string ClientId, BrokerMessage Message, long ExpiresAtUnixMs, InboundPacket? Inbound = null) : StoreOperation;

    public sealed record MailboxRemove(string ClientId, long MessageId) : StoreOperation;

    public sealed record RetainedSet(BrokerMessage Message) : StoreOperation;

    public sealed record RetainedDelete(string Topic) : StoreOperation;

    public sealed record OwnerBind(string ClientId, string UserId) : StoreOperation;

    public sealed record OwnerRelease(string ClientId) : StoreOperation;

    public sealed record SaveRecord(string Kind, string Key, byte[]? Value) : StoreOperation;

    /// <summary>Reads a session's oldest queued rows; written alone in its batch, so no elision reaches across it.</summary>
    public sealed record ReadQueue(string ClientId, int MaxMessages, long MaxBytes) : StoreOperation
    {
        public List<QueuedMessage> Result { get; } = [];
    }

    /// <summary>Deletes a session's oldest queued rows (its queue's limits); alone in its batch, as a read.</summary>
    public sealed record DropOldestQueued(string ClientId, int Count, long Bytes) : StoreOperation
    {
        public (int Count, long Bytes) Result { get; set; }
    }

    /// <summary>Operations that are written in a batch of their own (see the writer).</summary>
    public bool IsAlone => this is Maintain or ReadQueue or DropOldestQueued;

    /// <summary>Nothing to write: completes when everything queued before it is on disk.</summary>
    public sealed record Flush : StoreOperation;

    /// <summary>Checkpoint the WAL and give free pages back, when the broker is idle.</summary>
    public sealed record Maintain : StoreOperation;
}
