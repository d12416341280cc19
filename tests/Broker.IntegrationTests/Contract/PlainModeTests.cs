using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §8: with Broker:Conventions:Enabled = false the broker is a standard MQTT broker.</summary>
public sealed class PlainModeTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task AnyClientIdAndTopic_Work_WithoutStamps(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sensor-sub", version: version);
        await sub.SubscribeOkAsync("factory/+/temperature");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "", version: version); // empty id: the broker assigns one

        await Expect.PublishAcceptedAsync(pub, "IMS/p2p/sensor-sub", "no P2P routing in plain mode");
        await Expect.PublishAcceptedAsync(pub, "factory/line1/temperature", "21.5");

        // The P2P-looking publish went nowhere (no subscription matches it); the reading arrives unstamped.
        var received = await sub.NextAsync();
        Assert.Equal(("factory/line1/temperature", "21.5"), (received.ApplicationMessage.Topic, TestClient.Text(received)));
        Assert.Null(received.ApplicationMessage.UserProperties);
    }

    [Fact]
    public async Task Authentication_StillApplies_WhenAnonymousIsOff()
    {
        await using var broker = await TestBroker.StartAsync(s =>
        {
            s["Broker:Conventions:Enabled"] = "false";
            TestBroker.AddDemoUsers(s);
        });

        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(broker.MqttPort, "any-id", user: null));
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "any-id", "alice", "wrong"));
        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "any-id", "alice"));
    }

    [Fact]
    public async Task ConfiguredAclRules_StillApply()
    {
        await using var broker = await TestBroker.StartAsync(s =>
        {
            s["Broker:Conventions:Enabled"] = "false";
            TestBroker.AddDemoUsers(s);
            s["Broker:Acl:0:Topic"] = "devices/%u/#";
            s["Broker:Acl:0:Access"] = "all";
            s["Broker:Acl:1:Topic"] = "public/#";
            s["Broker:Acl:1:Access"] = "read";
        });
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "alice-1", "alice");

        await Expect.PublishAcceptedAsync(alice, "devices/alice/led", "on");
        await Expect.PublishRefusedAsync(broker, alice, "devices/bob/led", MqttClientPublishReasonCode.NotAuthorized);
        await Expect.PublishRefusedAsync(broker, alice, "public/news", MqttClientPublishReasonCode.NotAuthorized);
        await alice.SubscribeOkAsync("public/#");
        await Expect.SubscribeRefusedAsync(alice, "devices/+/led");
    }
}
