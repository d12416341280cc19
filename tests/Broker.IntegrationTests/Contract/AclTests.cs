using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// Contract §3, row by row, with the default rules: who may publish and subscribe where.
/// Each refusal is checked in both protocol versions, and each "nobody else receives it" with a
/// marker message published after it (ordering through one session proves nothing came first).
/// </summary>
public sealed class AclTests
{
    /// <summary>Presence (§10, PresenceTests) would also reach the wildcard subscribers and the retained count here.</summary>
    static void NoPresence(Dictionary<string, string?> settings) => settings["Broker:Presence:Enabled"] = "false";

    public static TheoryData<MqttProtocolVersion> Versions => new() { MqttProtocolVersion.V311, MqttProtocolVersion.V500 };

    // ---- P/u and P/u/... outside Inbox: the user's own feed -------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Feed_OwnerPublishes_AnyUserReceives(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);
        await carol.SubscribeOkAsync("IMS/alice");
        await carol.SubscribeOkAsync("IMS/alice/moments/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        await Expect.PublishAcceptedAsync(alice, "IMS/alice", "online");
        await Expect.PublishAcceptedAsync(alice, "IMS/alice/moments/1", "photo");

        await carol.ExpectOnlyAsync("IMS/alice", "online");
        await carol.ExpectOnlyAsync("IMS/alice/moments/1", "photo");
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Feed_OtherUserPublishes_IsRefusedAndNotDelivered(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/alice/#");
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await Expect.PublishRefusedAsync(broker, carol, "IMS/alice", MqttClientPublishReasonCode.NotAuthorized, "fake status");
        await Expect.PublishRefusedAsync(broker, carol, "IMS/alice/profile", MqttClientPublishReasonCode.NotAuthorized, "fake profile");
        await Expect.PublishAcceptedAsync(alice, "IMS/alice", "real");

        await bob.ExpectOnlyAsync("IMS/alice", "real");
    }

    // ---- P/u/Inbox/.../s: friend requests and direct messages -----------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Inbox_SignedWithOwnId_ReachesEveryDeviceOfTheOwner(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob");
        await phone.SubscribeOkAsync("IMS/bob/Inbox/#");
        await laptop.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Add/GFReq/alice", "{\"text\":\"hi\"}");
        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/alice", "direct, no sub-kind");

        foreach (var device in new[] { phone, laptop })
        {
            await device.ExpectOnlyAsync("IMS/bob/Inbox/Add/GFReq/alice", "{\"text\":\"hi\"}");
            await device.ExpectOnlyAsync("IMS/bob/Inbox/alice", "direct, no sub-kind");
        }
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Inbox_ForgedSender_IsRefusedAndNotDelivered(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        await Expect.PublishRefusedAsync(broker, alice, "IMS/bob/Inbox/Add/GFReq/carol", MqttClientPublishReasonCode.NotAuthorized, "forged");
        await Expect.PublishRefusedAsync(broker, alice, "IMS/bob/Inbox", MqttClientPublishReasonCode.NotAuthorized, "unsigned");
        await Expect.PublishRefusedAsync(broker, alice, "IMS/nobody/Inbox/alice", MqttClientPublishReasonCode.NotAuthorized, "no such user");
        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Add/GFReq/alice", "genuine");

        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Add/GFReq/alice", "genuine");
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Inbox_OfAnotherUser_CannotBeSubscribed(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);

        await Expect.SubscribeRefusedAsync(carol, "IMS/bob/Inbox/#");
        await Expect.SubscribeRefusedAsync(carol, "IMS/bob/Inbox/Add/GFReq/alice");
        await Expect.SubscribeRefusedAsync(carol, "IMS/+/Inbox/#");
        await Expect.SubscribeRefusedAsync(carol, "IMS/#");
        await Expect.SubscribeRefusedAsync(carol, "IMS/+");
    }

    // ---- P/p2p/<clientId> ------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task P2p_Topics_CannotBeSubscribedByAnyone(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot", "assistant", version);

        await Expect.SubscribeRefusedAsync(bob, "IMS/p2p/GID_IMS@@@bob-phone");
        await Expect.SubscribeRefusedAsync(bob, "IMS/p2p/#");
        await Expect.SubscribeRefusedAsync(assistant, "IMS/p2p/#");
    }

    // ---- P/<group>/s -----------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Group_MemberPublishesSigned_MembersReceive(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await bob.SubscribeOkAsync("IMS/Group123/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        await alice.SubscribeOkAsync("IMS/Group123/+");

        await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", "hello group");

        await bob.ExpectOnlyAsync("IMS/Group123/alice", "hello group");
        await alice.ExpectOnlyAsync("IMS/Group123/alice", "hello group");
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Group_ForgedSenderOrNonMember_IsRefused(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/Group123/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);

        await Expect.PublishRefusedAsync(broker, alice, "IMS/Group123/bob", MqttClientPublishReasonCode.NotAuthorized, "as bob");
        await Expect.PublishRefusedAsync(broker, alice, "IMS/Group123/alice/extra", MqttClientPublishReasonCode.NotAuthorized, "too deep");
        await Expect.PublishRefusedAsync(broker, carol, "IMS/Group123/carol", MqttClientPublishReasonCode.NotAuthorized, "not a member");
        await Expect.SubscribeRefusedAsync(carol, "IMS/Group123/#");
        await Expect.SubscribeRefusedAsync(carol, "IMS/Group123/alice");
        await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", "real");

        await bob.ExpectOnlyAsync("IMS/Group123/alice", "real");
    }

    // ---- P/System/... ----------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task System_ServiceAndAdminPublish_EveryoneReads(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        await alice.SubscribeOkAsync("IMS/System/#");
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot", "assistant", version);
        await using var admin = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@console", "admin", version);

        await Expect.PublishAcceptedAsync(assistant, "IMS/System/Beijing", "weather");
        await Expect.PublishAcceptedAsync(admin, "IMS/System/Announcements", "maintenance");
        await Expect.PublishRefusedAsync(broker, alice, "IMS/System/Beijing", MqttClientPublishReasonCode.NotAuthorized, "from alice");
        await Expect.PublishAcceptedAsync(assistant, "IMS/System/Beijing", "marker");

        await alice.ExpectOnlyAsync("IMS/System/Beijing", "weather");
        await alice.ExpectOnlyAsync("IMS/System/Announcements", "maintenance");
        await alice.ExpectOnlyAsync("IMS/System/Beijing", "marker");
    }

    // ---- anything else under P ------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public async Task Unknown_SecondLevel_IsRefused(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        await Expect.PublishRefusedAsync(broker, alice, "IMS/nobody/x", MqttClientPublishReasonCode.NotAuthorized);
        await Expect.PublishRefusedAsync(broker, alice, "IMS/p2p", MqttClientPublishReasonCode.NotAuthorized);
        await Expect.SubscribeRefusedAsync(alice, "IMS/nobody/#");
    }

    [Fact]
    public async Task Service_MayPublishAndSubscribeAnywhereUnderTheParent()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot", "assistant");
        await assistant.SubscribeOkAsync("IMS/+/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/alice/Inbox/#");

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "seen by the pipeline");
        await Expect.PublishAcceptedAsync(assistant, "IMS/alice/Inbox/Reply/assistant", "answer");

        await assistant.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "seen by the pipeline");
        await assistant.ExpectOnlyAsync("IMS/alice/Inbox/Reply/assistant", "answer");
        await alice.ExpectOnlyAsync("IMS/alice/Inbox/Reply/assistant", "answer");
    }
}
