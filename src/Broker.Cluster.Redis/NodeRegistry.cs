using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>
/// Node liveness in Redis: each node incarnation's key <c>node:{inc}</c> (renewed every second, expiring
/// after <c>NodeTtl</c>), the set of incarnations that joined (<c>ims:nodes</c>), the client ids each one
/// owns (<c>nsess:{inc}</c>; its devices are in <see cref="RedisDevices"/>), and the sweep of dead incarnations, done by one node at a time (a lease).
/// <para>
/// A node that missed renewing its key for <c>NodeTtl</c> (a stall, a starved machine, Redis out of reach)
/// is swept as if dead while it still runs: its sessions are freed (their epochs raised, so its writes to
/// them are refused) and it leaves <c>ims:nodes</c>. Each renewal puts it back in the set, so that its real
/// death later is noticed too, and tells it which of its sessions it no longer owns (<see cref="RenewAsync"/>).
/// </para>
/// </summary>
internal sealed class NodeRegistry(IConnectionMultiplexer redis, ISessionStore store, RedisDevices devices, ClusterOptions options, string incarnation, string nodeId, ILogger logger)
{
    static readonly RedisKey NodesKey = "ims:nodes";
    static readonly RedisKey SweeperKey = "ims:sweeper";

    /// <summary>Delayed wills of dead nodes' sessions, by when they are due (Unix ms); the will itself stays with its session.</summary>
    static readonly RedisKey WillsKey = "ims:wills";

    /// <summary>The client ids this node claimed and still hosts: what <c>nsess:{inc}</c> holds unless a sweep took it.</summary>
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, byte> _owned = new(StringComparer.Ordinal);

    /// <summary>0..255, held by this incarnation alone while it lives: the low bits of the message ids this node gives.</summary>
    public int NodeIndex { get; private set; }

    static RedisKey NodeKey(string incarnation) => "node:{" + incarnation + "}";

    static RedisKey NodeSessionsKey(string incarnation) => "nsess:{" + incarnation + "}";

    /// <summary>KEYS: the index key; ARGV: incarnation, ttl ms → 0 when another incarnation holds it now (this one was taken for dead).</summary>
    const string RenewIndexScript = """
        local v = redis.call('GET', KEYS[1])
        if v and v ~= ARGV[1] then return 0 end
        redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
        return 1
        """;

    static RedisKey IndexKey(int index) => "ims:node-index:" + index;

    /// <summary>
    /// Joins, with a message id index no live node holds: each index is a key owned by one incarnation and
    /// renewed with its liveness, so two live nodes never give the same ids (a counter alone would repeat after
    /// 256 joins). At most 256 nodes live at once.
    /// </summary>
    public async Task RegisterAsync()
    {
        var db = redis.GetDatabase();
        var start = (int)((long)await db.StringIncrementAsync("ims:node-index") & 0xFF);
        NodeIndex = -1;
        for (var i = 0; i < 256 && NodeIndex < 0; i++)
        {
            var index = (start + i) & 0xFF;
            if (await db.StringSetAsync(IndexKey(index), incarnation, options.NodeTtl, When.NotExists))
            {
                NodeIndex = index;
            }
        }

        if (NodeIndex < 0)
        {
            throw new InvalidOperationException("Broker:Cluster: 256 nodes are live already; every message id index is taken.");
        }

        await db.SetAddAsync(NodesKey, incarnation);
        await RenewAsync();
    }

    /// <summary>
    /// Renews this node's liveness key and its place in <c>ims:nodes</c>. Returns the client ids it hosts but no
    /// longer owns, when a sweep took it for dead meanwhile (they must leave this node); the ones it still owns
    /// (claimed since) go back to <c>nsess:{inc}</c>, which the sweep deleted.
    /// </summary>
    public async Task<IReadOnlyList<string>> RenewAsync()
    {
        try
        {
            var db = redis.GetDatabase();
            var index = db.ScriptEvaluateAsync(RenewIndexScript, [IndexKey(NodeIndex)], [incarnation, (long)options.NodeTtl.TotalMilliseconds]);
            var renew = db.StringSetAsync(NodeKey(incarnation), nodeId, options.NodeTtl);
            var rejoined = db.SetAddAsync(NodesKey, incarnation);
            await renew;
            if ((long)await index == 0)
            {
                ClusterLog.IndexLost(logger, NodeIndex);
            }

            if (!await rejoined)
            {
                return [];
            }

            // All asked at once (pipelined): the next renewal waits for this one.
            var owners = _owned.Keys.Select(clientId => (ClientId: clientId, Owner: store.GetOwnerAsync(clientId))).ToList();
            await Task.WhenAll(owners.Select(o => o.Owner));
            var kept = owners.Where(o => o.Owner.Result == incarnation).Select(o => (RedisValue)o.ClientId).ToArray();
            if (kept.Length > 0)
            {
                await db.SetAddAsync(NodeSessionsKey(incarnation), kept);
            }

            var lost = owners.Where(o => o.Owner.Result != incarnation).Select(o => o.ClientId).ToList();
            ClusterLog.Rejoined(logger, incarnation, lost.Count);
            return lost;
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            ClusterLog.RedisFailed(logger, "heartbeat", ex.Message);
            return [];
        }
    }

    /// <summary>Gone at once for the others: a client that reconnects elsewhere need not wait for the key to expire.</summary>
    public async Task LeaveAsync()
    {
        try
        {
            var db = redis.GetDatabase();
            await Task.WhenAll(db.KeyDeleteAsync(NodeKey(incarnation)), db.KeyDeleteAsync(IndexKey(NodeIndex)));
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            ClusterLog.RedisFailed(logger, "leave", ex.Message);
        }
    }

    public async Task<bool> IsAliveAsync(string other) => await redis.GetDatabase().KeyExistsAsync(NodeKey(other));

    /// <summary>This node claimed (or no longer holds) the session of <paramref name="clientId"/>: for the sweep if it dies.</summary>
    public void Owns(string clientId, bool owns)
    {
        if (owns)
        {
            _owned[clientId] = 0;
        }
        else
        {
            _owned.TryRemove(clientId, out _);
        }

        var db = redis.GetDatabase();
        _ = owns
            ? db.SetAddAsync(NodeSessionsKey(incarnation), clientId, CommandFlags.FireAndForget)
            : db.SetRemoveAsync(NodeSessionsKey(incarnation), clientId, CommandFlags.FireAndForget);
    }

    /// <summary>
    /// One node at a time (a lease) looks for incarnations whose liveness key expired: their sessions are no
    /// longer theirs (a clean session's client id gets the mailbox again) and their clients' wills go to
    /// <paramref name="publishWill"/> (issue #13: published by a survivor, within the node TTL and a heartbeat).
    /// </summary>
    public async Task SweepDeadAsync(Action<string, byte[]> publishWill)
    {
        try
        {
            var db = redis.GetDatabase();
            var lease = options.NodeTtl;
            if (!await db.StringSetAsync(SweeperKey, incarnation, lease, When.NotExists))
            {
                if (await db.StringGetAsync(SweeperKey) != incarnation)
                {
                    return;
                }

                await db.KeyExpireAsync(SweeperKey, lease);
            }

            // Delayed wills of dead nodes' sessions whose delay passed, unless the session was resumed [MQTT-3.1.3-9].
            foreach (var member in await db.SortedSetRangeByScoreAsync(WillsKey, double.NegativeInfinity, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds(), take: 100))
            {
                var clientId = (string)member!;
                if (await store.TakeDueWillAsync(clientId) is { } due)
                {
                    publishWill(clientId, due);
                }

                await db.SortedSetRemoveAsync(WillsKey, member);
            }

            // Sessions of dead nodes whose expiry passed while nobody claimed them [MQTT-3.1.2-23].
            if (await store.ExpireOrphansAsync() is var expired and > 0)
            {
                ClusterLog.OrphansExpired(logger, expired);
            }

            foreach (var member in await db.SetMembersAsync(NodesKey))
            {
                var node = (string)member!;
                if (node == incarnation || await db.KeyExistsAsync(NodeKey(node)))
                {
                    continue;
                }

                var wills = 0;
                foreach (var clientId in await db.SetMembersAsync(NodeSessionsKey(node)))
                {
                    var (owned, will, dueAt) = await store.TakeOrphanAsync((string)clientId!, node);
                    if (owned && will is not null)
                    {
                        publishWill((string)clientId!, will);
                        wills++;
                    }
                    else if (owned && dueAt > 0)
                    {
                        await db.SortedSetAddAsync(WillsKey, clientId, dueAt); // its delay runs from the death being noticed
                    }
                }

                await devices.SweepAsync(node); // its users' presence is published again, here
                await db.KeyDeleteAsync(NodeSessionsKey(node));
                await db.SetRemoveAsync(NodesKey, node);
                ClusterLog.NodeGone(logger, node, wills);
            }
        }
        catch (Exception ex) when (ex is RedisException or TimeoutException)
        {
            ClusterLog.RedisFailed(logger, "sweep", ex.Message);
        }
    }
}
