using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// Contract §12: a user blocks another; nothing the blocked user sends reaches the blocker (inbox, P2P, group,
/// feed, already queued messages included), the blocked user reads nothing of the blocker's feed, and is
/// not told: its publishes are acknowledged as usual. Managed over MQTT in <c>$IMS/</c> and by the admin API.
/// </summary>
public sealed class BlockListTests : IDisposable
{
    const string AlicePhone = "GID_IMS@@@alice-phone";
    const string BobPhone = "GID_IMS@@@bob-phone";
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-blocks-");

    public void Dispose() => _dir.Delete(recursive: true);

    static HttpClient Admin(TestBroker broker)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:admin-pass")));
        return http;
    }

    /// <summary>
    /// These tests watch feeds and inboxes message by message; the broker's presence messages (on the same
    /// feeds) would come in between. Presence under a block has its own test below.
    /// </summary>
    static void NoPresence(Dictionary<string, string?> settings) => settings["Broker:Presence:Enabled"] = "false";

    [Fact]
    public async Task TheBlockedUser_DoesNotSeeTheBlockersPresence()
    {
        // Contract §12 with §10: b receives nothing from u's presence. alice is blocked by bob; she watches the
        // presence of bob and carol. bob's retained presence (bob is online) must not come on subscribe, carol's does.
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob");
        await BlockAsync(bob, "alice");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice");
        await alice.SubscribeOkAsync("IMS/bob/Presence");
        await alice.SubscribeOkAsync("IMS/carol/Presence");
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");

        var first = await alice.NextAsync();
        Assert.Equal("IMS/carol/Presence", first.ApplicationMessage.Topic);
    }

    /// <summary>alice blocks bob over MQTT: QoS 1, acknowledged once durable.</summary>
    static async Task BlockAsync(TestClient blocker, string target, string verb = "block")
    {
        var result = await blocker.PublishAsync($"$IMS/{verb}/{target}", "");
        Assert.Equal(MqttClientPublishReasonCode.Success, result.ReasonCode);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Blocked_InboxP2pGroupAndRetainedFeed_NeverReachTheBlocker_ButAreAcknowledged(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice", version);
        await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
        await alice.SubscribeOkAsync("IMS/Group123/#");
        await alice.SubscribeOkAsync("IMS/bob/#");
        await BlockAsync(alice, "bob");

        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob", version);
        await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Msg/bob", "inbox");
        await Expect.PublishAcceptedAsync(bob, "IMS/p2p/" + AlicePhone, "p2p");
        await Expect.PublishAcceptedAsync(bob, "IMS/Group123/bob", "group");
        var retained = await bob.PublishAsync("IMS/bob/status", "retained feed", retain: true);
        Assert.Equal(MqttClientPublishReasonCode.Success, retained.ReasonCode);

        // carol still hears bob's feed: the message is withheld from alice only.
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);
        await carol.SubscribeOkAsync("IMS/bob/#");
        await carol.ExpectOnlyAsync("IMS/bob/status", "retained feed");

        // A later subscription of alice does not get the retained message either.
        await alice.SubscribeOkAsync("IMS/bob/status");
        await using var carolSends = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-laptop", "carol", version);
        await Expect.PublishAcceptedAsync(carolSends, "IMS/alice/Inbox/Msg/carol", "marker");
        await alice.ExpectOnlyAsync("IMS/alice/Inbox/Msg/carol", "marker");
        Assert.False(alice.HasPending);
        Assert.True(broker.Services.GetRequiredService<Broker.Ims.Blocks.BlockLists>().Withheld >= 4);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task TheBlockedUser_ReadsNothingOfTheBlockersFeed(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice", version);
        await Expect.PublishAcceptedAsync(alice, "IMS/alice/profile", "retained before the block");
        await BlockAsync(alice, "bob");

        // Not told: the subscription is granted, it just never carries alice's feed.
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob", version);
        await bob.SubscribeOkAsync("IMS/alice/#");
        await bob.SubscribeOkAsync("IMS/carol/#");
        await Expect.PublishAcceptedAsync(alice, "IMS/alice/status", "live");

        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);
        await Expect.PublishAcceptedAsync(carol, "IMS/carol/status", "marker");
        await bob.ExpectOnlyAsync("IMS/carol/status", "marker");
    }

    [Fact]
    public async Task AlreadyQueuedMessages_AreWithheld_AndUnblockRestores()
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using (var sub = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice", cleanStart: false, sessionExpiry: 3600))
        {
            await sub.SubscribeOkAsync("IMS/alice/Inbox/#");
        }

        await broker.WaitOfflineAsync(AlicePhone);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob"))
        {
            await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Msg/bob", "queued before the block");
            await Expect.PublishAcceptedAsync(bob, "IMS/p2p/" + AlicePhone, "p2p queued before the block");
        }

        using var http = Admin(broker);
        Assert.Equal(HttpStatusCode.NoContent, (await http.PutAsync("/api/users/alice/blocks/bob", null)).StatusCode);
        Assert.Equal(["bob"], (await http.GetFromJsonAsync<string[]>("/api/users/alice/blocks"))!);

        await using (var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol"))
        {
            await Expect.PublishAcceptedAsync(carol, "IMS/alice/Inbox/Msg/carol", "marker");
        }

        await using (var back = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice", cleanStart: false, sessionExpiry: 3600))
        {
            await back.ExpectOnlyAsync("IMS/alice/Inbox/Msg/carol", "marker");

            // Unblocked: bob reaches alice again.
            Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/users/alice/blocks/bob")).StatusCode);
            Assert.Empty((await http.GetFromJsonAsync<string[]>("/api/users/alice/blocks"))!);
            await using var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob");
            await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Msg/bob", "after the unblock");
            await back.ExpectOnlyAsync("IMS/alice/Inbox/Msg/bob", "after the unblock");
        }
    }

    [Fact]
    public async Task OfflineP2pInTheMailbox_IsWithheld_WhenTheDeviceComes()
    {
        const string Tablet = "GID_IMS@@@alice-tablet"; // no session yet: P2P waits in the mailbox (§5)
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob"))
        {
            await Expect.PublishAcceptedAsync(bob, "IMS/p2p/" + Tablet, "from bob");
        }

        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice"))
        {
            await BlockAsync(alice, "bob");
        }

        await using (var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol"))
        {
            await Expect.PublishAcceptedAsync(carol, "IMS/p2p/" + Tablet, "from carol");
        }

        await using var tablet = await TestClient.ConnectAsync(broker.MqttPort, Tablet, "alice", cleanStart: false, sessionExpiry: 3600);
        await tablet.ExpectOnlyAsync("IMS/p2p/" + Tablet, "from carol");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task UnblockOverMqtt_Restores(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice", version);
        await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob", version);

        await BlockAsync(alice, "bob");
        await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Msg/bob", "while blocked");
        await BlockAsync(alice, "bob", "unblock");
        await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Msg/bob", "after");

        await alice.ExpectOnlyAsync("IMS/alice/Inbox/Msg/bob", "after");
    }

    [Theory]
    [InlineData("$IMS/block/alice")] // oneself
    [InlineData("$IMS/block/Group123")] // a group
    [InlineData("$IMS/block/p2p")] // reserved
    [InlineData("$IMS/block/bad name")] // not a user id
    [InlineData("$IMS/mute/bob")] // no such command
    [InlineData("$IMS/block/bob/more")]
    public async Task ABadCommand_IsRefused_0x90(string topic)
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var v5 = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice", MqttProtocolVersion.V500);
        await using var v3 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-laptop", "alice", MqttProtocolVersion.V311);

        await Expect.PublishRefusedAsync(broker, v5, topic, MqttClientPublishReasonCode.TopicNameInvalid);
        await Expect.PublishRefusedAsync(broker, v3, topic, MqttClientPublishReasonCode.TopicNameInvalid);
    }

    [Fact]
    public async Task Commands_AreNotRouted_AndHashDoesNotSeeThem()
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        await using var service = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot", "assistant");
        await service.SubscribeOkAsync("IMS/#");
        var dollar = await service.SubscribeAsync("$IMS/#");
        Assert.NotEqual(MqttClientSubscribeResultCode.GrantedQoS1, dollar.Items.Single().ResultCode);

        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice");
        await BlockAsync(alice, "carol");
        await Expect.PublishAcceptedAsync(alice, "IMS/alice", "marker");

        await service.ExpectOnlyAsync("IMS/alice", "marker");
        Assert.Equal(0, broker.Engine.RetainedCount);
    }

    [Fact]
    public async Task BlockLists_SurviveARestart()
    {
        void Sqlite(Dictionary<string, string?> s)
        {
            s["Broker:Store:Type"] = "sqlite";
            s["Broker:DataPath"] = _dir.FullName;
        }

        await using (var broker = await TestBroker.StartImsAsync(s => { Sqlite(s); NoPresence(s); }))
        {
            await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice");
            await BlockAsync(alice, "bob");
            using var http = Admin(broker);
            Assert.Equal(HttpStatusCode.NoContent, (await http.PutAsync("/api/users/carol/blocks/bob", null)).StatusCode);
            Assert.Equal(HttpStatusCode.NoContent, (await http.PutAsync("/api/users/carol/blocks/alice", null)).StatusCode);
            Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/users/carol/blocks/alice")).StatusCode);
        }

        await using (var broker = await TestBroker.StartImsAsync(s => { Sqlite(s); NoPresence(s); }))
        {
            using var http = Admin(broker);
            Assert.Equal(["bob"], (await http.GetFromJsonAsync<string[]>("/api/users/alice/blocks"))!);
            Assert.Equal(["bob"], (await http.GetFromJsonAsync<string[]>("/api/users/carol/blocks"))!);

            await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice");
            await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
            await using var bob = await TestClient.ConnectAsync(broker.MqttPort, BobPhone, "bob");
            await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
            await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Msg/bob", "still blocked");
            await Expect.PublishAcceptedAsync(carol, "IMS/alice/Inbox/Msg/carol", "marker");
            await alice.ExpectOnlyAsync("IMS/alice/Inbox/Msg/carol", "marker");
        }
    }

    [Fact]
    public async Task AdminApi_ValidatesAndNeedsAnAdmin()
    {
        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        using var http = Admin(broker);
        Assert.Equal(HttpStatusCode.BadRequest, (await http.PutAsync("/api/users/alice/blocks/alice", null)).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await http.PutAsync("/api/users/alice/blocks/Group123", null)).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.GetAsync("/api/users/bad%20name/blocks")).StatusCode);

        using var anonymous = new HttpClient { BaseAddress = http.BaseAddress };
        Assert.Equal(HttpStatusCode.Unauthorized, (await anonymous.PutAsync("/api/users/alice/blocks/bob", null)).StatusCode);
        using var user = new HttpClient { BaseAddress = http.BaseAddress };
        user.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("alice:alice-pass")));
        Assert.Equal(HttpStatusCode.Forbidden, (await user.PutAsync("/api/users/alice/blocks/bob", null)).StatusCode);
        Assert.Empty((await http.GetFromJsonAsync<string[]>("/api/users/alice/blocks"))!);
    }

    [Fact]
    public async Task Mosquitto_BlockStep()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartImsAsync(NoPresence);
        var block = await Mosquitto.RunAsync("mosquitto_pub", "-V", "mqttv5", "-d", "-h", "127.0.0.1", "-p", broker.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture),
            "-i", "GID_IMS@@@bob-phone", "-u", "bob", "-P", "bob-pass", "-t", "$IMS/block/alice", "-m", "", "-q", "1");
        Assert.Equal(0, block.ExitCode);
        Assert.Contains("received PUBACK", block.Output);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, AlicePhone, "alice");
        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Add/GFReq/alice", "hi");
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await Expect.PublishAcceptedAsync(carol, "IMS/bob/Inbox/Add/GFReq/carol", "marker");
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Add/GFReq/carol", "marker");
    }
}
