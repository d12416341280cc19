using System.Collections.Concurrent;
using Broker.Engine.Cluster;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging;
using MQTTnet.Protocol;
using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>
/// This node's link to the others, through Redis only. A node listens on the sharded channel of
/// every route one of its sessions reads (<c>r:{route}</c>, ref-counted) and of every client id it
/// hosts (<c>r:{c/cid}</c>), so a publish reaches exactly the nodes that host a reader. Rows for
/// persistent readers on other nodes are written by the publishing node, from the route's durable
/// reader index, before the publisher's ack; the message then goes out, in routing order per route.
/// A CONNECT claims its session (fencing epoch) and asks the node that had it to let go.
/// </summary>
public sealed class RedisClusterLink : IClusterLink, IAsyncDisposable
{
    readonly IConnectionMultiplexer _redis;
    readonly ISessionStore _store;
    readonly ClusterOptions _options;
    readonly ILogger<RedisClusterLink> _logger;
    readonly RouteKeys _routes;
    readonly SharedGroups _shared;
    readonly RouteListener _listener;
    readonly NodeRegistry _nodes;
    readonly ISubscriber _bus;
    readonly object _gate = new();
    readonly Dictionary<string, Task> _sendTails = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, TaskCompletionSource> _releases = new(StringComparer.Ordinal);
    // Classic pub/sub, not sharded: every broker node reads it, and a Redis Cluster passes a classic PUBLISH to all its nodes.
    readonly RedisChannel _retainedChannel = RedisChannel.Literal("ims:retained");
    IClusterPeer? _peer;
    ChannelMessageQueue? _nodeQueue;
    ChannelMessageQueue? _retainedQueue;
    ChannelMessageQueue? _groupsQueue;
    Timer? _heartbeat;
    Timer? _renewal;
    Task _settled = Task.CompletedTask;
    long _envelopesIn;
    long _envelopesOut;

    public RedisClusterLink(IConnectionMultiplexer redis, ISessionStore store, ClusterOptions options, ILogger<RedisClusterLink> logger)
    {
        _redis = redis;
        _store = store;
        _options = options;
        _logger = logger;
        _routes = new RouteKeys(options.RouteDepth);
        _bus = redis.GetSubscriber();
        NodeId = string.IsNullOrWhiteSpace(options.NodeId) ? Environment.MachineName : options.NodeId;

        // A new incarnation for every start: ownerships of an earlier run of this node count as dead.
        Incarnation = NodeId + "/" + Guid.NewGuid().ToString("N")[..8];
        _shared = new SharedGroups(redis, _routes, Incarnation);
        _listener = new RouteListener(_bus, OnRouteMessage);
        Devices = new RedisDevices(redis, Incarnation, logger);
        _nodes = new NodeRegistry(redis, store, Devices, options, Incarnation, NodeId, logger);
        _store.Fenced += OnFenced;
    }

    public string NodeId { get; }

    /// <summary>This run of this node: the owner recorded in the sessions it claims.</summary>
    public string Incarnation { get; }

    public int NodeIndex => _nodes.NodeIndex;

    /// <summary>The users' connected devices on every node (quota and presence); a dead node's are swept with its sessions.</summary>
    internal RedisDevices Devices { get; }

    /// <summary>Messages received from other nodes (envelopes delivered here).</summary>
    public long EnvelopesIn => Interlocked.Read(ref _envelopesIn);

    /// <summary>Messages sent towards other nodes.</summary>
    public long EnvelopesOut => Interlocked.Read(ref _envelopesOut);

    public bool IsReachable => _redis.IsConnected;

    /// <summary>
    /// Called before the engine restores its state: the node index is part of every message id it gives. The
    /// liveness key is renewed from here on, every second, on a timer of its own: neither the rest of the start
    /// nor a slow sweep holds it back (a node that misses it for NodeTtl is taken for dead).
    /// </summary>
    public async Task RegisterAsync()
    {
        await _nodes.RegisterAsync();
        _renewal = new Timer(_ =>
        {
            var renewal = RenewAsync();
            if (!renewal.IsCompleted)
            {
                _renewed = renewal;
            }
        }, null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));
    }

    public async Task StartAsync(IClusterPeer peer, CancellationToken cancellationToken)
    {
        _peer = peer;
        _nodeQueue = await _bus.SubscribeAsync(NodeChannel(Incarnation));
        _nodeQueue.OnMessage(OnNodeMessage);
        _retainedQueue = await _bus.SubscribeAsync(_retainedChannel);
        _retainedQueue.OnMessage(OnRetained);
        _groupsQueue = await _bus.SubscribeAsync(SharedGroups.GroupsChannel);
        _groupsQueue.OnMessage(m => _shared.GroupCreated((string)m.Message!));
        _heartbeat = new Timer(_ => _ = TickAsync(), null, TimeSpan.FromSeconds(1), TimeSpan.FromSeconds(1));

        // Pub/sub is at most once: a connection that was cut may have lost messages for this node's sessions.
        _redis.ConnectionRestored += OnConnectionRestored;
        ClusterLog.Joined(_logger, NodeId, Incarnation, NodeIndex);
    }

    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await StopTimersAsync();
        await _nodes.LeaveAsync();
    }

    async Task StopTimersAsync()
    {
        if (_heartbeat is not null)
        {
            await _heartbeat.DisposeAsync();
        }

        if (_renewal is not null)
        {
            await _renewal.DisposeAsync();
            await _renewed; // a renewal under way would bring the liveness key back after LeaveAsync
        }
    }

    int _ticking;
    int _renewing;
    Task _renewed = Task.CompletedTask;

    async Task TickAsync()
    {
        if (Interlocked.Exchange(ref _ticking, 1) == 1)
        {
            return; // the last tick is still at work (Redis slow or away)
        }

        try
        {
            await _nodes.SweepDeadAsync(PublishWill);
            await CountMailboxesAsync();
        }
        finally
        {
            Volatile.Write(ref _ticking, 0);
        }
    }

    async Task RenewAsync()
    {
        if (Interlocked.Exchange(ref _renewing, 1) == 1)
        {
            return;
        }

        try
        {
            // Taken for dead meanwhile: the sessions freed by that sweep leave this node (their clients reconnect
            // and claim them again, here or elsewhere), as they would have if it had really died. Not waited
            // for: each release waits for its connection to close, and the next renewal must not.
            var lost = await _nodes.RenewAsync();
            if (lost.Count > 0 && _peer is { } peer)
            {
                Observe(Task.WhenAll(lost.Select(peer.ReleaseAsync)), "release of the sessions freed while this node was taken for dead");
            }
        }
        finally
        {
            Volatile.Write(ref _renewing, 0);
        }
    }

    public async Task<IReadOnlyList<RemoteSession>> RemoteSessionsAsync(CancellationToken cancellationToken)
    {
        var alive = new Dictionary<string, bool>(StringComparer.Ordinal);
        var remote = new List<RemoteSession>();
        foreach (var (record, owner, queued, inflight) in await _store.ListSessionsAsync(cancellationToken))
        {
            if (_peer?.Hosts(record.ClientId) == true)
            {
                continue;
            }

            var live = owner is not null && (alive.TryGetValue(owner, out var known) ? known : alive[owner] = await _nodes.IsAliveAsync(owner));
            var node = live ? owner![..owner!.LastIndexOf('/')] : null;

            // The record says 0 while a client is attached (Session.Attach writes it; Detach writes the time).
            remote.Add(new RemoteSession(record, node, live && record.DisconnectedAtUnixMs == 0, queued, inflight));
        }

        return remote;
    }

    public void WillArmed(ClientPrincipal sender, BrokerMessage will, uint delaySeconds, uint expirySeconds) =>
        Observe(_store.SetWillAsync(sender.ClientId, Incarnation, WillCodec.Encode(sender, will, expirySeconds), delaySeconds), "will");

    public void WillDisarmed(string clientId) => Observe(_store.SetWillAsync(clientId, Incarnation, null, 0), "will");

    void Observe(Task write, string what)
    {
        if (!write.IsCompletedSuccessfully)
        {
            _ = ObserveAsync(write, what);
        }
    }

    /// <summary>A write nobody awaits: its failure is logged, never thrown (SettledAsync waits on these too).</summary>
    async Task ObserveAsync(Task write, string what)
    {
        try
        {
            await write;
        }
        catch (Exception ex)
        {
            ClusterLog.RedisFailed(_logger, what, ex.Message);
        }
    }

    void OnConnectionRestored(object? sender, ConnectionFailedEventArgs e)
    {
        ClusterLog.LinkRestored(_logger, e.EndPoint?.ToString() ?? "?", e.ConnectionType.ToString());
        _peer?.MayHaveMissedMessages();
        _shared.Forget();
        _ = ResyncRetainedAsync();
    }

    async Task ResyncRetainedAsync()
    {
        try
        {
            _peer?.ResyncRetained(await _store.LoadRetainedAsync());
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            ClusterLog.RedisFailed(_logger, "retained resync", ex.Message);
        }
    }

    /// <summary>A dead node's client had a will: published here.</summary>
    void PublishWill(string clientId, byte[] will)
    {
        var (sender, message, expiry) = WillCodec.Decode(clientId, will);
        _peer?.PublishWill(message, sender, expiry);
    }

    // ---- sessions ------------------------------------------------------------------------------

    public async ValueTask<ClaimedSession?> ClaimAsync(ClientPrincipal principal, bool cleanStart, uint expirySeconds, CancellationToken cancellationToken)
    {
        var clientId = principal.ClientId;
        try
        {
            // Listen first: a direct message sent while the session moves here reaches this node.
            await _listener.Listen(RouteKeys.Direct(clientId), +1);
            try
            {
                var claim = await _store.ClaimAsync(clientId, Incarnation, cleanStart);
                _nodes.Owns(clientId, true);
                if (claim.PreviousOwner is { } previous && previous != Incarnation && await _nodes.IsAliveAsync(previous))
                {
                    await KickAsync(previous, clientId);
                }

                if (_peer!.Hosts(clientId))
                {
                    return null; // this node's copy is the current one
                }

                var session = cleanStart ? null : await _store.LoadSessionAsync(clientId);
                if (session is null && expirySeconds > 0)
                {
                    // A new persistent session: the direct messages that waited for its client id come with it.
                    var mailbox = await _store.ReadMailboxAsync(clientId);
                    return mailbox.Count == 0 ? null : new ClaimedSession(null, [], 0, 0, [], mailbox);
                }

                return session;
            }
            finally
            {
                // SessionHosted takes its own reference when the session opens.
                _ = _listener.Listen(RouteKeys.Direct(clientId), -1);
            }
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            throw new ClusterUnavailableException("Redis: " + ex.Message, ex);
        }
    }

    async Task KickAsync(string owner, string clientId)
    {
        var released = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _releases[clientId] = released;
        try
        {
            var kick = new Envelope { Kind = EnvelopeKind.Kick, Origin = Incarnation, ClientId = clientId };
            if (await _bus.PublishAsync(NodeChannel(owner), kick.Encode()) == 0)
            {
                return; // nobody listens on that node's channel: it died (its key has not expired yet); nothing to wait for
            }

            if (await Task.WhenAny(released.Task, Task.Delay(_options.ClaimWait)) != released.Task)
            {
                // Its writes are fenced by the new epoch: going on without its answer loses nothing acknowledged.
                ClusterLog.KickUnanswered(_logger, clientId, owner, _options.ClaimWait.TotalSeconds);
            }
        }
        finally
        {
            _releases.TryRemove(new KeyValuePair<string, TaskCompletionSource>(clientId, released));
        }
    }

    void OnNodeMessage(ChannelMessage message)
    {
        var envelope = Envelope.Decode((byte[])message.Message!);
        switch (envelope.Kind)
        {
            case EnvelopeKind.Kick:
                _ = ReleaseAsync(envelope.ClientId!, envelope.Origin);
                break;
            case EnvelopeKind.Released:
                if (_releases.TryGetValue(envelope.ClientId!, out var released))
                {
                    released.TrySetResult();
                }

                break;
        }
    }

    async Task ReleaseAsync(string clientId, string claimant)
    {
        try
        {
            await _peer!.ReleaseAsync(clientId);
            await _store.WriteHeldAsync(clientId); // before the answer: the claimant loads the session after it
            ClusterLog.Released(_logger, clientId, claimant);
            var answer = new Envelope { Kind = EnvelopeKind.Released, Origin = Incarnation, ClientId = clientId };
            await _bus.PublishAsync(NodeChannel(claimant), answer.Encode());
        }
        catch (Exception ex)
        {
            ClusterLog.RedisFailed(_logger, "release of " + clientId, ex.Message);
        }
    }

    void OnFenced(string clientId)
    {
        // Another node owns it now and this node missed the kick: let it go here too.
        ClusterLog.Fenced(_logger, clientId);
        _ = _peer?.ReleaseAsync(clientId);
    }

    public void SessionHosted(Session session) => Track(_listener.Listen(RouteKeys.Direct(session.ClientId), +1));

    public void SessionLeft(Session session, bool ended)
    {
        Track(_listener.Listen(RouteKeys.Direct(session.ClientId), -1));
        _nodes.Owns(session.ClientId, false);
        if (ended)
        {
            Track(_store.ReleaseOwnershipAsync(session.ClientId, Incarnation));
        }
    }

    public void SubscriptionChanged(Session session, Subscription subscription, bool added, bool ended = true)
    {
        var route = _routes.OfFilter(subscription.Filter);
        if (subscription.ShareName is not null)
        {
            // Not a reader of the route: the publishing node picks one member and sends to its node alone.
            Track(_shared.MemberChanged(session, subscription, added));
            return;
        }

        Track(_listener.Listen(route, added ? +1 : -1));

        // Durable readers: a persistent session's QoS 1/2 subscriptions, read by publishers on any node.
        if (!session.IsPersistent || subscription.Qos == MqttQualityOfServiceLevel.AtMostOnce)
        {
            return;
        }

        if (added)
        {
            var record = new SubscriptionRecord(subscription.Key, subscription.Qos, subscription.NoLocal, subscription.RetainAsPublished, subscription.RetainHandling, subscription.Identifier);
            Track(_store.AddReaderAsync(route, session.ClientId, record));
        }
        else if (ended)
        {
            Track(_store.RemoveReaderAsync(route, session.ClientId, subscription.Key));
        }
    }

    public ValueTask SettledAsync()
    {
        Task settled;
        lock (_gate)
        {
            settled = _settled;
        }

        return settled.IsCompletedSuccessfully ? ValueTask.CompletedTask : new ValueTask(settled);
    }

    /// <summary>A change the next <see cref="SettledAsync"/> waits for; its failure is logged there.</summary>
    void Track(Task change)
    {
        if (change.IsCompletedSuccessfully)
        {
            return;
        }

        lock (_gate)
        {
            var observed = ObserveAsync(change, "session or subscription change");
            _settled = _settled.IsCompleted ? observed : Task.WhenAll(_settled, observed);
        }
    }

    void OnRouteMessage(ChannelMessage message)
    {
        Envelope envelope;
        try
        {
            envelope = Envelope.Decode((byte[])message.Message!);
        }
        catch (Exception ex)
        {
            ClusterLog.BadEnvelope(_logger, message.Channel.ToString(), ex.Message);
            return;
        }

        if (envelope.Kind != EnvelopeKind.Message || envelope.Origin == Incarnation || envelope.Message is null)
        {
            return;
        }

        // Every publish also goes to the wide channel; a node that reads the message's own route has it from there.
        if (message.Channel == WideChannel && _listener.Listens(_routes.OfTopic(envelope.Message.Topic)))
        {
            return;
        }

        Interlocked.Increment(ref _envelopesIn);
        if (envelope.Share is not null)
        {
            _peer?.DeliverShared(envelope.Message, envelope.ClientId!, envelope.Share, stored: envelope.StoredFor.Count > 0);
            return;
        }

        _peer?.Deliver(envelope.Message, envelope.ClientId, envelope.StoredFor);
    }

    // ---- routing -------------------------------------------------------------------------------

    public ValueTask RouteAsync(BrokerMessage message, InboundPacket? inbound)
    {
        if (message.Topic.StartsWith('$'))
        {
            return ValueTask.CompletedTask; // $SYS and the like are each node's own
        }

        var route = _routes.OfTopic(message.Topic);
        return new ValueTask(SendInOrder(route, message, RouteWorkAsync(route, message)));
    }

    /// <summary>What a routed message needs before it goes out: rows for durable readers elsewhere, and one member per shared group.</summary>
    readonly record struct Routed(IReadOnlyCollection<string> StoredFor, IReadOnlyList<SharedPick> Picks, IReadOnlyCollection<string> PicksStored);

    async Task<Routed> RouteWorkAsync(string route, BrokerMessage message)
    {
        var picking = _shared.PickAsync(route, message);
        var stored = message.Qos == MqttQualityOfServiceLevel.AtMostOnce ? [] : await WriteRowsAsync(route, message);
        var picks = await picking;
        IReadOnlyCollection<string> picksStored = [];
        if (picks.Count > 0 && message.Qos != MqttQualityOfServiceLevel.AtMostOnce)
        {
            var rows = picks.Where(p => p.Durable && p.Qos != MqttQualityOfServiceLevel.AtMostOnce)
                .Select(p => new StoredDelivery(p.ClientId, message.Id, p.Qos, false, p.SubscriptionId != 0 ? [p.SubscriptionId] : null)).ToList();
            if (rows.Count > 0)
            {
                picksStored = new HashSet<string>(await _store.AppendRowsAsync(message, rows, null), StringComparer.Ordinal);
            }
        }

        return new Routed(stored, picks, picksStored);
    }

    public bool TryRouteDirect(string clientId, BrokerMessage message, InboundPacket? inbound, out ValueTask durable)
    {
        var expires = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() + (long)_mailboxTtl.TotalMilliseconds;

        // The row (or mailbox entry) and the message to the node that hosts the session go in one script on the
        // client id's slot: one round trip, in the order this node routed them.
        var live = new Envelope { Kind = EnvelopeKind.Message, Origin = Incarnation, ClientId = clientId, Message = message };
        var announce = new DirectAnnouncement(RouteChannel(RouteKeys.Direct(clientId)).ToString(),
            new Envelope { Kind = EnvelopeKind.Message, Origin = Incarnation, ClientId = clientId, StoredFor = [clientId], Message = message }.Encode(),
            live.Encode());
        Interlocked.Increment(ref _envelopesOut);
        durable = new ValueTask(DirectAsync(clientId, message, expires, inbound, announce));
        return true;
    }

    TimeSpan _mailboxTtl = TimeSpan.FromDays(3);

    /// <summary>Broker:OfflineP2PTtl, for direct messages kept in the cluster's mailbox.</summary>
    public TimeSpan MailboxTtl { get => _mailboxTtl; set => _mailboxTtl = value; }

    /// <summary>
    /// Broker:Limits:MaxMailboxClientIds, over the cluster: a new mailbox is opened while the count of client ids
    /// with one, read every second (<see cref="TickAsync"/>), is below it. Approximate: the nodes together may
    /// open more within that second.
    /// </summary>
    public int MaxMailboxClientIds { get; init; } = 100_000;

    long _mailboxes;

    /// <summary>Client ids with a mailbox in the cluster, as read at the last tick.</summary>
    public long Mailboxes => Volatile.Read(ref _mailboxes);

    async Task CountMailboxesAsync()
    {
        try
        {
            Volatile.Write(ref _mailboxes, await _store.CountMailboxesAsync(DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()));
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            // Redis out of reach (logged by the link): the last count stands, and no mailbox is written meanwhile anyway.
        }
    }

    async Task DirectAsync(string clientId, BrokerMessage message, long expires, InboundPacket? inbound, DirectAnnouncement announce)
    {
        try
        {
            var result = await _store.AppendDirectAsync(clientId, message, expires, inbound, announce, Mailboxes < MaxMailboxClientIds);
            if (result.NotKept)
            {
                _peer?.DirectNotKept(clientId, message);
            }
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            // Not stored: not acknowledged either (the client sends it again).
            throw new ClusterUnavailableException("Redis: " + ex.Message, ex);
        }
    }


    /// <summary>Rows for the route's durable readers hosted on other nodes (this node's own were written by the router).</summary>
    async Task<IReadOnlyCollection<string>> WriteRowsAsync(string route, BrokerMessage message)
    {
        var readers = await ReadersAsync(route);
        if (readers.Count == 0)
        {
            return [];
        }

        // One row per session, as the router gives one delivery per local session (DeliveryGrant).
        var grants = new Dictionary<string, DeliveryGrant>(StringComparer.Ordinal);
        foreach (var (clientId, sub) in readers)
        {
            if (_peer!.Hosts(clientId) || !MqttTopic.Matches(sub.Filter, message.Topic)
                || DeliveryGrant.Of(message, clientId, sub.Qos, sub.NoLocal, sub.RetainAsPublished, sub.SubscriptionId) is not { } grant)
            {
                continue;
            }

            grants[clientId] = grants.TryGetValue(clientId, out var earlier) ? earlier.Merge(grant) : grant;
        }

        if (grants.Count == 0)
        {
            return [];
        }

        var rows = grants.Select(g => new StoredDelivery(g.Key, message.Id, g.Value.Qos, g.Value.Retain, g.Value.SubscriptionIds)).ToList();
        var stored = await _store.AppendRowsAsync(message, rows, null);
        return stored.Count == 0 ? [] : new HashSet<string>(stored, StringComparer.Ordinal);
    }

    async Task<List<RouteReader>> ReadersAsync(string route)
    {
        var own = _store.ReadReadersAsync(route);
        var wide = _store.ReadReadersAsync(RouteKeys.Wide);
        var all = new List<RouteReader>(await own);
        all.AddRange(await wide);
        return all;
    }

    /// <summary>
    /// Sends a routed message to the nodes that read its route (and to wide readers), after its rows are
    /// durable, in routing order per route: a later publish never overtakes an earlier one whose rows are
    /// still being written. The task completes when the rows are durable (the publisher's ack waits on it).
    /// </summary>
    Task SendInOrder(string route, BrokerMessage message, Task<Routed> rows)
    {
        lock (_sendTails)
        {
            _sendTails.TryGetValue(route, out var tail);
            if ((tail is null || tail.IsCompleted) && rows.IsCompletedSuccessfully)
            {
                Send(route, message, rows.Result);
                return Task.CompletedTask;
            }

            var sent = SendAfterAsync(tail ?? Task.CompletedTask, route, message, rows);
            _sendTails[route] = sent;
            _ = ForgetTailAsync(route, sent);
            return sent;
        }
    }

    async Task SendAfterAsync(Task tail, string route, BrokerMessage message, Task<Routed> rows)
    {
        try
        {
            await tail;
        }
        catch
        {
            // An earlier publish failed: its publisher was not acknowledged; this one goes on.
        }

        Routed routed;
        try
        {
            routed = await rows;
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            // Not stored for the other nodes' readers: not acknowledged either (the client sends it again).
            throw new ClusterUnavailableException("Redis: " + ex.Message, ex);
        }

        Send(route, message, routed);
    }

    async Task ForgetTailAsync(string route, Task sent)
    {
        try
        {
            await sent;
        }
        catch
        {
            // Reported to the publisher's ack.
        }

        lock (_sendTails)
        {
            if (_sendTails.TryGetValue(route, out var tail) && ReferenceEquals(tail, sent))
            {
                _sendTails.Remove(route);
            }
        }
    }

    void Send(string route, BrokerMessage message, Routed routed)
    {
        var envelope = new Envelope { Kind = EnvelopeKind.Message, Origin = Incarnation, StoredFor = routed.StoredFor, Message = message }.Encode();
        _bus.Publish(RouteChannel(route), envelope, CommandFlags.FireAndForget);
        Interlocked.Increment(ref _envelopesOut);
        _bus.Publish(WideChannel, envelope, CommandFlags.FireAndForget);

        foreach (var pick in routed.Picks)
        {
            // To the picked member's node alone, over its session's own channel.
            var picked = new Envelope
            {
                Kind = EnvelopeKind.Message,
                Origin = Incarnation,
                ClientId = pick.ClientId,
                Share = pick.ShareKey,
                StoredFor = routed.PicksStored.Contains(pick.ClientId) ? [pick.ClientId] : [],
                Message = message,
            };
            _bus.Publish(RouteChannel(RouteKeys.Direct(pick.ClientId)), picked.Encode(), CommandFlags.FireAndForget);
            Interlocked.Increment(ref _envelopesOut);
        }
    }

    public void RetainedChanged(BrokerMessage message)
    {
        var envelope = new Envelope { Kind = EnvelopeKind.Retained, Origin = Incarnation, Message = message };
        _bus.Publish(_retainedChannel, envelope.Encode(), CommandFlags.FireAndForget);
    }

    void OnRetained(ChannelMessage message)
    {
        var envelope = Envelope.Decode((byte[])message.Message!);
        if (envelope.Origin != Incarnation && envelope.Message is not null)
        {
            _peer?.RetainedChanged(envelope.Message);
        }
    }

    static readonly RedisChannel WideChannel = RouteChannel(RouteKeys.Wide);

    static RedisChannel RouteChannel(string route) => RouteListener.Channel(route);

    static RedisChannel NodeChannel(string incarnation) => RedisChannel.Sharded("n:{" + incarnation + "}");

    public async ValueTask DisposeAsync()
    {
        _store.Fenced -= OnFenced;
        _redis.ConnectionRestored -= OnConnectionRestored;
        await StopTimersAsync();
    }
}
