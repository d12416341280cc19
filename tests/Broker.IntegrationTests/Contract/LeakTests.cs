using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// Contract §3, "read access is enforced twice": wildcards, retained messages and wills never
/// carry a message to someone the rules do not let read it.
/// </summary>
public sealed class LeakTests
{
    /// <summary>Presence (§10, PresenceTests) would also reach the wildcard subscribers and the retained count here.</summary>
    static void NoPresence(Dictionary<string, string?> settings) => settings["Broker:Presence:Enabled"] = "false";

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Wildcard_OnAnotherUsersTree_DeliversTheFeedButNeverTheInbox(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);
        await carol.SubscribeOkAsync("IMS/bob/#");
        await carol.SubscribeOkAsync("IMS/bob/+/+/+/alice");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        var deniedBefore = broker.Counters.ReadDenied;

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Add/GFReq/alice", "private");
        await Expect.PublishAcceptedAsync(bob, "IMS/bob/status", "public");

        await carol.ExpectOnlyAsync("IMS/bob/status", "public");
        Assert.True(broker.Counters.ReadDenied > deniedBefore); // the read check at delivery stopped it
    }

    [Fact]
    public async Task RetainedMessageInAnInbox_IsNotDeliveredToAWildcardSubscriber()
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await alice.PublishAsync("IMS/bob/Inbox/Add/GFReq/alice", "retained secret", retain: true);
        await bob.PublishAsync("IMS/bob/status", "retained feed", retain: true);

        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await carol.SubscribeOkAsync("IMS/bob/#");
        await bob.PublishAsync("IMS/bob/status", "live marker");

        var first = await carol.NextAsync();
        Assert.Equal(("IMS/bob/status", "retained feed", true), (first.ApplicationMessage.Topic, TestClient.Text(first), first.ApplicationMessage.Retain));
        await carol.ExpectOnlyAsync("IMS/bob/status", "live marker");

        // The owner does get his retained inbox message.
        await using var bobLaptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob");
        await bobLaptop.SubscribeOkAsync("IMS/bob/Inbox/#");
        await bobLaptop.ExpectOnlyAsync("IMS/bob/Inbox/Add/GFReq/alice", "retained secret");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Will_AimedAtAnotherUsersTopic_IsRefusedAtConnect(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();

        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version, expectSuccess: false,
            configure: o => o.WithWillTopic("IMS/bob/Inbox/Add/GFReq/alice").WithWillPayload("forged will"));

        // v3.1.1 0x05 and v5 0x87 both read as NotAuthorized through MQTTnet.
        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, carol.ConnectResult.ResultCode);
    }

    [Fact]
    public async Task Will_OnOwnFeed_IsAcceptedAndDeliveredOnAbnormalClose()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/carol/status");
        var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol",
            configure: o => o.WithWillTopic("IMS/carol/status").WithWillPayload("offline").WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce));

        carol.Client.Dispose(); // the socket goes without DISCONNECT

        var will = await bob.NextAsync();
        Assert.Equal(("IMS/carol/status", "offline"), (will.ApplicationMessage.Topic, TestClient.Text(will)));
        Assert.Contains(will.ApplicationMessage.UserProperties, p => p.Name == "ims-sender" && p.ReadValueAsString() == "carol");
    }
}
