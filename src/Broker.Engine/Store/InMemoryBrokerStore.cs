using System.Collections.Concurrent;
using Broker.Engine.Routing;

namespace Broker.Engine.Store;

/// <summary>
/// Keeps the store's records in memory: state outlives an engine instance (a restart inside the
/// process restores it), not the process. The durable store implements the same contract on disk.
/// </summary>
public sealed class InMemoryBrokerStore : IBrokerStore, IPolicyRecords, IClientIdBindings
{
    readonly object _gate = new();
    readonly Dictionary<string, SessionRecord> _sessions = new(StringComparer.Ordinal);
    readonly Dictionary<long, (BrokerMessage Message, int Rows)> _messages = [];

    // Insertion-ordered rows per client: (messageId → row).
    readonly Dictionary<string, OrderedRows> _rows = new(StringComparer.Ordinal);
    readonly HashSet<(string, ushort)> _inboundQos2 = [];
    readonly ConcurrentDictionary<string, BrokerMessage> _retained = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, string> _owners = new(StringComparer.Ordinal);
    readonly List<(string ClientId, BrokerMessage Message, long ExpiresAtUnixMs)> _mailbox = [];
    readonly Dictionary<(string Kind, string Key), byte[]?> _records = [];

    public ValueTask<StoreSnapshot> LoadAsync(CancellationToken cancellationToken)
    {
        var snapshot = new StoreSnapshot();
        lock (_gate)
        {
            snapshot.Sessions.AddRange(_sessions.Values);
            foreach (var (id, entry) in _messages)
            {
                snapshot.Messages[id] = entry.Message;
            }

            foreach (var (clientId, rows) in _rows)
            {
                foreach (var row in rows.InOrder())
                {
                    if (row.State != DeliveryState.Queued)
                    {
                        snapshot.Deliveries.Add(row);
                        continue;
                    }

                    var (count, bytes) = snapshot.QueuedTotals.GetValueOrDefault(clientId);
                    snapshot.QueuedTotals[clientId] = (count + 1, bytes + _messages[row.MessageId].Message.Payload.Length);
                }
            }

            snapshot.Deliveries.Sort((a, b) => a.MessageId.CompareTo(b.MessageId));
            snapshot.MaxMessageId = _messages.Count == 0 ? 0 : _messages.Keys.Max();
            snapshot.InboundQos2.AddRange(_inboundQos2);
            snapshot.Mailbox.AddRange(_mailbox);
        }

        snapshot.Retained.AddRange(_retained.Values);
        return ValueTask.FromResult(snapshot);
    }

    public ValueTask FlushAsync() => ValueTask.CompletedTask;

    /// <summary>Memory has no disk to wait for: always room.</summary>
    public ValueTask WaitForRoomAsync() => ValueTask.CompletedTask;

    public void UpsertSession(SessionRecord session)
    {
        lock (_gate)
        {
            _sessions[session.ClientId] = session;
        }
    }

    public void DeleteSession(string clientId)
    {
        lock (_gate)
        {
            _sessions.Remove(clientId);
            if (_rows.Remove(clientId, out var rows))
            {
                foreach (var row in rows.InOrder())
                {
                    Release(row.MessageId);
                }
            }

            _inboundQos2.RemoveWhere(x => x.Item1 == clientId);
        }
    }

    public ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null)
    {
        if (inbound is { } packet)
        {
            SetInboundQos2(packet.ClientId, packet.PacketId, pending: true);
        }

        if (deliveries.Count == 0)
        {
            return ValueTask.CompletedTask;
        }

        lock (_gate)
        {
            _messages[message.Id] = (message, deliveries.Count);
            foreach (var d in deliveries)
            {
                if (!_rows.TryGetValue(d.ClientId, out var rows))
                {
                    _rows[d.ClientId] = rows = new OrderedRows();
                }

                rows.Set(d);
            }
        }

        return ValueTask.CompletedTask;
    }

    public void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state)
    {
        lock (_gate)
        {
            if (_rows.TryGetValue(clientId, out var rows) && rows.TryGet(messageId, out var row))
            {
                rows.Set(row with { PacketId = packetId, State = state });
            }
        }
    }

    public void RemoveDelivery(string clientId, long messageId)
    {
        lock (_gate)
        {
            if (_rows.TryGetValue(clientId, out var rows) && rows.Remove(messageId))
            {
                Release(messageId);
            }
        }
    }

    public ValueTask<IReadOnlyList<QueuedMessage>> ReadQueueAsync(string clientId, int maxMessages, long maxBytes)
    {
        var page = new List<QueuedMessage>();
        lock (_gate)
        {
            long bytes = 0;
            foreach (var row in _rows.TryGetValue(clientId, out var rows) ? rows.InOrder() : [])
            {
                if (page.Count >= maxMessages || (page.Count > 0 && bytes >= maxBytes))
                {
                    break;
                }

                if (row.State == DeliveryState.Queued)
                {
                    var message = _messages[row.MessageId].Message;
                    page.Add(new QueuedMessage(row, message));
                    bytes += message.Payload.Length;
                }
            }
        }

        return ValueTask.FromResult<IReadOnlyList<QueuedMessage>>(page);
    }

    public ValueTask<(int Count, long Bytes)> DropOldestQueuedAsync(string clientId, int count, long bytes)
    {
        var dropped = (Count: 0, Bytes: 0L);
        lock (_gate)
        {
            if (_rows.TryGetValue(clientId, out var rows))
            {
                // Only the oldest rows are looked at (the queue may hold 100,000; this runs once per overflow).
                var victims = new List<long>();
                foreach (var row in rows.InOrder())
                {
                    if (dropped.Count >= count && dropped.Bytes >= bytes)
                    {
                        break;
                    }

                    if (row.State == DeliveryState.Queued)
                    {
                        dropped = (dropped.Count + 1, dropped.Bytes + _messages[row.MessageId].Message.Payload.Length);
                        victims.Add(row.MessageId);
                    }
                }

                foreach (var id in victims)
                {
                    rows.Remove(id);
                    Release(id);
                }
            }
        }

        return ValueTask.FromResult(dropped);
    }

    public void SetInboundQos2(string clientId, ushort packetId, bool pending)
    {
        lock (_gate)
        {
            if (pending)
            {
                _inboundQos2.Add((clientId, packetId));
            }
            else
            {
                _inboundQos2.Remove((clientId, packetId));
            }
        }
    }

    public ValueTask AddToMailboxAsync(string clientId, BrokerMessage message, long expiresAtUnixMs, InboundPacket? inbound = null)
    {
        if (inbound is { } packet)
        {
            SetInboundQos2(packet.ClientId, packet.PacketId, pending: true);
        }

        lock (_gate)
        {
            _mailbox.Add((clientId, message, expiresAtUnixMs));
        }

        return ValueTask.CompletedTask;
    }

    public void RemoveFromMailbox(string clientId, long messageId)
    {
        lock (_gate)
        {
            _mailbox.RemoveAll(m => m.ClientId == clientId && m.Message.Id == messageId);
        }
    }

    public ValueTask SetRetainedAsync(BrokerMessage message)
    {
        _retained[message.Topic] = message;
        return ValueTask.CompletedTask;
    }

    public ValueTask DeleteRetainedAsync(string topic)
    {
        _retained.TryRemove(topic, out _);
        return ValueTask.CompletedTask;
    }

    /// <summary>Only this process writes the store: nothing changes elsewhere.</summary>
    public event Action<string, string, byte[]?>? ChangedElsewhere { add { } remove { } }

    public event Action? Resync { add { } remove { } }

    public IReadOnlyList<(string Key, byte[]? Value)> LoadRecords(string kind)
    {
        lock (_gate)
        {
            return [.. _records.Where(r => r.Key.Kind == kind).Select(r => (r.Key.Key, r.Value))];
        }
    }

    public ValueTask SaveRecordAsync(string kind, string key, byte[]? value)
    {
        lock (_gate)
        {
            _records[(kind, key)] = value;
        }

        return ValueTask.CompletedTask;
    }

    public ValueTask<string?> GetClientOwnerAsync(string clientId) => ValueTask.FromResult(_owners.TryGetValue(clientId, out var user) ? user : null);

    public ValueTask<string> BindClientOwnerAsync(string clientId, string userId) => ValueTask.FromResult(_owners.GetOrAdd(clientId, userId));

    public ValueTask<bool> ReleaseClientOwnerAsync(string clientId) => ValueTask.FromResult(_owners.TryRemove(clientId, out _));

    public ValueTask DisposeAsync() => ValueTask.CompletedTask;

    void Release(long messageId)
    {
        if (_messages.TryGetValue(messageId, out var entry))
        {
            if (entry.Rows <= 1)
            {
                _messages.Remove(messageId);
            }
            else
            {
                _messages[messageId] = (entry.Message, entry.Rows - 1);
            }
        }
    }

    sealed class OrderedRows
    {
        readonly SortedDictionary<long, StoredDelivery> _byId = [];

        public void Set(StoredDelivery row) => _byId[row.MessageId] = row;

        public bool TryGet(long id, out StoredDelivery row) => _byId.TryGetValue(id, out row!);

        public bool Remove(long id) => _byId.Remove(id);

        public IEnumerable<StoredDelivery> InOrder() => _byId.Values;
    }
}
