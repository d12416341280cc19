using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §2: parent topics, level grammar, limits, $SYS, shared subscriptions.</summary>
public sealed class TopicTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Publish_UnknownParentTopic_IsRefusedAsTopicNameInvalid(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        await Expect.PublishRefusedAsync(broker, alice, "chat/A_B", MqttClientPublishReasonCode.TopicNameInvalid);
    }

    [Theory]
    [InlineData("IMS//alice")]          // empty level
    [InlineData("IMS/alice/")]          // empty last level
    [InlineData("IMS/alice/my status")] // space
    [InlineData("ims/alice")]           // parent topics are case-sensitive
    public async Task Publish_BadLevel_IsRefusedAsTopicNameInvalid(string topic)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await Expect.PublishRefusedAsync(broker, alice, topic, MqttClientPublishReasonCode.TopicNameInvalid);
    }

    [Fact]
    public async Task Publish_AboveTopicLimits_IsRefusedAsTopicNameInvalid()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Limits:MaxTopicLength"] = "40";
            s["Broker:Limits:MaxTopicLevels"] = "5";
        });
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await Expect.PublishRefusedAsync(broker, alice, "IMS/alice/" + new string('x', 40), MqttClientPublishReasonCode.TopicNameInvalid);
        await Expect.PublishRefusedAsync(broker, alice, "IMS/alice/a/b/c/d", MqttClientPublishReasonCode.TopicNameInvalid);
        await Expect.PublishAcceptedAsync(alice, "IMS/alice/a/b/c", "five levels are fine");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Subscribe_UnknownParent_IsRefusedPerFilterAndTheOthersSucceed(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);

        // One SUBSCRIBE, three filters: codes come back per filter, in order [MQTT-3.9.3-1].
        var result = await bob.Client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter("chat/#", MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter("IMS/alice", MqttQualityOfServiceLevel.AtMostOnce)
            .Build());

        var refused = version == MqttProtocolVersion.V500 ? MqttClientSubscribeResultCode.TopicFilterInvalid : MqttClientSubscribeResultCode.UnspecifiedError;
        Assert.Equal(
            [MqttClientSubscribeResultCode.GrantedQoS1, refused, MqttClientSubscribeResultCode.GrantedQoS0],
            result.Items.Select(i => i.ResultCode).ToArray());
    }

    [Theory]
    [InlineData("#")]
    [InlineData("+/alice")]
    [InlineData("IMS//x")]
    public async Task Subscribe_FilterOutsideParentTopics_IsRefused(string filter)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot", "assistant");

        // Even a service, which may read anything under IMS, cannot reach outside it.
        await Expect.SubscribeRefusedAsync(assistant, filter, MqttClientSubscribeResultCode.TopicFilterInvalid);
    }

    [Fact]
    public async Task Sys_IsReadOnly_AndReadableOnlyByTheSysRoles()
    {
        // Broker:Sys:Roles, default ["admin", "service"]: a plain user is refused per filter in SUBACK.
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await using var alice311 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-laptop", "alice", MqttProtocolVersion.V311);
        await using var admin = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@admin-console", "admin");
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@assistant-1", "assistant", MqttProtocolVersion.V311);

        await Expect.SubscribeRefusedAsync(alice, "$SYS/#");
        await Expect.SubscribeRefusedAsync(alice311, "$SYS/broker/uptime");
        await admin.SubscribeOkAsync("$SYS/#");
        await assistant.SubscribeOkAsync("$SYS/broker/+");

        foreach (var client in new[] { alice, alice311, admin, assistant })
        {
            await Expect.PublishRefusedAsync(broker, client, "$SYS/broker/uptime", MqttClientPublishReasonCode.NotAuthorized);
        }
    }

    [Fact]
    public async Task SharedSubscription_ForAService_SharesTheInboxLoad()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var worker1 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@worker-1", "assistant");
        await using var worker2 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@worker-2", "assistant", MqttProtocolVersion.V311);
        await worker1.SubscribeOkAsync("$share/bots/IMS/assistant/Inbox/#");
        await worker2.SubscribeOkAsync("$share/bots/IMS/assistant/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        for (var i = 0; i < 4; i++)
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/assistant/Inbox/Ask/alice", $"q{i}");
        }

        // Round robin over the two online members: two each, every question answered once.
        var got = new[] { await worker1.NextAsync(), await worker1.NextAsync(), await worker2.NextAsync(), await worker2.NextAsync() };
        Assert.Equal(["q0", "q1", "q2", "q3"], got.Select(TestClient.Text).Order().ToArray());
    }

    [Fact]
    public async Task SharedSubscription_FilterStillFollowsTheRules()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await Expect.SubscribeRefusedAsync(alice, "$share/spy/IMS/bob/Inbox/#");
        await Expect.SubscribeRefusedAsync(alice, "$share/spy/chat/#", MqttClientSubscribeResultCode.TopicFilterInvalid);
        await alice.SubscribeOkAsync("$share/me/IMS/alice/Inbox/#");
    }
}
