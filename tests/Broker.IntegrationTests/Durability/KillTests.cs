using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>
/// Contract §6 and issue #5: what was acknowledged survives <c>kill -9</c> of the broker process and
/// a restart on the same data directory — sessions, queues, P2P mailboxes, retained messages.
/// </summary>
public sealed class KillTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-kill-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task AcknowledgedMessages_SurviveKill9_InOrderAndQos2ExactlyOnce(MqttProtocolVersion version)
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version, cleanStart: false, sessionExpiry: 86400))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
            await bob.SubscribeOkAsync("IMS/Group123/#");
        }

        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version))
        {
            for (var i = 0; i < 100; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"dm {i}");
                await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", $"group {i}");
            }

            for (var i = 0; i < 20; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Q2/alice", $"q2 {i}", MqttQualityOfServiceLevel.ExactlyOnce);
            }

            for (var i = 0; i < 10; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@bob-phone", $"p2p {i}");
            }
        }

        await broker.KillAsync();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);

        await using var back = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@bob-phone", "bob", version, cleanStart: false, sessionExpiry: 86400);
        Assert.True(back.ConnectResult.IsSessionPresent);
        var byTopic = new Dictionary<string, List<string>>();
        for (var i = 0; i < 230; i++)
        {
            var m = await back.NextAsync();
            var list = byTopic.TryGetValue(m.ApplicationMessage.Topic, out var l) ? l : byTopic[m.ApplicationMessage.Topic] = [];
            list.Add(TestClient.Text(m));
        }

        Assert.Equal(Enumerable.Range(0, 100).Select(i => $"dm {i}"), byTopic["IMS/bob/Inbox/Msg/alice"]);
        Assert.Equal(Enumerable.Range(0, 100).Select(i => $"group {i}"), byTopic["IMS/Group123/alice"]);
        Assert.Equal(Enumerable.Range(0, 20).Select(i => $"q2 {i}"), byTopic["IMS/bob/Inbox/Q2/alice"]); // each exactly once
        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"p2p {i}"), byTopic["IMS/p2p/GID_IMS@@@bob-phone"]);

        // Nothing more: the marker comes next.
        await using var alice2 = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice2.PublishAsync("IMS/bob/Inbox/Msg/alice", "marker");
        await back.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "marker");
    }

    [Fact]
    public async Task P2pToAClientIdNeverSeen_SurvivesKill9_AndIsDeliveredOnFirstPersistentConnect()
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@carol-new-tablet", "welcome", MqttQualityOfServiceLevel.ExactlyOnce);
        }

        await broker.KillAsync();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);

        await using var tablet = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@carol-new-tablet", "carol", cleanStart: false, sessionExpiry: 3600);
        Assert.False(tablet.ConnectResult.IsSessionPresent); // a new session, filled from the mailbox
        await tablet.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@carol-new-tablet", "welcome");
    }

    [Fact]
    public async Task RetainedMessages_SurviveKill9_AndAnEmptyPayloadDeletes()
    {
        // Presence (its own retained message under IMS/bob, corrected after the crash) has its own tests.
        var settings = new Dictionary<string, string> { ["Broker:Presence:Enabled"] = "false" };
        var broker = await RunningBroker.StartAsync(_dir.FullName, settings);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob"))
        {
            await bob.PublishAsync("IMS/bob/status", "online", retain: true);
            await bob.PublishAsync("IMS/bob/avatar", "v1", retain: true);
            await bob.PublishAsync("IMS/bob/avatar", "v2", retain: true);
            await bob.PublishAsync("IMS/bob/mood", "happy", retain: true);
            await bob.PublishAsync("IMS/bob/mood", "", retain: true);
        }

        await broker.KillAsync();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName, settings);

        await using var carol = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await carol.SubscribeOkAsync("IMS/bob/#");
        var got = new[] { await carol.NextAsync(), await carol.NextAsync() }.Select(m => (m.ApplicationMessage.Topic, TestClient.Text(m), m.ApplicationMessage.Retain)).OrderBy(x => x.Topic).ToArray();
        Assert.Equal([("IMS/bob/avatar", "v2", true), ("IMS/bob/status", "online", true)], got);
        await using var bob2 = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob2.PublishAsync("IMS/bob/status", "marker");
        await carol.ExpectOnlyAsync("IMS/bob/status", "marker"); // no "mood": its deletion survived too
    }

    [Fact]
    public async Task InflightMessages_AreRedeliveredWithDupAfterKill9()
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600, autoAcknowledge: false);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "unacked");
        }

        var first = await bob.NextAsync(); // received, never acknowledged
        Assert.False(first.PacketIdentifier == 0);
        await broker.KillAsync();
        bob.Client.Dispose();

        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);
        await using var back = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);

        var again = await back.NextAsync();
        Assert.Equal(("IMS/bob/Inbox/Msg/alice", "unacked", true), (again.ApplicationMessage.Topic, TestClient.Text(again), again.ApplicationMessage.Dup)); // [MQTT-4.4.0-1]
    }

    [Fact]
    public async Task ClientIdBinding_SurvivesKill9()
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        await (await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob")).DisposeAsync();
        await broker.KillAsync();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);

        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(restarted.MqttPort, "GID_IMS@@@bob-phone", "alice"));
    }

    [Fact]
    public async Task CorruptStoreFile_StopsTheStartNamingTheFile()
    {
        var data = Directory.CreateDirectory(Path.Combine(_dir.FullName, "data"));
        await File.WriteAllTextAsync(Path.Combine(data.FullName, "broker.db"), "this is not a database, it is a shopping list");

        var (exitCode, _, stderr) = await BrokerProcess.RunAsync(new Dictionary<string, string> { ["Broker__DataPath"] = data.FullName });

        Assert.Equal(3, exitCode);
        Assert.Contains(Path.Combine(data.FullName, "broker.db"), stderr);
        Assert.Contains("backup", stderr);
    }

    [Fact]
    public async Task UsersAndGroupsChangedThroughTheAdminApi_SurviveKill9()
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        using (var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") })
        {
            http.DefaultRequestHeaders.Authorization = new System.Net.Http.Headers.AuthenticationHeaderValue("Basic", Convert.ToBase64String("admin:admin-pass"u8.ToArray()));
            Assert.Equal(System.Net.HttpStatusCode.Created, (await http.PostAsync("/api/users", Json("""{"name":"dave","password":"dave-secret-1"}"""))).StatusCode);
            Assert.Equal(System.Net.HttpStatusCode.NoContent, (await http.DeleteAsync("/api/users/carol")).StatusCode); // a configured user
            Assert.Equal(System.Net.HttpStatusCode.Created, (await http.PutAsync("/api/groups/Hiking", Json("""{"members":["dave","bob"]}"""))).StatusCode);
        }

        await broker.KillAsync();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);

        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(restarted.MqttPort, "GID_IMS@@@dave-phone", "dave", "dave-secret-1"));
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(restarted.MqttPort, "GID_IMS@@@carol-phone", "carol"));
        await using var dave = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@dave-laptop", "dave", password: "dave-secret-1");
        await dave.SubscribeOkAsync("IMS/Hiking/#");
    }

    static StringContent Json(string json) => new(json, System.Text.Encoding.UTF8, "application/json");
}
