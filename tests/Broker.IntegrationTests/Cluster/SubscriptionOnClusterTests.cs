using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Cluster;

/// <summary>The tests of <see cref="SubscriptionTests"/> with the broker in cluster mode (one node on Redis).</summary>
public sealed class SubscriptionOnClusterTests(ClusterRedis redis) : SubscriptionTests, IClassFixture<ClusterRedis>
{
    protected override ClusterRedis ClusterRedis => redis;
}
