namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A cluster as an operator runs it: a real redis-server (AOF, fsync always) on a free loopback port,
/// or a Redis Cluster of three such servers, and broker processes (Broker.dll) on free ports, nodes
/// n1..nN, each its own process so a test can kill -9 one. Presence is off (its messages would reach
/// the wildcard subscribers of the tests).
/// </summary>
public sealed class BrokerCluster : IAsyncDisposable
{
    readonly List<string> _dirs = [];
    readonly IDictionary<string, string>? _settings;

    BrokerCluster(IRedisFixture redis, IDictionary<string, string>? settings)
    {
        Redis = redis;
        _settings = settings;
    }

    public IRedisFixture Redis { get; }

    public List<RunningBroker?> Nodes { get; } = [];

    public RunningBroker this[int index] => Nodes[index] ?? throw new InvalidOperationException($"node n{index + 1} is not running");

    /// <param name="redisCluster">A Redis Cluster of three primaries (<see cref="RedisClusterServer"/>) instead of one redis-server.</param>
    public static async Task<BrokerCluster> StartAsync(int nodes = 3, IDictionary<string, string>? settings = null, bool redisCluster = false)
    {
        IRedisFixture redis = redisCluster ? await RedisClusterServer.StartAsync() : await RedisServer.StartAsync();
        var cluster = new BrokerCluster(redis, settings);
        try
        {
            // One at a time: two nodes starting together on two cores make each start slower, not faster.
            for (var i = 0; i < nodes; i++)
            {
                cluster.Nodes.Add(await cluster.StartNodeAsync(i));
            }
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }

        return cluster;
    }

    async Task<RunningBroker> StartNodeAsync(int index)
    {
        var dir = Directory.CreateTempSubdirectory($"ims-cluster-n{index + 1}-").FullName;
        _dirs.Add(dir);
        var settings = new Dictionary<string, string>
        {
            // Short timeouts: a test that kills Redis hears "unavailable" well within a client's CONNECT timeout.
            ["Broker:Cluster:Redis"] = Redis.Endpoint + ",syncTimeout=2000,asyncTimeout=2000,connectTimeout=2000",
            ["Broker:Cluster:NodeId"] = $"n{index + 1}",
            ["Broker:Presence:Enabled"] = "false",
        };
        foreach (var (key, value) in _settings ?? new Dictionary<string, string>())
        {
            settings[key] = value;
        }

        return await RunningBroker.StartAsync(dir, settings);
    }

    /// <summary>One more node (n{N+1}) joins.</summary>
    public async Task AddNodeAsync() => Nodes.Add(await StartNodeAsync(Nodes.Count));

    /// <summary>kill -9 of one node.</summary>
    public async Task KillAsync(int index)
    {
        if (Nodes[index] is { } node)
        {
            await node.KillAsync();
            await node.DisposeAsync();
            Nodes[index] = null;
        }
    }

    /// <summary>SIGTERM of one node (a drain); returns its exit code.</summary>
    public async Task<int> TerminateAsync(int index)
    {
        var node = this[index];
        var code = await node.TerminateAsync();
        await node.DisposeAsync();
        Nodes[index] = null;
        return code;
    }

    /// <summary>The node's counter of messages it received from other nodes (<c>/metrics</c>).</summary>
    public Task<double> EnvelopesReceivedAsync(int index) => MetricAsync(index, "ims_broker_cluster_envelopes_received");

    /// <summary>One value of the node's <c>/metrics</c>.</summary>
    public async Task<double> MetricAsync(int index, string name)
    {
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{this[index].HttpPort}") };
        return Metrics.Value(await http.GetStringAsync("/metrics"), name);
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var node in Nodes)
        {
            if (node is not null)
            {
                await node.DisposeAsync();
            }
        }

        await Redis.DisposeAsync();
        foreach (var dir in _dirs)
        {
            try
            {
                Directory.Delete(dir, recursive: true);
            }
            catch (IOException)
            {
            }
        }
    }
}
