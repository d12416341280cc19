using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Host;

/// <summary>
/// Broker:Mqtt:InlineIo = false returns to Kestrel's scheduling through the thread pool; the broker
/// behaves the same (every other test runs with the default, true).
/// </summary>
public sealed class InlineIoTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task WithInlineIoOff_QoS1And2_AreDeliveredAndAcknowledged(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:Mqtt:InlineIo"] = "false");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version: version);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version: version);

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "one", MqttQualityOfServiceLevel.AtLeastOnce);
        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "two", MqttQualityOfServiceLevel.ExactlyOnce);

        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "one");
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "two");
    }
}
