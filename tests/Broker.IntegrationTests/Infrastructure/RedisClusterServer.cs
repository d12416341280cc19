using System.Diagnostics;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A Redis Cluster of three primaries (no replicas): three <see cref="RedisServer"/>s with cluster mode on,
/// joined by <c>redis-cli --cluster create</c>, each on its own free port and temp directory (AOF, fsync always).
/// </summary>
public sealed class RedisClusterServer : IRedisFixture
{
    const string Cli = "/usr/bin/redis-cli";
    const int Primaries = 3;
    readonly List<RedisServer> _servers = [];
    readonly int[] _ports;

    RedisClusterServer(int[] ports) => _ports = ports;

    /// <summary>Every primary: a client that knows one learns the others, but any one may be down.</summary>
    public string Endpoint => string.Join(",", _servers.Select(s => s.Endpoint));

    public static async Task<RedisClusterServer> StartAsync()
    {
        // A port and its cluster bus port per node: the default bus port (port + 10000) may be out of range or taken.
        var ports = RedisServer.FreePorts(Primaries * 2);
        var cluster = new RedisClusterServer(ports);
        try
        {
            await cluster.LaunchAsync();
            await RunCliAsync(["--cluster", "create", .. cluster._servers.Select(s => s.Endpoint), "--cluster-replicas", "0", "--cluster-yes"]);
            await cluster.WaitUntilOkAsync();
        }
        catch
        {
            await cluster.DisposeAsync();
            throw;
        }

        return cluster;
    }

    public async Task KillAsync()
    {
        foreach (var server in _servers)
        {
            await server.KillAsync();
        }
    }

    /// <summary>Each node reloads its AOF and nodes.conf, so the cluster forms again by itself.</summary>
    public async Task RestartAsync()
    {
        foreach (var server in _servers)
        {
            await server.RestartAsync();
        }

        await WaitUntilOkAsync();
    }

    public async ValueTask DisposeAsync()
    {
        foreach (var server in _servers)
        {
            await server.DisposeAsync();
        }

        _servers.Clear();
    }

    async Task LaunchAsync()
    {
        for (var i = 0; i < Primaries; i++)
        {
            _servers.Add(await RedisServer.StartAsync(_ports[i],
                "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
                "--cluster-port", _ports[Primaries + i].ToString()));
        }
    }

    /// <summary>Until every node says cluster_state:ok (all slots covered, as that node sees it).</summary>
    async Task WaitUntilOkAsync()
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        foreach (var server in _servers)
        {
            while (!(await RunCliAsync(["-p", server.Port.ToString(), "cluster", "info"])).Contains("cluster_state:ok", StringComparison.Ordinal))
            {
                if (DateTime.UtcNow > deadline)
                {
                    throw new TimeoutException($"Redis Cluster at {Endpoint} did not reach cluster_state:ok within 30 s");
                }

                await Task.Delay(100);
            }
        }
    }

    static async Task<string> RunCliAsync(string[] args)
    {
        var start = new ProcessStartInfo(Cli) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in args)
        {
            start.ArgumentList.Add(arg);
        }

        using var process = Process.Start(start)!;
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var stdout = process.StandardOutput.ReadToEndAsync(timeout.Token);
        var stderr = process.StandardError.ReadToEndAsync(timeout.Token);
        await process.WaitForExitAsync(timeout.Token);
        if (process.ExitCode != 0)
        {
            throw new InvalidOperationException($"redis-cli {string.Join(' ', args)} exited with {process.ExitCode}: {await stdout}{await stderr}");
        }

        return await stdout;
    }
}
