using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Cluster;

/// <summary>The tests of <see cref="QosTests"/> with the broker in cluster mode (one node on Redis).</summary>
public sealed class QosOnClusterTests(ClusterRedis redis) : QosTests, IClassFixture<ClusterRedis>
{
    protected override ClusterRedis ClusterRedis => redis;

    // Its three QoS 2 publishes go out back to back, and it expects the first two PUBRECs before the DISCONNECT:
    // that holds when a commit is instant (memory store). In a cluster every QoS 1/2 ack waits for Redis (rows for
    // readers on other nodes), and an ack still waiting when the third publish comes is not sent, by design (see
    // ReceiveMaximumTests.MorePublishesUnacknowledgedThanReceiveMaximum_Disconnected0x93): 1 or 0 PUBRECs, by timing.
    // The same rule, one publish at a time: ReceiveMaximumTests.Qos2_QuotaComesBackAtPubComp_NotAtPubRec, run on the cluster.
    [Fact(Skip = "timing: needs acks that do not wait for a commit; in a cluster they wait for Redis")]
    public override Task InboundReceiveMaximum_TooManyUnreleasedQos2_DisconnectedWith0x93() => base.InboundReceiveMaximum_TooManyUnreleasedQos2_DisconnectedWith0x93();
}
