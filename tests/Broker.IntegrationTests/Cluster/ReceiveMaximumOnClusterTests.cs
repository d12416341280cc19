using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Cluster;

/// <summary>The tests of <see cref="ReceiveMaximumTests"/> with the broker in cluster mode (one node on Redis).</summary>
public sealed class ReceiveMaximumOnClusterTests(ClusterRedis redis) : ReceiveMaximumTests, IClassFixture<ClusterRedis>
{
    // These hold commits open with their own store (GatedStore) in place of the broker's: a cluster's store is Redis.
    const string OwnStore = "replaces the store; a cluster's store is Redis";

    protected override ClusterRedis ClusterRedis => redis;

    [Theory(Skip = OwnStore)]
    [InlineData(MqttQualityOfServiceLevel.AtLeastOnce)]
    [InlineData(MqttQualityOfServiceLevel.ExactlyOnce)]
    public override Task MorePublishesUnacknowledgedThanReceiveMaximum_Disconnected0x93(MqttQualityOfServiceLevel qos) => base.MorePublishesUnacknowledgedThanReceiveMaximum_Disconnected0x93(qos);

    [Fact(Skip = OwnStore)]
    public override Task Qos1_AsManyUnacknowledgedAsReceiveMaximum_Accepted_AndQuotaComesBackWithThePubAck() => base.Qos1_AsManyUnacknowledgedAsReceiveMaximum_Accepted_AndQuotaComesBackWithThePubAck();

    [Fact(Skip = OwnStore)]
    public override Task V311_NotToldAReceiveMaximum_OnlySlowedNeverDisconnected() => base.V311_NotToldAReceiveMaximum_OnlySlowedNeverDisconnected();
}
