using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §5: IMS/p2p/&lt;clientId&gt; reaches exactly that device, without a subscription.</summary>
public sealed class P2pTests
{
    /// <summary>Presence (§10, PresenceTests) would also reach the wildcard subscribers and the retained count here.</summary>
    static void NoPresence(Dictionary<string, string?> settings) => settings["Broker:Presence:Enabled"] = "false";

    [Theory]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.AtMostOnce)]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.AtLeastOnce)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.ExactlyOnce)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.AtLeastOnce)]
    public async Task OnlineTarget_ReceivesOnTheSameTopicWithoutSubscribing(MqttProtocolVersion version, MqttQualityOfServiceLevel qos)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        await alice.PublishAsync("IMS/p2p/GID_IMS@@@bob-phone", "hello", qos);

        var received = await phone.NextAsync();
        Assert.Equal(("IMS/p2p/GID_IMS@@@bob-phone", "hello", qos), (received.ApplicationMessage.Topic, TestClient.Text(received), received.ApplicationMessage.QualityOfServiceLevel));
    }

    [Fact]
    public async Task OtherDevicesAndWildcardSubscribers_DoNotReceiveIt()
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob");
        await laptop.SubscribeOkAsync("IMS/bob/#");
        await using var pipeline = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot", "assistant");
        await pipeline.SubscribeOkAsync("IMS/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await alice.PublishAsync("IMS/p2p/GID_IMS@@@bob-phone", "for the phone only");
        await alice.PublishAsync("IMS/p2p/GID_IMS@@@bob-laptop", "for the laptop");
        await alice.PublishAsync("IMS/alice", "marker");

        await phone.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@bob-phone", "for the phone only");
        await laptop.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@bob-laptop", "for the laptop");
        await pipeline.ExpectOnlyAsync("IMS/alice", "marker"); // a P2P message never goes through subscriptions
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task OfflineTargetWithPersistentSession_GetsItWhenBack(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await (await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version, cleanStart: false, sessionExpiry: 3600)).DisposeAsync();
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@bob-phone", "while you were away");
        }

        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version, cleanStart: false, sessionExpiry: 3600);

        Assert.True(phone.ConnectResult.IsSessionPresent);
        await phone.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@bob-phone", "while you were away");
    }

    [Fact]
    public async Task MailboxesForAtMostMaxMailboxClientIds_AMessageForOneMoreIsDroppedAndCounted()
    {
        // Contract §5, Broker:Limits:MaxMailboxClientIds: a sender cannot fill memory by inventing client ids.
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:Limits:MaxMailboxClientIds"] = "1");
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@bob-phone", "kept");
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@bob-phone", "kept too"); // a mailbox that exists takes more
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@bob-laptop", "one client id too many");
        }

        Assert.Equal(1, broker.Counters.Dropped);
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob", cleanStart: false, sessionExpiry: 3600);
        await using (var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol"))
        {
            await carol.PublishAsync("IMS/p2p/GID_IMS@@@bob-laptop", "marker");
        }

        await laptop.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@bob-laptop", "marker"); // the dropped message never came
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.Equal("kept", TestClient.Text(await phone.NextAsync()));
        Assert.Equal("kept too", TestClient.Text(await phone.NextAsync()));
    }

    [Fact]
    public async Task AnyUser_MayWriteToAnyDevice()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var aliceWeb = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-web", "alice");
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", MqttProtocolVersion.V311);

        await Expect.PublishAcceptedAsync(carol, "IMS/p2p/GID_IMS@@@alice-web", "from carol");

        await aliceWeb.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@alice-web", "from carol");
    }

    [Fact]
    public async Task RetainFlag_IsIgnored_SoNothingLingersOnAP2pTopic()
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await alice.PublishAsync("IMS/p2p/GID_IMS@@@bob-phone", "once", retain: true);

        Assert.Equal("once", TestClient.Text(await phone.NextAsync()));
        Assert.Equal(0, broker.Engine.RetainedCount);
    }
}
