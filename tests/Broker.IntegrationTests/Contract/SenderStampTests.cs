using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Packets;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §4: ims-sender and ims-client are set by the broker and cannot be forged.</summary>
public sealed class SenderStampTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Delivery_ToV5Subscriber_CarriesTheSendersIdentity(MqttProtocolVersion publisherVersion)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", publisherVersion);

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "hi");

        var received = await bob.NextAsync();
        Assert.Equal(
            [("ims-sender", "alice"), ("ims-client", "GID_IMS@@@alice-phone")],
            received.ApplicationMessage.UserProperties.Where(p => p.Name != "ims-id").Select(p => (p.Name, p.ReadValueAsString())).ToArray());
    }

    [Fact]
    public async Task ClientSuppliedStamps_AreRemovedAndOtherPropertiesKept()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "hi", configure: m => m
            .WithUserProperty("ims-sender", "admin")
            .WithUserProperty("trace", "42")
            .WithUserProperty("ims-client", "GID_IMS@@@admin-console"));

        var properties = (await bob.NextAsync()).ApplicationMessage.UserProperties.Where(p => p.Name != "ims-id").Select(p => (p.Name, p.ReadValueAsString())).ToArray();
        Assert.Equal([("trace", "42"), ("ims-sender", "alice"), ("ims-client", "GID_IMS@@@alice-phone")], properties);
    }

    [Fact]
    public async Task Delivery_ToV311Subscriber_CarriesThePayloadOnly()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", MqttProtocolVersion.V311);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "hi");

        var received = await bob.NextAsync();
        Assert.Equal("hi", TestClient.Text(received));
        Assert.Null(received.ApplicationMessage.UserProperties); // v3.1.1 has no properties: the topic rules speak for the sender
    }
}
