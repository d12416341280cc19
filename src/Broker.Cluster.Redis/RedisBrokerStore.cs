using System.Collections.Concurrent;
using System.Globalization;
using Broker.Engine.Cluster;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>
/// The shared store of a cluster, in Redis: per client id a session hash, a queue, its rows' blobs, the
/// in-flight rows, the inbound QoS 2 ids and an offline mailbox, all in one hash slot (<see cref="RedisKeys"/>),
/// so every change to one client id is one atomic script (<see cref="RedisScripts"/>). A row carries a
/// copy of its message (one per recipient, for now).
/// <para>
/// Fencing: <see cref="ClaimAsync"/> raises the session's epoch and remembers it here; every later
/// session-owned write of this node for that client id carries it, and Redis refuses the write when the
/// epoch has moved on (another node claimed it): nothing changes and <see cref="Fenced"/> is raised once.
/// Rule: a client id this node never claimed (one node alone, tests) writes unfenced.
/// </para>
/// <para>
/// Ordering: StackExchange.Redis sends the commands of one multiplexer to one Redis in the order they are
/// issued, so fire-and-forget writes are issued at once, in call order, and a later read sees them. On a
/// Redis Cluster that holds per client id (one slot: one primary, one connection), which is all it must. (The first
/// call of a script after Redis lost its script cache is resent as EVAL by the client library; that
/// window is the only place two writes could swap.) Awaited calls propagate Redis errors and timeouts.
/// </para>
/// </summary>
public sealed partial class RedisBrokerStore : IBrokerStore, ISessionStore, IPolicyRecords, IClientIdBindings
{
    readonly IConnectionMultiplexer _redis;
    readonly IDatabase _db;
    readonly ILogger<RedisBrokerStore> _logger;
    readonly TimeProvider _time;
    readonly WriteTracker _writes;
    readonly DeliveryMarks _marks;
    readonly ITimer _markTicks;
    readonly bool _ownsConnection;
    readonly ConcurrentDictionary<string, Fence> _fences = new(StringComparer.Ordinal);

    public RedisBrokerStore(IConnectionMultiplexer redis, ILogger<RedisBrokerStore> logger, int maxPendingWrites = 10_000, TimeProvider? time = null)
        : this(redis, logger, maxPendingWrites, time, ownsConnection: false)
    {
    }

    RedisBrokerStore(IConnectionMultiplexer redis, ILogger<RedisBrokerStore> logger, int maxPendingWrites, TimeProvider? time, bool ownsConnection)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPendingWrites, 1);
        _redis = redis;
        _db = redis.GetDatabase();
        _logger = logger;
        _time = time ?? TimeProvider.System;
        _ownsConnection = ownsConnection;
        _writes = new WriteTracker(maxPendingWrites, ex => LogWriteFailed(_logger, ex.Message));
        _marks = new DeliveryMarks(WriteHeld);
        _markTicks = _time.CreateTimer(static state => ((DeliveryMarks)state!).Tick(), _marks, MarkTick, MarkTick);
        _redis.ConnectionRestored += OnConnectionRestored;
    }

    /// <summary>A held delivery change (a mark, a removal) is written after one to two of these (<see cref="DeliveryMarks"/>).</summary>
    static readonly TimeSpan MarkTick = TimeSpan.FromMilliseconds(50);

    /// <summary>Connects to <paramref name="configuration"/> (StackExchange.Redis syntax); the store owns that connection.</summary>
    public static async Task<RedisBrokerStore> ConnectAsync(string configuration, ILogger<RedisBrokerStore> logger, int maxPendingWrites = 10_000, TimeProvider? time = null)
    {
        var redis = await ConnectionMultiplexer.ConnectAsync(configuration);
        return new RedisBrokerStore(redis, logger, maxPendingWrites, time, ownsConnection: true);
    }

    public event Action<string>? Fenced;

    /// <summary>The most direct messages kept per client id in the mailbox (Broker:MaxQueuedMessages); the oldest go first.</summary>
    public int MailboxCap { get; init; } = 1000;

    /// <summary>Writes sent and not yet answered.</summary>
    public long PendingWrites => _writes.Count;

    /// <summary>Writes nobody awaited that failed (each also logged).</summary>
    public long FailedWrites => _writes.Failed;

    // ---- ISessionStore -----------------------------------------------------------------------------

    public async Task<ClaimResult> ClaimAsync(string clientId, string incarnation, bool cleanStart)
    {
        // The session's held changes go first, under the epoch they were made with: the state the claim loads has
        // them (an unacknowledged QoS 1 message is resent with DUP and its packet id [MQTT-4.4.0-1], an acknowledged
        // one is not resent). One held after this is refused as stale and fences nothing (OnStaleAsync: the owner is
        // still this node).
        _marks.WriteNow(clientId);
        var r = (RedisResult[])(await Run(RedisScripts.Claim, RedisKeys.Session(clientId), [incarnation, cleanStart ? "1" : "0"]))!;
        var epoch = (long)r[0];
        _fences[clientId] = new Fence(epoch, incarnation);
        var previous = (string?)r[1];
        return new ClaimResult(epoch, string.IsNullOrEmpty(previous) ? null : previous, (long)r[2] == 1);
    }

    public async Task<ClaimedSession?> LoadSessionAsync(string clientId)
    {
        var result = await Run(RedisScripts.Load, RedisKeys.Session(clientId), [Now()]);
        if (result.IsNull)
        {
            return null;
        }

        var r = (RedisResult[])result!;
        var record = RowCodec.DecodeSession(clientId, (byte[])r[0]!);
        var inbound = ((RedisResult[])r[3]!).Select(x => ushort.Parse((string)x!, CultureInfo.InvariantCulture)).Order().ToList();
        var rows = (RedisResult[])r[4]!;
        var inflight = new List<QueuedMessage>(rows.Length / 3);
        for (var i = 0; i + 2 < rows.Length; i += 3)
        {
            var (packetId, state) = ParseInflight((string)rows[i + 1]!);
            inflight.Add(RowCodec.DecodeRow(clientId, (byte[])rows[i + 2]!, packetId, state));
        }

        inflight.Sort((a, b) => a.Row.MessageId.CompareTo(b.Row.MessageId));
        return new ClaimedSession(record, inflight, (int)(long)r[1], (long)r[2], inbound, []);
    }

    public async Task<IReadOnlyList<(BrokerMessage Message, long ExpiresAtUnixMs)>> ReadMailboxAsync(string clientId)
    {
        var items = (RedisResult[])(await Run(RedisScripts.MailboxRead, RedisKeys.Session(clientId), [Now()], track: false))!;
        var mailbox = new List<(BrokerMessage, long)>(items.Length / 3);
        for (var i = 0; i + 2 < items.Length; i += 3)
        {
            var row = RowCodec.DecodeRow(clientId, (byte[])items[i + 2]!);
            mailbox.Add((row.Message, (long)double.Parse((string)items[i + 1]!, CultureInfo.InvariantCulture)));
        }

        return mailbox;
    }

    public Task SetWillAsync(string clientId, string incarnation, byte[]? will, uint delaySeconds) =>
        Run(RedisScripts.Will, RedisKeys.Session(clientId), [incarnation, will ?? [], delaySeconds]);

    public async Task<(bool Owned, byte[]? Will, long DueAtUnixMs)> TakeOrphanAsync(string clientId, string deadIncarnation)
    {
        var r = (RedisResult[])(await Run(RedisScripts.Orphan, RedisKeys.Session(clientId), [deadIncarnation, Now()]))!;
        if (!r[2].IsNull && (string?)r[2] is { Length: > 0 } deadline)
        {
            // Its deadline, for ExpireOrphansAsync: also when its node died before it wrote it (connected then),
            // or between the session's write and this one.
            await _db.SortedSetAddAsync(RedisKeys.Expiries, clientId, long.Parse(deadline, CultureInfo.InvariantCulture));
        }

        if ((long)r[0] == 0)
        {
            return (false, null, 0);
        }

        var will = (byte[])r[1]!;
        return (true, will.Length == 0 ? null : will, (long)r[3]);
    }

    public async Task<byte[]?> TakeDueWillAsync(string clientId)
    {
        var will = (byte[])(await Run(RedisScripts.DueWill, RedisKeys.Session(clientId), []))!;
        return will.Length == 0 ? null : will;
    }

    public async Task<IReadOnlyList<(SessionRecord Record, string? Owner, int Queued, int Inflight)>> ListSessionsAsync(CancellationToken cancellationToken)
    {
        var sessions = new List<(SessionRecord, string?, int, int)>();
        foreach (var server in _redis.GetServers())
        {
            if (server.IsReplica || !server.IsConnected)
            {
                continue;
            }

            await foreach (var key in server.KeysAsync(pattern: "s:{c/*").WithCancellation(cancellationToken))
            {
                var name = (string)key!;
                var clientId = name["s:{c/".Length..name.LastIndexOf('}')];
                var fields = await _db.HashGetAsync(key, ["rec", "owner"]);
                if (fields[0].IsNull)
                {
                    continue; // a clean session: nothing kept
                }

                var keys = RedisKeys.Session(clientId);
                var queued = _db.SortedSetLengthAsync(keys[1]);
                var inflight = _db.HashLengthAsync(keys[3]);
                sessions.Add((RowCodec.DecodeSession(clientId, (byte[])fields[0]!), fields[1].IsNullOrEmpty ? null : (string)fields[1]!, (int)await queued, (int)await inflight));
            }
        }

        return sessions;
    }

    public Task ReleaseOwnershipAsync(string clientId, string incarnation) =>
        Run(RedisScripts.Release, RedisKeys.Session(clientId), [incarnation]);

    public async Task<string?> GetOwnerAsync(string clientId) => await _db.HashGetAsync(RedisKeys.SessionHash(clientId), "owner");

    public async Task<IReadOnlyList<string>> AppendRowsAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> rows, InboundPacket? inbound)
    {
        var written = await AppendEachAsync(message, rows);
        await WriteInboundAsync(inbound);
        return written;
    }

    public async Task<DirectResult> AppendDirectAsync(string clientId, BrokerMessage message, long mailboxExpiresAtUnixMs, InboundPacket? inbound, DirectAnnouncement? announce = null, bool mayOpenMailbox = true)
    {
        var blob = RowCodec.EncodeRow(message.Qos, false, null, message, MessageCodec.EncodeMessage(message));
        var r = (RedisResult[])(await Run(RedisScripts.Direct, RedisKeys.Session(clientId),
            [message.Id, blob, (int)message.Qos, mailboxExpiresAtUnixMs, Now(), MailboxCap,
             announce?.Channel ?? "", announce?.IfStored ?? [], announce?.Otherwise ?? [], mayOpenMailbox ? "1" : "0"]))!;
        var result = new DirectResult((long)r[0] == 1, (long)r[1] == 1, (long)r[2] == 1);
        if (result.Mailed)
        {
            IndexMailbox(clientId, mailboxExpiresAtUnixMs);
        }

        // Refused by the bound on mailboxes: nothing is kept, but the publisher's QoS 2 exchange goes on until its PUBREL.
        if (result.Stored || result.Mailed || result.Refused(message.Qos))
        {
            await WriteInboundAsync(inbound);
        }

        return result;
    }

    /// <summary>In the cluster's count of mailboxes until the mailbox's last message expires (a later expiry replaces an earlier one).</summary>
    void IndexMailbox(string clientId, long expiresAtUnixMs) =>
        _ = _db.SortedSetAddAsync(RedisKeys.Mailboxes, clientId, expiresAtUnixMs, SortedSetWhen.GreaterThan, CommandFlags.FireAndForget);

    public async Task<long> CountMailboxesAsync(long nowUnixMs)
    {
        await _db.SortedSetRemoveRangeByScoreAsync(RedisKeys.Mailboxes, double.NegativeInfinity, nowUnixMs);
        return await _db.SortedSetLengthAsync(RedisKeys.Mailboxes);
    }

    public Task AddReaderAsync(string route, string clientId, SubscriptionRecord subscription) =>
        Tracked(_db.HashSetAsync(RedisKeys.Readers(route), RedisKeys.ReaderField(clientId, subscription.Filter), MessageCodec.EncodeSubscriptions([subscription])));

    public Task RemoveReaderAsync(string route, string clientId, string filter) =>
        Tracked(_db.HashDeleteAsync(RedisKeys.Readers(route), RedisKeys.ReaderField(clientId, filter)));

    public async Task<IReadOnlyList<RouteReader>> ReadReadersAsync(string route)
    {
        var entries = await _db.HashGetAllAsync(RedisKeys.Readers(route));
        var readers = new List<RouteReader>(entries.Length);
        foreach (var entry in entries)
        {
            var subscription = MessageCodec.DecodeSubscriptions(entry.Value)[0];
            var field = (string)entry.Name!;
            // The filter is known from the value, so a '\n' inside a client id cannot split the field wrongly.
            readers.Add(new RouteReader(field[..^(subscription.Filter.Length + 1)], subscription));
        }

        return readers;
    }

    // ---- IBrokerStore ------------------------------------------------------------------------------

    /// <summary>
    /// Only the retained messages, and message id 0: in cluster mode a session is read when a node
    /// claims it (<see cref="LoadSessionAsync"/>), not at start, and message ids carry the node index.
    /// </summary>
    public async ValueTask<StoreSnapshot> LoadAsync(CancellationToken cancellationToken)
    {
        var snapshot = new StoreSnapshot();
        snapshot.Retained.AddRange(await LoadRetainedAsync());
        return snapshot;
    }

    public async Task<IReadOnlyList<BrokerMessage>> LoadRetainedAsync() =>
        [.. (await _db.HashGetAllAsync(RedisKeys.Retained)).Select(entry => MessageCodec.DecodeMessage(entry.Value!))];

    /// <summary>Held delivery marks first (a held QoS 2 PUBLISH waits for its mark), then everything issued before.</summary>
    public ValueTask FlushAsync()
    {
        _marks.WriteNow();
        return _writes.FlushAsync();
    }

    public ValueTask WaitForRoomAsync() => _writes.WaitForRoomAsync();

    /// <summary>
    /// A disconnected session's expiry deadline is kept with it and in <see cref="RedisKeys.Expiries"/>, so a
    /// survivor can expire it if its node died (<see cref="ExpireOrphansAsync"/>); its own node expires it otherwise.
    /// </summary>
    public void UpsertSession(SessionRecord session)
    {
        if (session.DisconnectedAtUnixMs > 0)
        {
            _marks.WriteNow(session.ClientId); // ahead of the disconnect: a reconnect to another node reads them
        }

        var deadline = session.DisconnectedAtUnixMs > 0 && session.ExpirySeconds != uint.MaxValue
            ? session.DisconnectedAtUnixMs + session.ExpirySeconds * 1000L
            : (long?)null;
        FencedWrite(session.ClientId, RedisScripts.Upsert, RowCodec.EncodeSession(session), session.ExpirySeconds, deadline is { } d ? d : "");
        _ = deadline is { } due
            ? _db.SortedSetAddAsync(RedisKeys.Expiries, session.ClientId, due, CommandFlags.FireAndForget)
            : _db.SortedSetRemoveAsync(RedisKeys.Expiries, session.ClientId, CommandFlags.FireAndForget);
    }

    public void DeleteSession(string clientId)
    {
        FencedWrite(clientId, RedisScripts.Delete);
        _ = _db.SortedSetRemoveAsync(RedisKeys.Expiries, clientId, CommandFlags.FireAndForget);
    }

    /// <summary>Deletes the due sessions that no node hosts (their node died); returns how many went.</summary>
    public async Task<int> ExpireOrphansAsync(int max = 100)
    {
        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        var expired = 0;
        foreach (var member in await _db.SortedSetRangeByScoreAsync(RedisKeys.Expiries, double.NegativeInfinity, now, take: max))
        {
            var clientId = (string)member!;
            var result = (long)await Run(RedisScripts.ExpireOrphan, RedisKeys.Session(clientId), [now], track: false);
            if (result == 2)
            {
                // Still owned: by a live node, which expires it itself, or by a dead one not swept yet (its deadline
                // may pass before its death is noticed). Kept, so that it is asked again once it has no owner.
                continue;
            }

            expired += (int)result;
            await _db.SortedSetRemoveAsync(RedisKeys.Expiries, clientId);
        }

        return expired;
    }

    public async ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null)
    {
        await AppendEachAsync(message, deliveries);
        await WriteInboundAsync(inbound);
    }

    public void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state)
    {
        if (state == DeliveryState.AwaitingAck)
        {
            // Held back: most are acknowledged before the mark would be written (DeliveryMarks).
            if (TryEpoch(clientId, out var fence, out _))
            {
                _marks.Hold(clientId, messageId, packetId, fence);
            }

            return;
        }

        _marks.Drop(clientId, messageId); // PUBREL: this state replaces the mark
        FencedWrite(clientId, RedisScripts.Update, messageId, $"{packetId}:{(int)state}");
    }

    /// <summary>Held back and written with the session's other changes of the tick (DeliveryMarks).</summary>
    public void RemoveDelivery(string clientId, long messageId)
    {
        if (TryEpoch(clientId, out var fence, out _))
        {
            _marks.Remove(clientId, messageId, fence);
        }
    }

    /// <summary>
    /// Writes one session's held changes in one script, unless this node claimed it again since (the claim wrote
    /// them first, and loaded its state after). Removals go also when another node holds the session now
    /// (<see cref="RedisScripts.Settle"/>): a client's acknowledgements are not undone by a takeover.
    /// </summary>
    void WriteHeld(string clientId, object? held, IReadOnlyList<DeliveryMarks.Change> changes)
    {
        _fences.TryGetValue(clientId, out var current);
        var fence = (Fence?)held;
        if (!ReferenceEquals(current, fence) || (fence is { IsFenced: true } && !changes.Any(c => c.Removed)))
        {
            return;
        }

        var args = new RedisValue[changes.Count * 2 + 1];
        args[0] = fence is null ? "" : fence.Epoch;
        for (var i = 0; i < changes.Count; i++)
        {
            args[2 * i + 1] = changes[i].MessageId;
            args[2 * i + 2] = changes[i].Removed ? "" : $"{changes[i].PacketId}:{(int)DeliveryState.AwaitingAck}";
        }

        _writes.Track(CheckFence(clientId, fence, Run(RedisScripts.Settle, RedisKeys.Session(clientId), args, track: false)), awaited: false);
    }

    public async Task WriteHeldAsync(string clientId)
    {
        _marks.WriteNow(clientId);
        await _writes.FlushAsync();
    }

    public async ValueTask<IReadOnlyList<QueuedMessage>> ReadQueueAsync(string clientId, int maxMessages, long maxBytes)
    {
        if (maxMessages <= 0)
        {
            return [];
        }

        _marks.WriteNow(clientId); // ahead of the read: what is in flight or acknowledged is not read back as queued

        var blobs = (RedisResult[])(await Run(RedisScripts.Read, RedisKeys.Session(clientId), [maxMessages, maxBytes]))!;
        return [.. blobs.Select(b => RowCodec.DecodeRow(clientId, (byte[])b!))];
    }

    public async ValueTask<(int Count, long Bytes)> DropOldestQueuedAsync(string clientId, int count, long bytes)
    {
        if (!TryEpoch(clientId, out var fence, out var epoch))
        {
            return (0, 0);
        }

        var r = (RedisResult[])(await Run(RedisScripts.DropOldest, RedisKeys.Session(clientId), [epoch, count, bytes]))!;
        if ((long)r[0] == 0)
        {
            await OnStaleAsync(clientId, fence);
            return (0, 0);
        }

        return ((int)(long)r[1], (long)r[2]);
    }

    public void SetInboundQos2(string clientId, ushort packetId, bool pending) =>
        FencedWrite(clientId, RedisScripts.Inbound, (int)packetId, pending ? "1" : "0");

    public async ValueTask AddToMailboxAsync(string clientId, BrokerMessage message, long expiresAtUnixMs, InboundPacket? inbound = null)
    {
        var blob = RowCodec.EncodeRow(message.Qos, false, null, message, MessageCodec.EncodeMessage(message));
        await Run(RedisScripts.MailboxAdd, RedisKeys.Session(clientId), [message.Id, blob, expiresAtUnixMs, Now(), MailboxCap]);
        IndexMailbox(clientId, expiresAtUnixMs);
        await WriteInboundAsync(inbound);
    }

    public void RemoveFromMailbox(string clientId, long messageId) =>
        _writes.Track(RemoveFromMailboxAsync(clientId, messageId), awaited: false);

    async Task RemoveFromMailboxAsync(string clientId, long messageId)
    {
        var left = (long)await Run(RedisScripts.MailboxRemove, RedisKeys.Session(clientId), [messageId], track: false).ConfigureAwait(false);
        if (left == 0)
        {
            // Emptied (moved into its session): out of the count. A message mailed meanwhile puts it back.
            await _db.SortedSetRemoveAsync(RedisKeys.Mailboxes, clientId).ConfigureAwait(false);
        }
    }

    public ValueTask SetRetainedAsync(BrokerMessage message) =>
        new(Tracked(_db.HashSetAsync(RedisKeys.Retained, message.Topic, MessageCodec.EncodeMessage(message))));

    public ValueTask DeleteRetainedAsync(string topic) => new(Tracked(_db.HashDeleteAsync(RedisKeys.Retained, topic)));

    public IReadOnlyList<(string Key, byte[]? Value)> LoadRecords(string kind) =>
        [.. _db.HashGetAll(RedisKeys.Records(kind)).Select(e => ((string)e.Name!, RowCodec.DecodeRecord(e.Value!))).OrderBy(e => e.Item1, StringComparer.Ordinal)];

    /// <summary>
    /// A deletion is kept as a tombstone, not an HDEL: the policy must see it at start (it overrides its
    /// configuration). Once durable, the change is announced to the other nodes (<see cref="ChangedElsewhere"/>).
    /// </summary>
    public async ValueTask SaveRecordAsync(string kind, string key, byte[]? value)
    {
        var stored = RowCodec.EncodeRecord(value);
        await Tracked(_db.HashSetAsync(RedisKeys.Records(kind), key, stored));
        await _redis.GetSubscriber().PublishAsync(RecordsChannel, RecordChange.Encode(_origin, kind, key, stored));
    }

    public event Action<string, string, byte[]?>? ChangedElsewhere
    {
        add
        {
            lock (_fences)
            {
                if (_recordsQueue is null)
                {
                    // Subscribed with the first listener; its SUBSCRIBE is answered before a change can be missed.
                    _recordsQueue = _redis.GetSubscriber().Subscribe(RecordsChannel);
                    _recordsQueue.OnMessage(OnRecordChanged);
                }

                _changedElsewhere += value;
            }
        }

        remove
        {
            lock (_fences)
            {
                _changedElsewhere -= value;
            }
        }
    }

    Action<string, string, byte[]?>? _changedElsewhere;

    /// <summary>Raised when a connection to Redis is restored: announcements may have been missed meanwhile.</summary>
    public event Action? Resync;

    void OnConnectionRestored(object? sender, ConnectionFailedEventArgs e)
    {
        try
        {
            Resync?.Invoke();
        }
        catch (Exception ex)
        {
            LogWriteFailed(_logger, "reloading records after Redis came back: " + ex.Message);
        }
    }
    ChannelMessageQueue? _recordsQueue;
    readonly string _origin = Guid.NewGuid().ToString("N");
    static readonly RedisChannel RecordsChannel = RedisChannel.Literal("ims:records");

    void OnRecordChanged(ChannelMessage message)
    {
        var (origin, kind, key, stored) = RecordChange.Decode((byte[])message.Message!);
        if (origin == _origin)
        {
            return;
        }

        try
        {
            _changedElsewhere?.Invoke(kind, key, RowCodec.DecodeRecord(stored));
        }
        catch (Exception ex)
        {
            LogWriteFailed(_logger, "applying a record changed on another node: " + ex.Message);
        }
    }

    /// <summary>A record change as announced to the other nodes.</summary>
    static class RecordChange
    {
        public static byte[] Encode(string origin, string kind, string key, byte[] stored)
        {
            using var stream = new MemoryStream();
            using var w = new BinaryWriter(stream);
            w.Write(origin);
            w.Write(kind);
            w.Write(key);
            w.Write(stored.Length);
            w.Write(stored);
            w.Flush();
            return stream.ToArray();
        }

        public static (string Origin, string Kind, string Key, byte[] Stored) Decode(byte[] data)
        {
            using var r = new BinaryReader(new MemoryStream(data));
            return (r.ReadString(), r.ReadString(), r.ReadString(), r.ReadBytes(r.ReadInt32()));
        }
    }

    public async ValueTask<string?> GetClientOwnerAsync(string clientId) => await _db.StringGetAsync(RedisKeys.Binding(clientId));

    public async ValueTask<string> BindClientOwnerAsync(string clientId, string userId) =>
        (string)(await _db.ScriptEvaluateAsync(RedisScripts.Bind, [RedisKeys.Binding(clientId)], [userId]))!;

    public async ValueTask<bool> ReleaseClientOwnerAsync(string clientId) => await _db.KeyDeleteAsync(RedisKeys.Binding(clientId));

    int _disposed;

    /// <summary>Once: the host disposes the store under each interface it is registered as.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        await _markTicks.DisposeAsync();
        _marks.WriteNow();
        await _writes.FlushAsync();
        _writes.ReleaseRoom();
        if (_ownsConnection)
        {
            await _redis.DisposeAsync();
        }
    }

    // ---- helpers -----------------------------------------------------------------------------------

    /// <summary>One script per recipient, all sent before any is awaited (pipelined); the client ids that got a row.</summary>
    async Task<IReadOnlyList<string>> AppendEachAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> rows)
    {
        if (rows.Count == 0)
        {
            return [];
        }

        var encoded = MessageCodec.EncodeMessage(message);
        var calls = new Task<RedisResult>[rows.Count];
        for (var i = 0; i < rows.Count; i++)
        {
            var row = rows[i];
            var blob = RowCodec.EncodeRow(row.Qos, row.Retain, row.SubscriptionIds, message, encoded);
            calls[i] = Run(RedisScripts.Append, RedisKeys.Session(row.ClientId), [message.Id, blob]);
        }

        await Task.WhenAll(calls);
        var written = new List<string>(rows.Count);
        for (var i = 0; i < rows.Count; i++)
        {
            if ((long)calls[i].Result == 1)
            {
                written.Add(rows[i].ClientId);
            }
        }

        return written;
    }

    /// <summary>
    /// The publisher's QoS 2 packet id, on its own slot, after its rows: not one commit across slots, so
    /// a crash between the two may route the message once more when the client resends it.
    /// </summary>
    async Task WriteInboundAsync(InboundPacket? inbound)
    {
        if (inbound is not { } packet || !TryEpoch(packet.ClientId, out var fence, out var epoch))
        {
            return;
        }

        var r = (RedisResult[])(await Run(RedisScripts.Inbound, RedisKeys.Session(packet.ClientId), [epoch, (int)packet.PacketId, "1"]))!;
        if ((long)r[0] == 0)
        {
            await OnStaleAsync(packet.ClientId, fence);
        }
    }

    /// <summary>A session-owned write nobody awaits: issued now (call order is Redis order), checked when answered.</summary>
    void FencedWrite(string clientId, string script, params RedisValue[] args)
    {
        if (!TryEpoch(clientId, out var fence, out var epoch))
        {
            return;
        }

        var call = Run(script, RedisKeys.Session(clientId), [epoch, .. args], track: false);
        _writes.Track(CheckFence(clientId, fence, call), awaited: false);
    }

    async Task CheckFence(string clientId, Fence? fence, Task<RedisResult> call)
    {
        var r = (RedisResult[])(await call.ConfigureAwait(false))!;
        if ((long)r[0] == 0)
        {
            await OnStaleAsync(clientId, fence);
        }
    }

    /// <summary>The epoch this node writes with ('' when it never claimed the client id); false once fenced: nothing to send.</summary>
    bool TryEpoch(string clientId, out Fence? fence, out RedisValue epoch)
    {
        if (!_fences.TryGetValue(clientId, out fence))
        {
            epoch = "";
            return true;
        }

        epoch = fence.Epoch;
        return !fence.IsFenced;
    }

    /// <summary>
    /// A refused write means another node owns the session, unless this node claimed it again since: the
    /// newer claim is in <see cref="_fences"/> already, or it ran first in Redis and its answer is not handled
    /// yet (a held mark or a close's write can land in that moment). Then nothing is fenced. The callers'
    /// tasks (tracked) complete after this, so a flush sees the outcome.
    /// </summary>
    async Task OnStaleAsync(string clientId, Fence? fence)
    {
        if (fence is not null && _fences.TryGetValue(clientId, out var current) && !ReferenceEquals(current, fence))
        {
            return; // the refused write was the replaced connection's
        }

        if (fence is not null)
        {
            try
            {
                if (await GetOwnerAsync(clientId).ConfigureAwait(false) == fence.Incarnation)
                {
                    return;
                }
            }
            catch (Exception ex) when (ex is RedisException or TimeoutException)
            {
                // Unsure: fence, as before.
            }
        }

        if (fence is null || fence.MarkFenced())
        {
            LogFenced(_logger, clientId, fence?.Epoch ?? 0);
            Fenced?.Invoke(clientId);
        }
    }

    Task<RedisResult> Run(string script, RedisKey[] keys, RedisValue[] args, bool track = true)
    {
        var call = _db.ScriptEvaluateAsync(script, keys, args);
        if (track)
        {
            _writes.Track(call, awaited: true);
        }

        return call;
    }

    Task Tracked(Task call)
    {
        _writes.Track(call, awaited: true);
        return call;
    }

    RedisValue Now() => _time.GetUtcNow().ToUnixTimeMilliseconds();

    static (ushort PacketId, DeliveryState State) ParseInflight(string value)
    {
        var colon = value.IndexOf(':', StringComparison.Ordinal);
        return (ushort.Parse(value.AsSpan(0, colon), CultureInfo.InvariantCulture), (DeliveryState)byte.Parse(value.AsSpan(colon + 1), CultureInfo.InvariantCulture));
    }

    /// <summary>The epoch of this node's claim on one client id, and whether a write with it was refused.</summary>
    sealed class Fence(long epoch, string incarnation)
    {
        int _fenced;

        public long Epoch { get; } = epoch;

        /// <summary>The node run that claimed with this epoch.</summary>
        public string Incarnation { get; } = incarnation;

        public bool IsFenced => Volatile.Read(ref _fenced) == 1;

        /// <summary>True the first time only: <see cref="Fenced"/> is raised once per claim.</summary>
        public bool MarkFenced() => Interlocked.Exchange(ref _fenced, 1) == 0;
    }

    [LoggerMessage(4101, LogLevel.Error, "Redis store: a write nobody awaited failed ({Error}); the next flush fails")]
    static partial void LogWriteFailed(ILogger logger, string error);

    [LoggerMessage(4102, LogLevel.Warning, "Redis store: session {ClientId} is owned elsewhere now (epoch {Epoch} is stale); its writes from this node are refused")]
    static partial void LogFenced(ILogger logger, string clientId, long epoch);
}
