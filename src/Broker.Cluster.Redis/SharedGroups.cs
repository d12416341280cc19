using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using MQTTnet.Protocol;
using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>One member of a shared subscription, picked for one message on the publishing node.</summary>
internal readonly record struct SharedPick(string ClientId, string ShareKey, bool Durable, MqttQualityOfServiceLevel Qos, uint SubscriptionId);

/// <summary>
/// <c>$share</c> groups across nodes: each message goes to one member in the whole cluster [MQTT-4.8.2].
/// The members of a group are listed in Redis (<c>sh:{$share/name/filter}</c>: client id → its node, QoS,
/// persistence), and the groups of a route in <c>shx:{route}</c>, which each node keeps a copy of per route
/// (a new group is announced, so a route without groups costs a publish no Redis read). The publishing node delivers to a member
/// of its own when it has one (the local index picks it), else it picks one member of the group by message id
/// and sends the message to that member's node only. Route messages never reach a node's shared members.
/// </summary>
internal sealed class SharedGroups(IConnectionMultiplexer redis, RouteKeys routes, string incarnation)
{
    readonly Dictionary<string, int> _local = new(StringComparer.Ordinal);
    int _next;

    // Removes the member only while it is still this node's (a takeover may have registered it elsewhere since).
    const string RemoveIfMine = """
        if redis.call('HGET', KEYS[1], ARGV[1]) and string.find(redis.call('HGET', KEYS[1], ARGV[1]), ARGV[2], 1, true) == 1 then
          return redis.call('HDEL', KEYS[1], ARGV[1])
        end
        return 0
        """;

    public Task MemberChanged(Session session, Subscription subscription, bool added)
    {
        var key = subscription.Key;
        lock (_local)
        {
            var count = _local.GetValueOrDefault(key) + (added ? 1 : -1);
            if (count > 0)
            {
                _local[key] = count;
            }
            else
            {
                _local.Remove(key);
            }
        }

        var db = redis.GetDatabase();
        if (added)
        {
            var member = $"{incarnation}|{(int)subscription.Qos}|{(session.IsPersistent ? 1 : 0)}|{subscription.Identifier}";
            return Task.WhenAll(db.HashSetAsync(MembersKey(key), session.ClientId, member), AddGroupAsync(routes.OfFilter(subscription.Filter), key, subscription.Filter));
        }

        // Ended or taken over: the member leaves this node's entry (a new owner registers its own).
        return db.ScriptEvaluateAsync(RemoveIfMine, [MembersKey(key)], [session.ClientId, incarnation + "|"]);
    }

    // The groups of each route, as this node last read them: most routes have none, and a publish to them then
    // costs no Redis read. A new group is announced (GroupsChannel); every node drops its copy of that route.
    readonly System.Collections.Concurrent.ConcurrentDictionary<string, HashEntry[]> _groups = new(StringComparer.Ordinal);

    public static readonly RedisChannel GroupsChannel = RedisChannel.Literal("ims:shared");

    async Task AddGroupAsync(string route, string key, string filter)
    {
        if (await redis.GetDatabase().HashSetAsync(GroupsKey(route), key, filter))
        {
            // A group that did not exist: every node (this one too) reads this route's groups again.
            GroupCreated(route);
            await redis.GetSubscriber().PublishAsync(GroupsChannel, route);
        }
    }

    // Moves with every announcement: a read that an announcement overtook is used once, not kept.
    long _generation;

    /// <summary>Another node created a group on <paramref name="route"/>.</summary>
    public void GroupCreated(string route)
    {
        Interlocked.Increment(ref _generation);
        _groups.TryRemove(route, out _);
    }

    /// <summary>Announcements may have been missed (the link to Redis was cut): read every route's groups again.</summary>
    public void Forget()
    {
        Interlocked.Increment(ref _generation);
        _groups.Clear();
    }

    async Task<HashEntry[]> GroupsAsync(string route)
    {
        if (_groups.TryGetValue(route, out var known))
        {
            return known;
        }

        var generation = Interlocked.Read(ref _generation);
        var read = await redis.GetDatabase().HashGetAllAsync(GroupsKey(route));
        if (Interlocked.Read(ref _generation) == generation)
        {
            _groups.TryAdd(route, read);
        }

        return read;
    }

    bool HasLocalMember(string key)
    {
        lock (_local)
        {
            return _local.ContainsKey(key);
        }
    }

    /// <summary>The members that get this message on other nodes: one per group that matches and has no member here.</summary>
    public async Task<IReadOnlyList<SharedPick>> PickAsync(string route, BrokerMessage message)
    {
        var own = GroupsAsync(route);
        var wide = GroupsAsync(RouteKeys.Wide);
        var groups = await own;
        var wideGroups = await wide;
        if (groups.Length == 0 && wideGroups.Length == 0)
        {
            return [];
        }

        var db = redis.GetDatabase();
        List<SharedPick>? picks = null;
        foreach (var group in groups.Concat(wideGroups))
        {
            var key = (string)group.Name!;
            if (HasLocalMember(key) || !MqttTopic.Matches((string)group.Value!, message.Topic))
            {
                continue;
            }

            var members = await db.HashGetAllAsync(MembersKey(key));
            if (members.Length == 0)
            {
                continue;
            }

            // Round robin from this node: consecutive messages go to consecutive members.
            Array.Sort(members, (a, b) => string.CompareOrdinal(a.Name, b.Name));
            var chosen = members[(int)((uint)Interlocked.Increment(ref _next) % (uint)members.Length)];
            var parts = ((string)chosen.Value!).Split('|');
            var qos = (MqttQualityOfServiceLevel)int.Parse(parts[1], System.Globalization.CultureInfo.InvariantCulture);
            (picks ??= []).Add(new SharedPick((string)chosen.Name!, key, parts[2] == "1", message.Qos < qos ? message.Qos : qos,
                uint.Parse(parts[3], System.Globalization.CultureInfo.InvariantCulture)));
        }

        return picks ?? (IReadOnlyList<SharedPick>)[];
    }

    static RedisKey MembersKey(string shareKey) => "sh:{" + shareKey + "}";

    static RedisKey GroupsKey(string route) => "shx:{" + route + "}";
}
