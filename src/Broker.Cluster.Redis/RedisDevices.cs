using System.Globalization;
using Broker.Engine.Cluster;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>
/// The connected devices of every user, shared by the nodes: one hash per user, <c>dev:{u/&lt;user&gt;}</c>,
/// client id → "&lt;Redis time in µs&gt;|&lt;incarnation&gt;/&lt;n&gt;" (when it connected, and which connection of which
/// node holds it). Each node lists the users it added devices for in <c>ndev:{&lt;incarnation&gt;}</c>, so a
/// survivor can take a dead node's devices out (<see cref="SweepAsync"/>). The quota check and the add are one
/// script, so two nodes cannot both admit a user's last allowed device.
/// </summary>
internal sealed class RedisDevices(IConnectionMultiplexer redis, string incarnation, ILogger logger) : IDeviceDirectory
{
    /// <summary>ARGV: client id, token, max devices (0: none) → 1 added, 0 refused (quota). A device connecting again keeps its place in the list.</summary>
    const string AddScript = """
        local v = redis.call('HGET', KEYS[1], ARGV[1])
        local at
        if v then
          at = string.sub(v, 1, string.find(v, '|', 1, true) - 1)
        else
          local max = tonumber(ARGV[3])
          if max > 0 and redis.call('HLEN', KEYS[1]) >= max then return 0 end
          local t = redis.call('TIME')
          at = t[1] .. string.format('%06d', t[2])
        end
        redis.call('HSET', KEYS[1], ARGV[1], at .. '|' .. ARGV[2])
        return 1
        """;

    /// <summary>ARGV: client id, token → 1 when that connection held the device and it is gone now.</summary>
    const string RemoveScript = """
        local v = redis.call('HGET', KEYS[1], ARGV[1])
        if not v or string.sub(v, string.find(v, '|', 1, true) + 1) ~= ARGV[2] then return 0 end
        redis.call('HDEL', KEYS[1], ARGV[1])
        return 1
        """;

    /// <summary>ARGV: an incarnation → how many of the user's devices it held (removed now).</summary>
    const string RemoveNodeScript = """
        local all, n, prefix = redis.call('HGETALL', KEYS[1]), 0, '|' .. ARGV[1] .. '/'
        for i = 1, #all, 2 do
          local v = all[i + 1]
          local bar = string.find(v, '|', 1, true)
          if string.sub(v, bar, bar + #prefix - 1) == prefix then
            redis.call('HDEL', KEYS[1], all[i])
            n = n + 1
          end
        end
        return n
        """;

    readonly IDatabase _db = redis.GetDatabase();
    long _connections;

    public bool OutlivesProcess => true;

    public event Action<string>? ChangedElsewhere;

    static RedisKey UserKey(string userId) => "dev:{u/" + userId + "}";

    static RedisKey NodeKey(string incarnation) => "ndev:{" + incarnation + "}";

    public async ValueTask<string?> AddAsync(string userId, string clientId, int maxDevices)
    {
        var token = incarnation + "/" + Interlocked.Increment(ref _connections).ToString(CultureInfo.InvariantCulture);
        _ = _db.SetAddAsync(NodeKey(incarnation), userId, CommandFlags.FireAndForget);
        var added = (long)await _db.ScriptEvaluateAsync(AddScript, [UserKey(userId)], [clientId, token, maxDevices]).ConfigureAwait(false);
        return added == 1 ? token : null;
    }

    /// <summary>Retried for a while when Redis is out of reach: a device left behind would count against the quota and show the user online.</summary>
    public async ValueTask<bool> RemoveAsync(string userId, string clientId, string token)
    {
        for (var attempt = 1; ; attempt++)
        {
            try
            {
                return (long)await _db.ScriptEvaluateAsync(RemoveScript, [UserKey(userId)], [clientId, token]).ConfigureAwait(false) == 1;
            }
            catch (Exception ex) when (ex is RedisException or TimeoutException && attempt < 30)
            {
                ClusterLog.RedisFailed(logger, "device leaving", ex.Message);
                await Task.Delay(TimeSpan.FromSeconds(1)).ConfigureAwait(false);
            }
            catch (Exception ex) when (ex is RedisException or TimeoutException)
            {
                ClusterLog.RedisFailed(logger, "device leaving (given up: swept when this node stops or dies)", ex.Message);
                return false;
            }
        }
    }

    public async ValueTask<string[]> DevicesAsync(string userId)
    {
        var entries = await _db.HashGetAllAsync(UserKey(userId)).ConfigureAwait(false);
        Array.Sort(entries, static (a, b) => ConnectedAt(a).CompareTo(ConnectedAt(b)));
        return Array.ConvertAll(entries, static e => (string)e.Name!);
    }

    static long ConnectedAt(HashEntry entry)
    {
        var value = (string)entry.Value!;
        return long.TryParse(value.AsSpan(0, Math.Max(0, value.IndexOf('|', StringComparison.Ordinal))), NumberStyles.None, CultureInfo.InvariantCulture, out var at) ? at : 0;
    }

    /// <summary>The node's user list stays for the sweep after it leaves (<see cref="SweepAsync"/>).</summary>
    public async ValueTask<IReadOnlyCollection<string>> RemoveThisNodeAsync()
    {
        var (_, changed) = await RemoveNodeAsync(incarnation).ConfigureAwait(false);
        return changed;
    }

    /// <summary>
    /// A node that died or left: its devices go, and presence hears of every user it had a device for, changed
    /// now or not, so a publish the node did not get to make before it went is made here.
    /// </summary>
    public async Task SweepAsync(string goneIncarnation)
    {
        var (users, _) = await RemoveNodeAsync(goneIncarnation).ConfigureAwait(false);
        await _db.KeyDeleteAsync(NodeKey(goneIncarnation)).ConfigureAwait(false);
        foreach (var user in users)
        {
            ChangedElsewhere?.Invoke(user);
        }
    }

    async Task<(string[] Users, List<string> Changed)> RemoveNodeAsync(string node)
    {
        var changed = new List<string>();
        var users = Array.ConvertAll(await _db.SetMembersAsync(NodeKey(node)).ConfigureAwait(false), u => (string)u!);
        var removals = Array.ConvertAll(users, user => _db.ScriptEvaluateAsync(RemoveNodeScript, [UserKey(user)], [node]));
        for (var i = 0; i < users.Length; i++)
        {
            if ((long)await removals[i].ConfigureAwait(false) > 0)
            {
                changed.Add(users[i]);
            }
        }

        return (users, changed);
    }
}
