using StackExchange.Redis;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A redis-server for one class of tests that run the in-process broker in cluster mode (one node).
/// The tests of a class run one at a time, so emptying it before each broker start means no test
/// sees the sessions, queues or retained messages an earlier one left behind.
/// </summary>
public sealed class ClusterRedis : IAsyncLifetime
{
    RedisServer _server = null!;
    ConnectionMultiplexer _admin = null!;

    public async Task InitializeAsync()
    {
        _server = await RedisServer.StartAsync();
        _admin = await ConnectionMultiplexer.ConnectAsync($"{_server.Endpoint},allowAdmin=true");
    }

    public void AddSettings(IDictionary<string, string?> settings)
    {
        settings["Broker:Cluster:Redis"] = _server.Endpoint;
        settings["Broker:Cluster:NodeId"] = "n1";
    }

    public Task FlushAsync() => _admin.GetServer(_server.Endpoint).FlushAllDatabasesAsync();

    public async Task DisposeAsync()
    {
        await _admin.DisposeAsync();
        await _server.DisposeAsync();
    }
}
