using Broker.Engine.Cluster;
using Microsoft.Extensions.DependencyInjection;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// Tests that start their broker through these methods run as written on a single node, and again in cluster
/// mode in a derived class that sets <see cref="ClusterRedis"/> (Cluster/*OnClusterTests): the same MQTT
/// behaviour is expected of both.
/// </summary>
public abstract class BrokerTestBase
{
    /// <summary>When set, the broker runs in cluster mode on this Redis, emptied before each start.</summary>
    protected virtual ClusterRedis? ClusterRedis => null;

    protected async Task<TestBroker> StartPlainAsync(Action<Dictionary<string, string?>>? configure = null, bool fakeClock = false)
    {
        await PrepareAsync();
        return await CheckedAsync(TestBroker.StartPlainAsync(settings =>
        {
            configure?.Invoke(settings);
            ClusterRedis?.AddSettings(settings);
        }, fakeClock));
    }

    protected async Task<TestBroker> StartImsAsync(Action<Dictionary<string, string?>>? configure = null, bool fakeClock = false)
    {
        await PrepareAsync();
        return await CheckedAsync(TestBroker.StartImsAsync(settings =>
        {
            configure?.Invoke(settings);
            ClusterRedis?.AddSettings(settings);
        }, fakeClock));
    }

    Task PrepareAsync() => ClusterRedis?.FlushAsync() ?? Task.CompletedTask;

    /// <summary>A cluster run that quietly ran on one node would prove nothing.</summary>
    async Task<TestBroker> CheckedAsync(Task<TestBroker> starting)
    {
        var broker = await starting;
        if (ClusterRedis is not null && broker.Services.GetRequiredService<IClusterLink>() is SingleNode)
        {
            await broker.DisposeAsync();
            Assert.Fail("the broker started without its cluster link");
        }

        return broker;
    }
}
