using Broker.Engine.Connections;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Sessions;

/// <summary>
/// The state MQTT keeps per client id [MQTT-4.1]: subscriptions, the outbound queue, messages in
/// flight and inbound QoS 2 packet ids. It outlives connections (persistent sessions) and has one
/// writer at a time: every member below runs under <c>_gate</c>, which is never held while awaiting.
/// The connection's writer pulls from the queue, so the queue is the only buffer per client: a slow
/// client fills its own queue and loses its own oldest messages, nobody else's.
/// </summary>
public sealed class Session
{
    readonly object _gate = new();
    readonly EngineContext _engine;
    readonly Dictionary<string, Subscription> _subscriptions = new(StringComparer.Ordinal);
    readonly Queue<Delivery> _queue = new(); // all of a clean session's queue; the window of a persistent one's
    readonly LinkedList<Inflight> _inflight = new();
    readonly Dictionary<ushort, LinkedListNode<Inflight>> _inflightById = [];
    HashSet<ushort>? _inboundQos2; // created by the first inbound QoS 2 publish: most chat clients never send one
    MqttConnection? _connection;
    ushort _lastPacketId;
    int _sendQuota = MqttProtocolOptions.DefaultMaxInflightMessages; // set by each Attach
    bool _resendInflight;
    Task? _heldIdsDurable; // outbound QoS 2 packet ids on their way to the disk: their PUBLISH waits (see TakeOutbound)
    long _lastDropLogMs;

    // A persistent session's QoS 1/2 queue waits in the store (contract §6); memory holds a window of
    // it while the client is connected. These count all of it, for its limits.
    long _queueBytes;
    int _storedCount;
    long _storedBytes;
    bool _spilled; // rows wait in the store that are not in _queue: read back (paged in) when _queue runs low
    bool _paging; // a page is being read: what arrives meanwhile waits in the store behind it
    bool _dropping; // the store is dropping the oldest rows (a limit was passed)
    int _droppedSinceConnected; // told in the next v5 CONNACK (ims-dropped)

    internal Session(EngineContext engine, string clientId, ClientPrincipal principal)
    {
        _engine = engine;
        ClientId = clientId;
        Principal = principal;
    }

    public string ClientId { get; }

    /// <summary>The identity of the connection that owns the session now.</summary>
    public ClientPrincipal Principal { get; private set; }

    /// <summary>0: the session ends with its connection; uint.MaxValue: never expires [MQTT-3.1.2-23].</summary>
    public uint ExpirySeconds { get; private set; }

    public bool IsPersistent => ExpirySeconds > 0;

    public bool IsConnected => Volatile.Read(ref _connection) is not null;

    public long DisconnectedAtUnixMs { get; private set; }

    /// <summary>
    /// A will waiting for its v5 Will Delay Interval; cancelled if the client comes back first [MQTT-3.1.3-9].
    /// Its expiry interval starts when it is published, so it is kept here as an interval.
    /// </summary>
    internal (BrokerMessage Message, ClientPrincipal Sender, long DueUnixMs, uint ExpirySeconds)? PendingWill { get; set; }

    internal bool IsDiscarded { get => Volatile.Read(ref _discarded); private set => Volatile.Write(ref _discarded, value); }

    bool _discarded;

    /// <summary>Messages waiting: a persistent session's QoS 1/2 queue in the store and in memory, a clean session's in memory.</summary>
    public int QueuedCount
    {
        get
        {
            lock (_gate)
            {
                return IsPersistent ? _storedCount : _queue.Count;
            }
        }
    }

    /// <summary>Messages held in memory: the window of a persistent session's queue (nothing while it is offline), all of a clean one's.</summary>
    public int WindowCount
    {
        get
        {
            lock (_gate)
            {
                return _queue.Count;
            }
        }
    }

    public int InflightCount
    {
        get
        {
            lock (_gate)
            {
                return _inflight.Count;
            }
        }
    }

    internal MqttConnection? Connection => Volatile.Read(ref _connection);

    internal void Attach(MqttConnection connection, ClientPrincipal principal, uint expirySeconds, int sendQuota)
    {
        lock (_gate)
        {
            _connection = connection;
            DisconnectedAtUnixMs = 0; // connected: after a crash, expiry counts from the restart, not an older disconnect
            Principal = principal;
            ExpirySeconds = expirySeconds;
            _sendQuota = sendQuota;
            _resendInflight = _inflight.Count > 0; // [MQTT-4.4.0-1]: resend unacknowledged PUBLISH and PUBREL
            PendingWill = null;
        }

        PersistRecord();
    }

    /// <summary>Detaches the connection if it is still the current one (a takeover may have replaced it).</summary>
    internal bool Detach(MqttConnection connection, long nowUnixMs)
    {
        lock (_gate)
        {
            if (!ReferenceEquals(_connection, connection))
            {
                return false;
            }

            _connection = null;
            DisconnectedAtUnixMs = nowUnixMs;
            if (IsPersistent)
            {
                // Offline, the queue waits in the store only; memory keeps just what is in flight. QoS 0 is
                // not kept for an offline client.
                while (_queue.TryDequeue(out var d))
                {
                    _spilled |= d.Stored;
                }

                _queueBytes = 0;
            }
        }

        PersistRecord();
        return true;
    }

    internal void SetExpiry(uint expirySeconds)
    {
        lock (_gate)
        {
            ExpirySeconds = expirySeconds;
        }

        PersistRecord();
    }

    internal bool IsExpired(long nowUnixMs) =>
        !IsConnected && ExpirySeconds != uint.MaxValue && nowUnixMs - DisconnectedAtUnixMs >= ExpirySeconds * 1000L;

    /// <summary>Ends the session: subscriptions leave the index and queued messages are released.</summary>
    internal void Discard()
    {
        Leave(ended: true);
        _engine.Store.DeleteSession(ClientId);
    }

    /// <summary>
    /// Another node took the session over: it leaves this node's memory and index, and its durable state
    /// (which now belongs to that node) stays as it is.
    /// </summary>
    internal void Forget() => Leave(ended: false);

    void Leave(bool ended)
    {
        lock (_gate)
        {
            IsDiscarded = true;

            // The index changes under the session's lock, here and in Subscribe: a SUBSCRIBE racing with
            // the end of its session can then never leave an entry behind.
            foreach (var s in _subscriptions.Values)
            {
                _engine.Index.Remove(s);
                _engine.Cluster.SubscriptionChanged(this, s, added: false, ended);
            }

            _subscriptions.Clear();
            _queue.Clear();
            _queueBytes = _storedBytes = _storedCount = 0;
            _spilled = false;
            _inflight.Clear();
            _inflightById.Clear();
            _inboundQos2?.Clear();
        }

        _engine.Cluster.SessionLeft(this, ended);
    }

    // ---- subscriptions -------------------------------------------------------------------------

    /// <summary>Adds or replaces a subscription [MQTT-3.8.4-3]; returns whether it existed before.</summary>
    internal bool Subscribe(Subscription subscription)
    {
        Subscription? previous;
        lock (_gate)
        {
            if (IsDiscarded)
            {
                return false; // ended meanwhile (takeover, admin): its connection is closing
            }

            _subscriptions.TryGetValue(subscription.Key, out previous);
            _subscriptions[subscription.Key] = subscription;
            if (previous is not null)
            {
                _engine.Index.Remove(previous);
                _engine.Cluster.SubscriptionChanged(this, previous, added: false);
            }

            _engine.Index.Add(subscription);
            _engine.Cluster.SubscriptionChanged(this, subscription, added: true);
        }

        PersistRecord();
        return previous is not null;
    }

    long _readRulesSeen; // under _gate: the policy's ReadRulesVersion the in-memory queue was last checked against

    internal int SubscriptionCount
    {
        get
        {
            lock (_gate)
            {
                return _subscriptions.Count;
            }
        }
    }

    internal Subscription? FindSubscription(string key)
    {
        lock (_gate)
        {
            return _subscriptions.GetValueOrDefault(key);
        }
    }

    internal bool HasSubscription(string key)
    {
        lock (_gate)
        {
            return _subscriptions.ContainsKey(key);
        }
    }

    internal bool Unsubscribe(string key)
    {
        Subscription? removed;
        lock (_gate)
        {
            _subscriptions.Remove(key, out removed);
        }

        if (removed is null)
        {
            return false;
        }

        _engine.Index.Remove(removed);
        _engine.Cluster.SubscriptionChanged(this, removed, added: false);
        PersistRecord();
        return true;
    }

    public IReadOnlyList<Subscription> GetSubscriptions()
    {
        lock (_gate)
        {
            return [.. _subscriptions.Values];
        }
    }

    // ---- outbound ------------------------------------------------------------------------------

    /// <summary>
    /// Queues a message for this client. QoS 0 is not kept for an offline client (as mosquitto's
    /// default). A clean session's full queue drops its oldest entry; a persistent session's QoS 1/2
    /// message is already in the store (the router wrote its row first), so past the window it just
    /// waits there, and only the offline queue's limits drop its oldest. Drops are counted, logged and
    /// never resent.
    /// </summary>
    internal bool Enqueue(in Delivery delivery)
    {
        MqttConnection? signal = null;
        List<Delivery>? dropped = null;
        Task<(int Count, long Bytes)>? storeDrop = null;
        lock (_gate)
        {
            var pageMayStart = delivery.Stored ? RowArrived() : null;
            if (IsDiscarded || (_connection is null && delivery.Qos == MqttQualityOfServiceLevel.AtMostOnce))
            {
                return false;
            }

            var size = SizeOf(delivery);
            if (delivery.Stored)
            {
                signal = TakeRowLocked(delivery, mayJoinWindow: true, ref dropped, out storeDrop) ? _connection : pageMayStart;
            }
            else if (IsPersistent && WindowFull(size))
            {
                (dropped ??= []).Add(delivery); // QoS 0 to a persistent session with a full window: this one goes
            }
            else
            {
                while (WindowFull(size))
                {
                    (dropped ??= []).Add(Pop());
                }

                Push(delivery, size);
                signal = _connection;
            }
        }

        AfterQueued(dropped, "queue full", storeDrop, signal);
        return true;
    }

    /// <summary>
    /// Under the lock: a row the store has for this session joins the queue's counts, and the window when
    /// <paramref name="mayJoinWindow"/>, the client is here, nothing waits in the store before it and there is
    /// room; otherwise it waits in the store behind the rest, in order. Then the offline queue's limits apply.
    /// True when it joined the window.
    /// </summary>
    bool TakeRowLocked(in Delivery delivery, bool mayJoinWindow, ref List<Delivery>? dropped, out Task<(int Count, long Bytes)>? storeDrop)
    {
        var size = SizeOf(delivery);
        _storedCount++;
        _storedBytes += size;
        var joined = mayJoinWindow && _connection is not null && !_spilled && !_paging && !WindowFull(size);
        if (joined)
        {
            Push(delivery, size);
        }
        else
        {
            _spilled = true; // behind what waits in the store, in order
        }

        storeDrop = TrimStored(ref dropped);
        return joined;
    }

    /// <summary>Outside the lock, after a queue change: what it dropped is told, a trim of the store followed, the writer woken.</summary>
    void AfterQueued(List<Delivery>? dropped, string reason, Task<(int Count, long Bytes)>? storeDrop, MqttConnection? signal)
    {
        Dropped(dropped, reason);
        if (storeDrop is not null)
        {
            _ = StoredDroppedAsync(storeDrop);
        }

        signal?.SignalWrite();
    }

    static long SizeOf(in Delivery d) => d.Message.Payload.Length;

    // Rows handed to the store for this session whose delivery has not reached Enqueue yet (the router
    // writes the row first; a held QoS 2 message waits for its commit in between). A page read while one
    // is on its way could read that row and then get it from Enqueue too: pages wait for none to be left.
    int _rowsOnTheirWay;

    /// <summary>A row for this session is about to be handed to the store; its <see cref="Enqueue"/> (or <see cref="RowAbandoned"/>) follows.</summary>
    internal void RowAppending()
    {
        lock (_gate)
        {
            _rowsOnTheirWay++;
        }
    }

    /// <summary>The row's message will not come (its commit failed).</summary>
    internal void RowAbandoned()
    {
        MqttConnection? signal;
        lock (_gate)
        {
            signal = RowArrived();
        }

        signal?.SignalWrite();
    }

    /// <summary>
    /// A row another node wrote for this session (cluster). When nothing of this session waits in the
    /// store and no page read is under way, it joins the window at once, as a local row does; otherwise it
    /// is read from the store with the rest, in the store's order. A row a recent page already brought
    /// (its message from the other node arrived after that page) is not taken twice.
    /// </summary>
    internal void StoredElsewhere(in Delivery delivery)
    {
        MqttConnection? signal;
        List<Delivery>? dropped = null;
        Task<(int Count, long Bytes)>? storeDrop;
        lock (_gate)
        {
            if (IsDiscarded || WasPagedIn(delivery.Message.Id))
            {
                return;
            }

            // A local row on its way would be read by a page too: this one then waits in the store with it.
            signal = TakeRowLocked(delivery, mayJoinWindow: _rowsOnTheirWay == 0, ref dropped, out storeDrop)
                || PageDue() ? _connection : null;
        }

        AfterQueued(dropped, "offline queue limit", storeDrop, signal);
    }

    /// <summary>
    /// Rows may wait in the store that this session was not told of (cluster: a message from another node was
    /// missed while the link was cut): read the queue from the store again once the window runs dry.
    /// </summary>
    internal void RecheckStore()
    {
        MqttConnection? signal;
        lock (_gate)
        {
            if (IsDiscarded)
            {
                return;
            }

            _spilled = true;
            signal = PageDue() ? _connection : null;
        }

        signal?.SignalWrite();
    }

    internal bool HasQos1Or2Subscription
    {
        get
        {
            lock (_gate)
            {
                foreach (var s in _subscriptions.Values)
                {
                    if (s.Qos != MqttQualityOfServiceLevel.AtMostOnce)
                    {
                        return true;
                    }
                }

                return false;
            }
        }
    }

    // The message ids of the last two pages read from the store (cluster: a row's message from another node
    // may arrive after the page that already brought the row). Under _gate.
    HashSet<long>? _pagedIn;
    HashSet<long>? _pagedBefore;

    bool WasPagedIn(long messageId) => (_pagedIn?.Contains(messageId) ?? false) || (_pagedBefore?.Contains(messageId) ?? false);

    void RememberPage(IReadOnlyList<QueuedMessage> page)
    {
        var ids = _pagedBefore ?? new HashSet<long>();
        ids.Clear();
        foreach (var (row, _) in page)
        {
            ids.Add(row.MessageId);
        }

        _pagedBefore = _pagedIn;
        _pagedIn = ids;
    }

    /// <summary>Under the lock: one row less on its way; the connection to wake when a page read may start now.</summary>
    MqttConnection? RowArrived()
    {
        _rowsOnTheirWay = Math.Max(0, _rowsOnTheirWay - 1);
        return PageDue() ? _connection : null;
    }

    /// <summary>
    /// Under the lock: rows wait in the store, no page read is under way or could read a row still on its way, and
    /// half the window or less is left, so the writer's next <see cref="TakeOutbound"/> reads the next page. The one
    /// test for "page now": whoever changes one of these wakes the writer when it holds.
    /// </summary>
    bool PageDue() =>
        _spilled && !_paging && _rowsOnTheirWay == 0
        && _queue.Count <= _engine.Options.MaxQueuedMessages / 2 && _queueBytes <= _engine.Options.MaxQueuedBytes / 2;

    /// <summary>A page read under way: the ids that were in the window when it was asked for (it reads them too), and its limits.</summary>
    sealed record PageRead(HashSet<long>? InWindow, int MaxMessages, long MaxBytes);

    bool WindowFull(long size) =>
        _queue.Count > 0 && (_queue.Count >= _engine.Options.MaxQueuedMessages || _queueBytes + size > _engine.Options.MaxQueuedBytes);

    void Push(in Delivery d, long size)
    {
        _queue.Enqueue(d);
        _queueBytes += size;
    }

    /// <summary>Takes the oldest message out of memory (and out of the counts when it is stored).</summary>
    Delivery Pop()
    {
        var d = _queue.Dequeue();
        _queueBytes -= SizeOf(d);
        if (d.Stored)
        {
            Uncount(d);
        }

        return d;
    }

    /// <summary>A stored message leaves the offline queue's counts (sent, dropped or withheld).</summary>
    void Uncount(in Delivery d)
    {
        _storedCount--;
        _storedBytes -= SizeOf(d);
    }

    /// <summary>
    /// The offline queue's limits: the oldest go first. They are in memory while a window is there;
    /// otherwise the store drops them: that is handed to the store here, under the lock, so it is
    /// ordered with the session's page reads; the caller awaits it outside the lock.
    /// </summary>
    Task<(int Count, long Bytes)>? TrimStored(ref List<Delivery>? dropped)
    {
        var limits = _engine.Options.OfflineQueue;
        while (_storedCount > limits.MaxMessages || _storedBytes > limits.MaxBytes)
        {
            if (_queue.Count > 0)
            {
                (dropped ??= []).Add(Pop());
                continue;
            }

            if (!_spilled || _paging || _dropping)
            {
                return null; // nothing to drop now, or the store is already at it
            }

            _dropping = true;
            return _engine.Store.DropOldestQueuedAsync(ClientId, Math.Max(0, _storedCount - limits.MaxMessages), Math.Max(0, _storedBytes - limits.MaxBytes)).AsTask();
        }

        return null;
    }

    async Task StoredDroppedAsync(Task<(int Count, long Bytes)> drop)
    {
        (int Count, long Bytes) gone = (0, 0);
        try
        {
            gone = await drop;
        }
        catch (Exception ex)
        {
            EngineLog.StoreFailed(_engine.Logger, "(offline queue of " + ClientId + ")", ex);
        }

        List<Delivery>? dropped = null;
        Task<(int Count, long Bytes)>? again = null;
        lock (_gate)
        {
            _dropping = false;
            _storedCount = Math.Max(0, _storedCount - gone.Count);
            _storedBytes = Math.Max(0, _storedBytes - gone.Bytes);
            _droppedSinceConnected += gone.Count;
            if (gone.Count > 0 && !IsDiscarded)
            {
                again = TrimStored(ref dropped);
            }
        }

        if (gone.Count > 0)
        {
            _engine.Counters.MessageDropped(gone.Count);
            LogDrop("(queued in the store)", "offline queue limit", gone.Count);
        }

        Dropped(dropped, "offline queue limit");
        if (again is not null)
        {
            await StoredDroppedAsync(again);
        }
    }

    /// <summary>
    /// The window ran low and more waits in the store: the next page of it joins the window behind what is
    /// left there. What arrives meanwhile goes to the store behind it, so order is kept and nothing is read twice.
    /// </summary>
    async Task PagedInAsync(Task<IReadOnlyList<QueuedMessage>> read, PageRead asked)
    {
        IReadOnlyList<QueuedMessage> page;
        try
        {
            page = await read;
        }
        catch (Exception ex)
        {
            EngineLog.StoreFailed(_engine.Logger, "(offline queue of " + ClientId + ")", ex);
            lock (_gate)
            {
                _paging = false;
                _spilled = true; // tried again at the next write
            }

            return;
        }

        List<Delivery>? expired = null;
        List<Delivery>? withheld = null;
        MqttConnection? signal;
        lock (_gate)
        {
            _paging = false;
            if (IsDiscarded)
            {
                return;
            }

            RememberPage(page);
            long pageBytes = 0;
            foreach (var (_, message) in page)
            {
                pageBytes += message.Payload.Length;
            }

            if (page.Count >= asked.MaxMessages || pageBytes >= asked.MaxBytes)
            {
                _spilled = true; // a full page: more may wait
            }
            else if (page.Count == 0 && !_spilled && _queue.Count == 0)
            {
                _storedCount = 0; // the store has nothing queued: the counts follow it
                _storedBytes = 0;
            }

            signal = _connection;
            if (signal is null)
            {
                _spilled = true; // gone meanwhile: it all stays in the store
                return;
            }

            var now = _engine.NowUnixMs;
            foreach (var (row, message) in page)
            {
                if (asked.InWindow?.Contains(row.MessageId) == true)
                {
                    continue; // in the window when the page was asked for (sent meanwhile, or still there)
                }

                // Read back from the store, each row passes the read check again, with the session's owner
                // now: a rule may have changed, and a row written for an ended session of the same client id
                // (it raced with the end) must never reach another user [engine invariant 4].
                var d = new Delivery(message, row.Qos, row.Retain, row.SubscriptionIds is null ? null : [.. row.SubscriptionIds], Stored: true);
                if (Expired(d, now))
                {
                    Uncount(d);
                    (expired ??= []).Add(d);
                    continue;
                }

                if (!_engine.Router.CanRead(this, message))
                {
                    Uncount(d);
                    (withheld ??= []).Add(d);
                    continue;
                }

                Push(d, SizeOf(d));
            }
        }

        Dropped(expired, "expired");
        Withheld(withheld);
        signal.SignalWrite();
    }

    /// <summary>Expired by its publisher (v5 Message Expiry), or a stored message older than Broker:OfflineQueue:Ttl.</summary>
    bool Expired(in Delivery d, long nowUnixMs)
    {
        if (d.Message.IsExpired(nowUnixMs))
        {
            return true;
        }

        var madeAt = MessageIds.MadeAtUnixMs(d.Message.Id);
        return madeAt > 0 && d.Stored && nowUnixMs - madeAt > (long)_engine.Options.OfflineQueue.Ttl.TotalMilliseconds;
    }

    /// <summary>The count for the next v5 CONNACK's ims-dropped, reset: what was dropped since the client was last connected.</summary>
    internal int TakeDroppedCount()
    {
        lock (_gate)
        {
            var n = _droppedSinceConnected;
            _droppedSinceConnected = 0;
            return n;
        }
    }

    /// <summary>
    /// Moves what may be sent now into <paramref name="batch"/>: first the in-flight messages owed
    /// after a reconnect (PUBLISH with DUP, or PUBREL), then queued messages while the send quota
    /// (the client's Receive Maximum [MQTT-4.9.0-2]) allows. Returns true when more is waiting.
    /// </summary>
    internal bool TakeOutbound(MqttConnection caller, List<Outbound> batch, int max, long nowUnixMs)
    {
        List<Delivery>? expired = null;
        List<Delivery>? withheld = null;

        // The read rules changed (a block list): what waits in memory passes the read check again before it goes.
        var rules = _engine.Policy.ReadRulesVersion;
        Task? heldIdsDurable = null;
        Task<IReadOnlyList<QueuedMessage>>? pageIn = null;
        PageRead? page = null;
        lock (_gate)
        {
            if (!ReferenceEquals(_connection, caller))
            {
                return false; // taken over: the new connection sends from here on
            }

            if (_heldIdsDurable is { } held)
            {
                if (!held.IsCompleted)
                {
                    return false; // its completion wakes the writer; nothing overtakes the held messages
                }

                _heldIdsDurable = null;
                if (!_resendInflight)
                {
                    SendHeld(batch);
                }
            }

            if (_resendInflight)
            {
                _resendInflight = false;
                for (var node = _inflight.First; node is not null; node = node.Next)
                {
                    var entry = node.Value;
                    node.Value = entry with { Held = false };
                    batch.Add(entry.State == DeliveryState.AwaitingComp
                        ? Outbound.Of(new MqttPubRelPacket { PacketIdentifier = entry.PacketId })
                        : Outbound.Publish(entry.Delivery, entry.PacketId, dup: true));
                }
            }

            while (batch.Count < max && _queue.TryPeek(out var next))
            {
                if (heldIdsDurable is not null && next.Qos != MqttQualityOfServiceLevel.ExactlyOnce)
                {
                    break; // keeps the order: what follows a held QoS 2 message waits with it
                }

                if (Expired(next, nowUnixMs))
                {
                    (expired ??= []).Add(Pop());
                    continue;
                }

                if (rules != _readRulesSeen && !_engine.Router.CanRead(this, next.Message))
                {
                    (withheld ??= []).Add(Pop());
                    continue;
                }

                if (next.Qos == MqttQualityOfServiceLevel.AtMostOnce)
                {
                    Pop();
                    batch.Add(Outbound.Publish(next, 0, dup: false));
                    continue;
                }

                if (_inflight.Count >= _sendQuota)
                {
                    break;
                }

                Pop();
                var id = NextPacketId();

                // Outbound QoS 2 of a persistent session: the packet id must be durable before the PUBLISH
                // leaves, or after a crash the message would go out again under a new id (a duplicate) and
                // the old id be reused while the client still holds it (a loss) [engine invariant 2].
                var hold = IsPersistent && next.Qos == MqttQualityOfServiceLevel.ExactlyOnce;
                var node = _inflight.AddLast(new Inflight(id, next, DeliveryState.AwaitingAck, hold));
                _inflightById[id] = node;
                if (IsPersistent)
                {
                    _engine.Store.UpdateDelivery(ClientId, next.Message.Id, id, DeliveryState.AwaitingAck);
                }

                if (hold)
                {
                    heldIdsDurable = Task.CompletedTask; // the barrier is taken once, after the loop
                }
                else
                {
                    batch.Add(Outbound.Publish(next, id, dup: false));
                }
            }

            if (heldIdsDurable is not null)
            {
                // One commit covers every id handed out above: the store writes in order.
                _heldIdsDurable = heldIdsDurable = _engine.Store.FlushAsync().AsTask();
            }

            if (_queue.Count == 0)
            {
                _readRulesSeen = rules; // all checked (what pages in from the store is checked as it comes)
            }

            // The window runs low and more waits in the store: read the next page now, so that it is here before
            // the window is empty and a subscriber that is behind never waits for the store's queue. Read after the
            // in-flight marks above, so what was just taken is not read again, and handed to the store under the
            // lock, so it is ordered with the queue's trims. The window's own rows are still queued in the store,
            // at its head: they count within the page, which is one window, and are left out when it comes back,
            // so the window never holds more than Broker:MaxQueuedMessages / MaxQueuedBytes.
            if (PageDue())
            {
                _spilled = false;
                _paging = true;
                page = new PageRead(_queue.Count == 0 ? null : [.. _queue.Select(d => d.Message.Id)],
                    _engine.Options.MaxQueuedMessages, _engine.Options.MaxQueuedBytes);
                pageIn = _engine.Store.ReadQueueAsync(ClientId, page.MaxMessages, page.MaxBytes).AsTask();
            }
        }

        if (pageIn is not null)
        {
            _ = PagedInAsync(pageIn, page!);
        }

        heldIdsDurable?.ContinueWith(static (_, state) => ((Session)state!).Connection?.SignalWrite(), this, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        Dropped(expired, "expired");
        Withheld(withheld);
        return batch.Count >= max;
    }

    /// <summary>The QoS 2 PUBLISHes whose packet ids are durable now (a failed commit was logged by the store; they go all the same).</summary>
    void SendHeld(List<Outbound> batch)
    {
        for (var node = _inflight.First; node is not null; node = node.Next)
        {
            if (node.Value.Held)
            {
                node.Value = node.Value with { Held = false };
                batch.Add(Outbound.Publish(node.Value.Delivery, node.Value.PacketId, dup: false));
            }
        }
    }

    /// <summary>Completes when every change this session has handed to the store so far is durable (at once when it is not persistent).</summary>
    internal Task Committed() => IsPersistent ? _engine.Store.FlushAsync().AsTask() : Task.CompletedTask;

    /// <summary>
    /// PUBACK (QoS 1) or PUBCOMP (QoS 2): the message is done. False for an unknown id. An acknowledged
    /// QoS 1 delivery is reported (<see cref="EngineContext.Acknowledged"/>) before its removal goes to the
    /// store: a crash can repeat that report, never lose it.
    /// </summary>
    internal bool Complete(ushort packetId, DeliveryState expected, bool acknowledged = true)
    {
        long messageId;
        BrokerMessage message;
        MqttConnection? signal;
        lock (_gate)
        {
            if (!_inflightById.TryGetValue(packetId, out var node) || node.Value.State != expected)
            {
                return false;
            }

            _inflightById.Remove(packetId);
            _inflight.Remove(node);
            message = node.Value.Delivery.Message;
            messageId = message.Id;
            signal = _queue.Count > 0 || _spilled ? _connection : null; // a freed in-flight slot matters only if something waits
        }

        if (acknowledged && expected == DeliveryState.AwaitingAck)
        {
            _engine.Acknowledged(message, Principal);
        }

        if (IsPersistent)
        {
            _engine.Store.RemoveDelivery(ClientId, messageId);
        }

        signal?.SignalWrite();
        return true;
    }

    /// <summary>
    /// PUBREC: remember "released pending" so a reconnect resumes with PUBREL [MQTT-4.3.3-4]. The first
    /// PUBREC of a delivery is reported (<see cref="EngineContext.Acknowledged"/>), outside the lock.
    /// </summary>
    internal bool Released(ushort packetId)
    {
        BrokerMessage? acknowledged = null;
        lock (_gate)
        {
            if (!_inflightById.TryGetValue(packetId, out var node) || node.Value.Delivery.Qos != MqttQualityOfServiceLevel.ExactlyOnce)
            {
                return false;
            }

            if (node.Value.State == DeliveryState.AwaitingAck)
            {
                node.Value = node.Value with { State = DeliveryState.AwaitingComp };
                acknowledged = node.Value.Delivery.Message;
                if (IsPersistent)
                {
                    _engine.Store.UpdateDelivery(ClientId, node.Value.Delivery.Message.Id, packetId, DeliveryState.AwaitingComp);
                }
            }
        }

        if (acknowledged is not null)
        {
            _engine.Acknowledged(acknowledged, Principal);
        }

        return true;
    }

    /// <summary>A message the client cannot take (larger than its Maximum Packet Size [MQTT-3.1.2-25]) is discarded.</summary>
    internal void DiscardInflight(ushort packetId)
    {
        lock (_gate)
        {
            if (_inflightById.Remove(packetId, out var node))
            {
                _inflight.Remove(node);
                if (IsPersistent)
                {
                    _engine.Store.RemoveDelivery(ClientId, node.Value.Delivery.Message.Id);
                }
            }
        }
    }

    // ---- inbound QoS 2 -------------------------------------------------------------------------

    /// <summary>False when the packet id is already between PUBREC and PUBREL: a re-send, not to be routed again [MQTT-4.3.3-9].</summary>
    internal bool BeginInboundQos2(ushort packetId) => ChangeInboundQos2(packetId, pending: true);

    /// <summary>PUBREL: false for an id that was not pending.</summary>
    internal bool EndInboundQos2(ushort packetId) => ChangeInboundQos2(packetId, pending: false);

    bool ChangeInboundQos2(ushort packetId, bool pending)
    {
        bool changed;
        lock (_gate)
        {
            changed = pending ? (_inboundQos2 ??= []).Add(packetId) : _inboundQos2?.Remove(packetId) == true;
        }

        // The mark is stored by the router with the message (one commit); its release is stored here.
        if (changed && IsPersistent && !pending)
        {
            _engine.Store.SetInboundQos2(ClientId, packetId, pending: false);
        }

        return changed;
    }

    internal int InboundQos2Count
    {
        get
        {
            lock (_gate)
            {
                return _inboundQos2?.Count ?? 0;
            }
        }
    }

    // ---- restore -------------------------------------------------------------------------------

    internal void Restore(uint expirySeconds, long disconnectedAtUnixMs)
    {
        ExpirySeconds = expirySeconds;
        DisconnectedAtUnixMs = disconnectedAtUnixMs;
    }

    /// <summary>An in-flight row (queued rows stay in the store, counted by <see cref="RestoreQueued"/>).</summary>
    internal void RestoreDelivery(in Delivery delivery, ushort packetId, DeliveryState state)
    {
        lock (_gate)
        {
            if (state == DeliveryState.Queued || packetId == 0)
            {
                return;
            }

            _inflightById[packetId] = _inflight.AddLast(new Inflight(packetId, delivery, state));
            _lastPacketId = Math.Max(_lastPacketId, packetId);
        }
    }

    /// <summary>The queued rows this session has in the store: paged in when its client connects.</summary>
    internal void RestoreQueued(int count, long bytes)
    {
        lock (_gate)
        {
            _storedCount = count;
            _storedBytes = bytes;
            _spilled = count > 0;
        }
    }

    internal void RestoreInboundQos2(ushort packetId)
    {
        lock (_gate)
        {
            (_inboundQos2 ??= []).Add(packetId);
        }
    }

    internal void RestoreSubscription(Subscription subscription)
    {
        lock (_gate)
        {
            _subscriptions[subscription.Key] = subscription;
        }

        _engine.Index.Add(subscription);
        _engine.Cluster.SubscriptionChanged(this, subscription, added: true);
    }

    internal void PersistRecord()
    {
        if (!IsPersistent || IsDiscarded)
        {
            return;
        }

        SessionRecord record;
        lock (_gate)
        {
            var subs = new List<SubscriptionRecord>(_subscriptions.Count);
            foreach (var s in _subscriptions.Values)
            {
                subs.Add(new SubscriptionRecord(s.Key, s.Qos, s.NoLocal, s.RetainAsPublished, s.RetainHandling, s.Identifier));
            }

            record = new SessionRecord(ClientId, Principal.UserId, Principal.Role, ExpirySeconds, DisconnectedAtUnixMs, subs);
        }

        _engine.Store.UpsertSession(record);
    }

    ushort NextPacketId()
    {
        // Skip 0 and ids still in flight [MQTT-2.2.1-3].
        do
        {
            _lastPacketId = (ushort)(_lastPacketId == ushort.MaxValue ? 1 : _lastPacketId + 1);
        }
        while (_inflightById.ContainsKey(_lastPacketId));

        return _lastPacketId;
    }

    void Dropped(List<Delivery>? dropped, string reason)
    {
        if (dropped is null)
        {
            return;
        }

        var stored = 0;
        foreach (var d in dropped)
        {
            if (d.Stored)
            {
                _engine.Store.RemoveDelivery(ClientId, d.Message.Id);
                stored++;
            }
        }

        if (stored > 0)
        {
            lock (_gate)
            {
                _droppedSinceConnected += stored;
            }
        }

        _engine.Counters.MessageDropped(dropped.Count);
        LogDrop(dropped[^1].Message.Topic, reason, dropped.Count);
    }

    /// <summary>
    /// Queued messages the read check now refuses (the rules changed since they were queued): they leave the
    /// store too. Not "dropped" for the client (nothing it could have had); counted by the read check.
    /// </summary>
    void Withheld(List<Delivery>? withheld)
    {
        foreach (var d in withheld ?? [])
        {
            if (d.Stored)
            {
                _engine.Store.RemoveDelivery(ClientId, d.Message.Id);
            }
        }
    }

    /// <summary>One line per second per session at most: a flood must not become a log flood.</summary>
    void LogDrop(string topic, string reason, int count)
    {
        var now = Environment.TickCount64;
        if (now - Interlocked.Read(ref _lastDropLogMs) >= 1000)
        {
            Interlocked.Exchange(ref _lastDropLogMs, now);
            EngineLog.MessageDropped(_engine.Logger, ClientId, topic, count == 1 ? reason : $"{reason} ({count} messages)", _engine.Counters.Dropped);
        }
    }

    /// <summary>A message in flight; <paramref name="Held"/>: its packet id is not durable yet, so its PUBLISH has not been sent.</summary>
    readonly record struct Inflight(ushort PacketId, Delivery Delivery, DeliveryState State, bool Held = false);
}
