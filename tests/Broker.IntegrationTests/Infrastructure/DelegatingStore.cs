using Broker.Engine.Routing;
using Broker.Engine.Store;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The in-memory store behind a seam tests can bend: a subclass overrides the calls whose timing or
/// outcome it controls (a full disk, a commit that has not finished yet) and inherits the rest.
/// </summary>
public abstract class DelegatingStore : IBrokerStore, IPolicyRecords, IClientIdBindings
{
    protected InMemoryBrokerStore Inner { get; } = new();

    public virtual ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null) => Inner.AppendAsync(message, deliveries, inbound);

    public virtual ValueTask FlushAsync() => Inner.FlushAsync();

    public virtual ValueTask WaitForRoomAsync() => Inner.WaitForRoomAsync();

    public ValueTask<StoreSnapshot> LoadAsync(CancellationToken cancellationToken) => Inner.LoadAsync(cancellationToken);

    public void UpsertSession(SessionRecord session) => Inner.UpsertSession(session);

    public void DeleteSession(string clientId) => Inner.DeleteSession(clientId);

    public void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state) => Inner.UpdateDelivery(clientId, messageId, packetId, state);

    public void RemoveDelivery(string clientId, long messageId) => Inner.RemoveDelivery(clientId, messageId);

    public ValueTask<IReadOnlyList<QueuedMessage>> ReadQueueAsync(string clientId, int maxMessages, long maxBytes) => Inner.ReadQueueAsync(clientId, maxMessages, maxBytes);

    public ValueTask<(int Count, long Bytes)> DropOldestQueuedAsync(string clientId, int count, long bytes) => Inner.DropOldestQueuedAsync(clientId, count, bytes);

    public virtual void SetInboundQos2(string clientId, ushort packetId, bool pending) => Inner.SetInboundQos2(clientId, packetId, pending);

    public virtual ValueTask AddToMailboxAsync(string clientId, BrokerMessage message, long expiresAtUnixMs, InboundPacket? inbound = null) => Inner.AddToMailboxAsync(clientId, message, expiresAtUnixMs, inbound);

    public void RemoveFromMailbox(string clientId, long messageId) => Inner.RemoveFromMailbox(clientId, messageId);

    public ValueTask SetRetainedAsync(BrokerMessage message) => Inner.SetRetainedAsync(message);

    public ValueTask DeleteRetainedAsync(string topic) => Inner.DeleteRetainedAsync(topic);

    public IReadOnlyList<(string Key, byte[]? Value)> LoadRecords(string kind) => Inner.LoadRecords(kind);

    public ValueTask SaveRecordAsync(string kind, string key, byte[]? value) => Inner.SaveRecordAsync(kind, key, value);

    public event Action<string, string, byte[]?>? ChangedElsewhere
    {
        add => Inner.ChangedElsewhere += value;
        remove => Inner.ChangedElsewhere -= value;
    }

    public event Action? Resync
    {
        add => Inner.Resync += value;
        remove => Inner.Resync -= value;
    }

    public ValueTask<string?> GetClientOwnerAsync(string clientId) => Inner.GetClientOwnerAsync(clientId);

    public ValueTask<string> BindClientOwnerAsync(string clientId, string userId) => Inner.BindClientOwnerAsync(clientId, userId);

    public ValueTask<bool> ReleaseClientOwnerAsync(string clientId) => Inner.ReleaseClientOwnerAsync(clientId);

    public ValueTask DisposeAsync() => Inner.DisposeAsync();
}

/// <summary>
/// A store whose commits can be held open, as a slow disk holds them: while <see cref="Hold"/> is on,
/// every awaited write (appends and flushes, or flushes only) completes when <see cref="Release"/> is
/// called, in order. Tests use it to check what the broker does (and must not do) before a commit.
/// </summary>
public sealed class GatedStore : DelegatingStore
{
    readonly object _gate = new();
    TaskCompletionSource _released = NewGate();
    TaskCompletionSource _held = NewGate();
    TaskCompletionSource _roomWaited = NewGate();
    int _heldWrites;

    /// <summary>Commits wait for <see cref="Release"/>.</summary>
    public bool Hold { get; set; }

    /// <summary>Appends are not held, only flushes (the barrier the engine takes for packet-id and state changes).</summary>
    public bool FlushesOnly { get; set; }

    /// <summary>Completes when the first held commit has been asked for since the last <see cref="Release"/>; fails after the test timeout.</summary>
    public Task CommitHeld
    {
        get
        {
            lock (_gate)
            {
                return _held.Task.WaitAsync(TestClient.Timeout);
            }
        }
    }

    /// <summary>
    /// With a bound (above 0): while <see cref="Hold"/> is on and this many writes are held,
    /// <see cref="WaitForRoomAsync"/> makes its caller wait for <see cref="Release"/>, as SqliteBrokerStore
    /// does at Broker:Store:MaxPendingWrites.
    /// </summary>
    public int MaxPendingWrites { get; set; }

    /// <summary>Writes held since the last <see cref="Release"/>.</summary>
    public int HeldWrites
    {
        get
        {
            lock (_gate)
            {
                return _heldWrites;
            }
        }
    }

    /// <summary>Completes when a caller of <see cref="WaitForRoomAsync"/> was made to wait; fails after the test timeout.</summary>
    public Task RoomWaited
    {
        get
        {
            lock (_gate)
            {
                return _roomWaited.Task.WaitAsync(TestClient.Timeout);
            }
        }
    }

    public override ValueTask WaitForRoomAsync()
    {
        lock (_gate)
        {
            if (!Hold || MaxPendingWrites == 0 || _heldWrites < MaxPendingWrites)
            {
                return ValueTask.CompletedTask;
            }

            _roomWaited.TrySetResult();
            return new ValueTask(_released.Task);
        }
    }

    public void Release()
    {
        TaskCompletionSource released;
        lock (_gate)
        {
            Hold = false;
            released = _released;
            _released = NewGate();
            _held = NewGate();
            _roomWaited = NewGate();
            _heldWrites = 0;
        }

        released.TrySetResult();
    }

    public override ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null) =>
        FlushesOnly ? Inner.AppendAsync(message, deliveries, inbound) : Gated(Inner.AppendAsync(message, deliveries, inbound));

    public override ValueTask FlushAsync() => Gated(Inner.FlushAsync());

    ValueTask Gated(ValueTask inner)
    {
        Task released;
        lock (_gate)
        {
            if (!Hold)
            {
                return inner;
            }

            released = _released.Task;
            _heldWrites++;
            _held.TrySetResult();
        }

        return AfterAsync(released, inner);
    }

    static async ValueTask AfterAsync(Task released, ValueTask inner)
    {
        await inner;
        await released;
    }

    static TaskCompletionSource NewGate() => new(TaskCreationOptions.RunContinuationsAsynchronously);
}
