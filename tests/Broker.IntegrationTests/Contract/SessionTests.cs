using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §6 within one broker process (restart and crash survival come with the durable store).</summary>
public sealed class SessionTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PersistentSession_KeepsQos1And2MessagesInOrder_WithoutResubscribing(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version, cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
            await bob.SubscribeOkAsync("IMS/Group123/#");
        }

        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            for (var i = 0; i < 20; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"dm {i}", i % 2 == 0 ? MqttQualityOfServiceLevel.AtLeastOnce : MqttQualityOfServiceLevel.ExactlyOnce);
                await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", $"group {i}");
            }

            await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "qos 0 is not kept offline", MqttQualityOfServiceLevel.AtMostOnce);
        }

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version, cleanStart: false, sessionExpiry: 3600);
        Assert.True(back.ConnectResult.IsSessionPresent);
        for (var i = 0; i < 20; i++)
        {
            await back.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", $"dm {i}");
            await back.ExpectOnlyAsync("IMS/Group123/alice", $"group {i}");
        }
    }

    [Fact]
    public async Task CleanSession_ForgetsEverything()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", MqttProtocolVersion.V311, cleanStart: false))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await using var clean = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", MqttProtocolVersion.V311, cleanStart: true);

        Assert.False(clean.ConnectResult.IsSessionPresent); // [MQTT-3.2.2-1]
    }

    [Fact]
    public async Task OfflineQueue_AboveMaxMessages_DropsTheOldestCountsThemAndTellsTheNextConnAck()
    {
        // Contract §6: beyond Broker:OfflineQueue:MaxMessages the oldest are dropped, counted, and the next
        // v5 CONNACK carries ims-dropped with their number.
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:OfflineQueue:MaxMessages"] = "10");
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await broker.WaitOfflineAsync("GID_IMS@@@bob-phone"); // else the first messages may still go to the closing connection
        var droppedBefore = broker.Counters.Dropped;
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            for (var i = 0; i < 15; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"m{i}");
            }
        }

        Assert.Equal(droppedBefore + 5, broker.Counters.Dropped);
        await using (var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600))
        {
            Assert.Equal("5", Expect.UserProperty(back.ConnectResult.UserProperties, "ims-dropped"));
            for (var i = 5; i < 15; i++)
            {
                await back.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", $"m{i}");
            }

            await broker.WaitAcknowledgedAsync("GID_IMS@@@bob-phone");
        }

        // Dropped stays dropped: the next reconnect brings nothing back.
        await using var again = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.Null(Expect.UserProperty(again.ConnectResult.UserProperties, "ims-dropped")); // told once
        await using var alice2 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice2.PublishAsync("IMS/bob/Inbox/Msg/alice", "marker");
        await again.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "marker");
    }
}
