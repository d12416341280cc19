using Broker.Ims.Groups;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §7: groups from configuration, members read everything under P/&lt;group&gt;/#, offline too.</summary>
public sealed class GroupTests
{
    [Fact]
    public async Task OfflineMemberWithPersistentSession_ReceivesGroupMessagesLater()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 600))
        {
            await bob.SubscribeOkAsync("IMS/Group123/#");
        }

        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", "see you at 8", MqttQualityOfServiceLevel.ExactlyOnce);
        }

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 600);
        await back.ExpectOnlyAsync("IMS/Group123/alice", "see you at 8");
    }

    [Fact]
    public async Task GroupsFromConfiguration_AreEnforced()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Groups:1:Id"] = "Hiking";
            s["Broker:Groups:1:Members:0"] = "carol";
        });
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await carol.SubscribeOkAsync("IMS/Hiking/#");
        await Expect.PublishAcceptedAsync(carol, "IMS/Hiking/carol", "trail");
        await Expect.PublishRefusedAsync(broker, alice, "IMS/Hiking/alice", MqttClientPublishReasonCode.NotAuthorized);
        await carol.ExpectOnlyAsync("IMS/Hiking/carol", "trail");
    }

    [Fact]
    public async Task MembershipChangedAtRunTime_TakesEffectAtOnceIncludingDelivery()
    {
        await using var broker = await TestBroker.StartImsAsync();
        var groups = broker.Services.GetRequiredService<IGroupDirectory>();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/Group123/#");
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        groups.Set("Group123", ["alice", "carol"]); // bob leaves, carol joins

        await carol.SubscribeOkAsync("IMS/Group123/#");
        await Expect.PublishAcceptedAsync(carol, "IMS/Group123/carol", "welcome me");
        await Expect.PublishAcceptedAsync(alice, "IMS/alice", "feed marker");
        await bob.SubscribeOkAsync("IMS/alice");
        await Expect.PublishAcceptedAsync(alice, "IMS/alice", "feed marker 2");

        // bob's old subscription no longer delivers: the read check runs at delivery.
        await bob.ExpectOnlyAsync("IMS/alice", "feed marker 2");
        await carol.ExpectOnlyAsync("IMS/Group123/carol", "welcome me");
    }
}
