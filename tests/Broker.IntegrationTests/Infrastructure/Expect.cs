using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Assertions for the contract's "refused" cases, which differ by protocol version, and for the basic delivery promise.</summary>
public static class Expect
{
    /// <summary>
    /// A QoS 1 publish the rules refuse: v5 gets the reason code in PUBACK; v3.1.1 cannot be told, so it
    /// is acknowledged and dropped, and counted (contract §2).
    /// </summary>
    public static async Task PublishRefusedAsync(TestBroker broker, TestClient publisher, string topic, MqttClientPublishReasonCode v5Reason, string payload = "refused")
    {
        var before = broker.Counters.PublishRefused;
        var result = await publisher.PublishAsync(topic, payload);
        var expected = publisher.Client.Options.ProtocolVersion == MqttProtocolVersion.V500 ? v5Reason : MqttClientPublishReasonCode.Success;
        Assert.Equal(expected, result.ReasonCode);
        Assert.Equal(before + 1, broker.Counters.PublishRefused);
    }

    /// <summary>The value of a user property (the last one of that name), or null.</summary>
    public static string? UserProperty(IReadOnlyCollection<MqttUserProperty>? properties, string name) =>
        properties?.LastOrDefault(p => p.Name == name)?.ReadValueAsString();

    public static async Task PublishAcceptedAsync(TestClient publisher, string topic, string payload, MqttQualityOfServiceLevel qos = MqttQualityOfServiceLevel.AtLeastOnce)
    {
        var result = await publisher.PublishAsync(topic, payload, qos);
        Assert.Equal(MqttClientPublishReasonCode.Success, result.ReasonCode);
    }

    /// <summary>
    /// alice sends bob's inbox one QoS 1 and one QoS 2 message; both are acknowledged and arrive once, in
    /// order: the basic promise, for tests that change how the broker does I/O.
    /// </summary>
    public static async Task InboxQoS1And2DeliveredAsync(TestBroker broker, MqttProtocolVersion version)
    {
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version: version);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version: version);

        await PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "one", MqttQualityOfServiceLevel.AtLeastOnce);
        await PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "two", MqttQualityOfServiceLevel.ExactlyOnce);

        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "one");
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "two");
    }

    /// <summary>SUBACK failure for one filter: 0x80 in v3.1.1, the given code in v5 [MQTT-3.9.3-2].</summary>
    public static async Task SubscribeRefusedAsync(TestClient subscriber, string filter, MqttClientSubscribeResultCode v5Reason = MqttClientSubscribeResultCode.NotAuthorized)
    {
        var result = await subscriber.SubscribeAsync(filter);
        var expected = subscriber.Client.Options.ProtocolVersion == MqttProtocolVersion.V500 ? v5Reason : MqttClientSubscribeResultCode.UnspecifiedError;
        Assert.Equal(expected, result.Items.Single().ResultCode);
    }
}
