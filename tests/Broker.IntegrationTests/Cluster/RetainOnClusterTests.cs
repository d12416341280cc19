using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Cluster;

/// <summary>The tests of <see cref="RetainTests"/> with the broker in cluster mode (one node on Redis).</summary>
public sealed class RetainOnClusterTests(ClusterRedis redis) : RetainTests, IClassFixture<ClusterRedis>
{
    protected override ClusterRedis ClusterRedis => redis;
}
