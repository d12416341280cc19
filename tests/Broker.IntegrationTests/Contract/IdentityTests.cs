using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §1: client ids, users, passwords, anonymous access, client id binding.</summary>
public sealed class IdentityTests
{
    public static TheoryData<string> BadClientIds => new()
    {
        "bob-phone",                          // no group
        "GID_OTHER@@@x",                      // group not registered
        "GID_IMS@@@",                         // empty device id
        "GID_IMS@@@a@@@b",                    // "@@@" twice
        "IMS@@@phone",                        // group without GID_
        "GID_IMS@@@bad/device",               // '/' in the device id
        "GID_IMS@@@" + new string('d', 55),   // 65 characters
    };

    [Theory]
    [MemberData(nameof(BadClientIds))]
    public async Task ClientId_NotGroupAtDevice_IsRefusedAsIdentifierRejected(string clientId)
    {
        await using var broker = await TestBroker.StartImsAsync();

        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedIdentifierRejected, await Connect.V311ReturnCodeAsync(broker.MqttPort, clientId, "bob"));
        Assert.Equal(MqttClientConnectResultCode.ClientIdentifierNotValid, await Connect.V5ResultAsync(broker.MqttPort, clientId, "bob"));
    }

    [Fact]
    public async Task ClientId_Empty_IsRefusedBecauseItCarriesTheGroup()
    {
        await using var broker = await TestBroker.StartImsAsync();

        // v3.1.1 would allow an empty id with clean session [MQTT-3.1.3-7]; the conventions do not.
        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedIdentifierRejected, await Connect.V311ReturnCodeAsync(broker.MqttPort, "", "bob"));
        Assert.Equal(MqttClientConnectResultCode.ClientIdentifierNotValid, await Connect.V5ResultAsync(broker.MqttPort, "", "bob"));
    }

    [Theory]
    [InlineData("GID_IMS@@@bob-phone")]
    [InlineData("GID_IMS@@@web.tab:1_a-b")]
    [InlineData("GID_IMS@@@" + "012345678901234567890123456789012345678901234567890123")] // exactly 64
    public async Task ClientId_Valid_IsAccepted(string clientId)
    {
        await using var broker = await TestBroker.StartImsAsync();

        Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, await Connect.V311ReturnCodeAsync(broker.MqttPort, clientId, "bob"));
        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, clientId, "bob"));
    }

    [Fact]
    public async Task GroupId_RegisteredInConfiguration_IsAccepted()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:GroupIds:0"] = "GID_IMS";
            s["Broker:GroupIds:1"] = "GID-Chat_2";
        });

        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "GID-Chat_2@@@phone", "bob"));
    }

    [Theory]
    [InlineData("alice", "wrong")]     // wrong password
    [InlineData("mallory", "x")]       // unknown user
    [InlineData("bad user", "x")]      // not a user id (space)
    [InlineData("a/b", "x")]           // not a user id ('/')
    public async Task Credentials_Bad_AreRefusedAsBadUserNameOrPassword(string user, string password)
    {
        await using var broker = await TestBroker.StartImsAsync();

        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedBadUsernameOrPassword, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@dev1", user, password));
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dev1", user, password));
        Assert.True(broker.Counters.ConnectionsRefused >= 2);
    }

    [Fact]
    public async Task Anonymous_ByDefault_IsRefusedAsNotAuthorized()
    {
        await using var broker = await TestBroker.StartImsAsync();

        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedNotAuthorized, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@dev1", user: null));
        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dev1", user: null));
    }

    [Fact]
    public async Task Anonymous_WhenAllowed_UsesTheDeviceIdAsUserId()
    {
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:AllowAnonymous"] = "true");
        await using var kiosk = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@kiosk1");

        // The device id is the user id: its own feed is writable, someone else's is not.
        Assert.Equal(MqttClientPublishReasonCode.Success, (await kiosk.PublishAsync("IMS/kiosk1/status", "up")).ReasonCode);
        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, (await kiosk.PublishAsync("IMS/alice/status", "up")).ReasonCode);
    }

    [Theory]
    [InlineData("GID_IMS@@@alice")]   // would become user alice without her password
    [InlineData("GID_IMS@@@System")]  // a reserved name
    [InlineData("GID_IMS@@@tab:1")]   // ':' is fine in a device id, not in a user id
    public async Task Anonymous_DeviceIdThatCannotBeItsOwnUser_IsRefused(string clientId)
    {
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:AllowAnonymous"] = "true");

        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedNotAuthorized, await Connect.V311ReturnCodeAsync(broker.MqttPort, clientId, user: null));
        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(broker.MqttPort, clientId, user: null));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task ClientId_OfAnotherUser_IsRefusedAndTheOwnerIsUntouched(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();

        // bob's phone: online, with a persistent session subscribed to his inbox.
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");

        if (version == MqttProtocolVersion.V311)
        {
            Assert.Equal(MqttConnectReturnCode.ConnectionRefusedNotAuthorized, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "alice", cleanSession: true));
        }
        else
        {
            Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "alice"));
        }

        // bob is still connected, with his session and subscription: a message reaches him.
        Assert.True(bob.Client.IsConnected);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "still yours");
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "still yours");
    }

    [Fact]
    public async Task ClientId_OfAnotherUser_DoesNotTouchTheOwnersOfflineQueue()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "queued");
        }

        // alice tries bob's device id with clean start, which would wipe the session if it were let in.
        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "alice"));

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.True(back.ConnectResult.IsSessionPresent);
        await back.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "queued");
    }

    [Fact]
    public async Task User_WithSeveralDevices_ReceivesOnEachDevice()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob", MqttProtocolVersion.V311);
        await phone.SubscribeOkAsync("IMS/bob/Inbox/#");
        await laptop.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "to all your devices");

        await phone.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "to all your devices");
        await laptop.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "to all your devices");
    }
}
