using System.Text.Json;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §10: the broker keeps IMS/&lt;user&gt;/Presence, retained, for every user; nobody else publishes there.</summary>
public sealed class PresenceTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-presence-");

    public void Dispose() => _dir.Delete(recursive: true);

    sealed record PresenceJson(string User, bool Online, string[] Devices, long? LastSeen);

    static PresenceJson Read(MqttApplicationMessageReceivedEventArgs e)
    {
        using var json = JsonDocument.Parse(e.ApplicationMessage.Payload);
        var root = json.RootElement;
        // The contract's field names, in its order.
        Assert.Equal(["user", "online", "devices", "lastSeen"], root.EnumerateObject().Select(p => p.Name).ToArray());
        return new PresenceJson(
            root.GetProperty("user").GetString()!,
            root.GetProperty("online").GetBoolean(),
            [.. root.GetProperty("devices").EnumerateArray().Select(d => d.GetString()!)],
            root.GetProperty("lastSeen").ValueKind == JsonValueKind.Null ? null : root.GetProperty("lastSeen").GetInt64());
    }

    static async Task<PresenceJson> NextPresenceAsync(TestClient watcher, string user = "bob")
    {
        var e = await watcher.NextAsync();
        Assert.Equal($"IMS/{user}/Presence", e.ApplicationMessage.Topic);
        Assert.Equal(MqttQualityOfServiceLevel.AtLeastOnce, e.ApplicationMessage.QualityOfServiceLevel);
        return Read(e);
    }

    static async Task<TestClient> WatchAsync(int port, string filter = "IMS/bob/Presence", MqttProtocolVersion version = MqttProtocolVersion.V500)
    {
        var carol = await TestClient.ConnectAsync(port, "GID_IMS@@@carol-watch", "carol", version);
        await carol.SubscribeOkAsync(filter);
        return carol;
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task FirstDevice_Online_ThenRetainedForLateReaders(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await WatchAsync(broker.MqttPort, version: version);
        var before = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);

        var e = await carol.NextAsync();
        Assert.Equal("""{"user":"bob","online":true,"devices":["GID_IMS@@@bob-phone"],"lastSeen":null}""", TestClient.Text(e));

        // Retained: a reader who comes later gets it at once, with the retain flag.
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        await alice.SubscribeOkAsync("IMS/bob/Presence");
        var retained = await alice.NextAsync();
        Assert.True(retained.ApplicationMessage.Retain);
        Assert.True(Read(retained).Online);

        await bob.Client.DisconnectAsync();
        var offline = await NextPresenceAsync(carol);
        Assert.False(offline.Online);
        Assert.Empty(offline.Devices);
        Assert.InRange(offline.LastSeen!.Value, before, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds());
    }

    [Fact]
    public async Task TwoDevices_BothListed_OnlineUntilTheLastLeaves_LastSeenKeptWhileOnline()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await WatchAsync(broker.MqttPort);
        await using (var first = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-old", "bob"))
        {
            Assert.True((await NextPresenceAsync(carol)).Online);
        }

        var seen = (await NextPresenceAsync(carol)).LastSeen;
        Assert.NotNull(seen);

        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        var one = await NextPresenceAsync(carol);
        Assert.Equal(["GID_IMS@@@bob-phone"], one.Devices);
        Assert.Equal(seen, one.LastSeen); // kept while online

        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob", MqttProtocolVersion.V311);
        var two = await NextPresenceAsync(carol);
        Assert.True(two.Online);
        Assert.Equal(["GID_IMS@@@bob-phone", "GID_IMS@@@bob-laptop"], two.Devices);

        await phone.Client.DisconnectAsync();
        var left = await NextPresenceAsync(carol);
        Assert.True(left.Online);
        Assert.Equal(["GID_IMS@@@bob-laptop"], left.Devices);
        Assert.Equal(seen, left.LastSeen);

        await laptop.Client.DisconnectAsync();
        var gone = await NextPresenceAsync(carol);
        Assert.False(gone.Online);
        Assert.True(gone.LastSeen > seen);
    }

    public enum Leaving { Disconnect, DroppedSocket, KeepAliveTimeout, AdminKick }

    [Theory]
    [InlineData(Leaving.Disconnect)]
    [InlineData(Leaving.DroppedSocket)]
    [InlineData(Leaving.KeepAliveTimeout)]
    [InlineData(Leaving.AdminKick)]
    public async Task LastDeviceLeaving_ForAnyReason_Offline(Leaving how)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await WatchAsync(broker.MqttPort);
        var connect = new MqttConnectPacket
        {
            ClientId = "GID_IMS@@@bob-phone",
            Username = "bob",
            Password = "bob-pass"u8.ToArray(),
            CleanSession = true,
            KeepAlivePeriod = (ushort)(how == Leaving.KeepAliveTimeout ? 1 : 60),
        };
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, connect);
        await using (raw)
        {
            Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, ack.ReturnCode);
            Assert.True((await NextPresenceAsync(carol)).Online);

            switch (how)
            {
                case Leaving.Disconnect:
                    await raw.SendAsync(new MqttDisconnectPacket());
                    break;
                case Leaving.DroppedSocket:
                    await raw.DisposeAsync();
                    break;
                case Leaving.KeepAliveTimeout:
                    break; // silent: closed after 1.5 s
                case Leaving.AdminKick:
                    Assert.True(broker.Engine.Disconnect("GID_IMS@@@bob-phone"));
                    break;
            }

            var offline = await NextPresenceAsync(carol);
            Assert.False(offline.Online);
            Assert.Empty(offline.Devices);
        }
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Takeover_BySameDevice_NoOfflineFlap(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await WatchAsync(broker.MqttPort);
        await using var first = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        Assert.Equal(["GID_IMS@@@bob-phone"], (await NextPresenceAsync(carol)).Devices);

        await using var second = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await first.Disconnected.WaitAsync(TestClient.Timeout);
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob", version);

        // The next update is the laptop joining: nothing (offline, online) came between.
        var next = await NextPresenceAsync(carol);
        Assert.Equal(["GID_IMS@@@bob-phone", "GID_IMS@@@bob-laptop"], next.Devices);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task ForgedPresence_Refused_EvenByTheUser(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await WatchAsync(broker.MqttPort);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await NextPresenceAsync(carol);
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@assistant-1", "assistant", version);

        await Expect.PublishRefusedAsync(broker, bob, "IMS/bob/Presence", MqttClientPublishReasonCode.NotAuthorized, """{"user":"bob","online":false}""");
        await Expect.PublishRefusedAsync(broker, assistant, "IMS/bob/Presence", MqttClientPublishReasonCode.NotAuthorized);

        // Neither reached carol, nor replaced the retained one.
        await bob.PublishAsync("IMS/bob/Presence/marker", "m");
        await carol.SubscribeOkAsync("IMS/bob/Presence/marker");
        await bob.PublishAsync("IMS/bob/Presence/marker", "m");
        await carol.ExpectOnlyAsync("IMS/bob/Presence/marker", "m");
        await using var late = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await late.SubscribeOkAsync("IMS/bob/Presence");
        Assert.True(Read(await late.NextAsync()).Online);
    }

    [Fact]
    public async Task ForgedPresenceWill_Refused()
    {
        await using var broker = await TestBroker.StartImsAsync();
        var result = await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", configure: o => o.WithWillTopic("IMS/bob/Presence").WithWillPayload("x"));
        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, result);
    }

    [Fact]
    public async Task ReadThroughTheFeedWildcard_PresenceYes_InboxNo()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var carol = await WatchAsync(broker.MqttPort, "IMS/bob/#");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        Assert.True((await NextPresenceAsync(carol)).Online);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "private");
        await Expect.PublishAcceptedAsync(bob, "IMS/bob/status", "marker");

        await carol.ExpectOnlyAsync("IMS/bob/status", "marker");
    }

    [Fact]
    public async Task Shutdown_OfflineStoredBeforeTheBrokerEnds()
    {
        var data = Path.Combine(_dir.FullName, "data");
        void Sqlite(Dictionary<string, string?> s)
        {
            s["Broker:Store:Type"] = "sqlite";
            s["Broker:DataPath"] = data;
        }

        var broker = await TestBroker.StartImsAsync(Sqlite);
        var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        await using (var carol = await WatchAsync(broker.MqttPort))
        {
            Assert.True((await NextPresenceAsync(carol)).Online);
        }

        await broker.DisposeAsync(); // graceful stop with bob still connected
        await bob.Disconnected.WaitAsync(TestClient.Timeout);
        bob.Client.Dispose();

        await using var again = await TestBroker.StartImsAsync(Sqlite);
        await using var reader = await WatchAsync(again.MqttPort);
        var stored = await NextPresenceAsync(reader);
        Assert.False(stored.Online);
        Assert.NotNull(stored.LastSeen);
    }

    [Fact]
    public async Task AfterKill9_UsersStillShownOnline_CorrectedAtStart()
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using (var carol = await WatchAsync(broker.MqttPort))
        {
            Assert.True((await NextPresenceAsync(carol)).Online);
        }

        await broker.KillAsync();
        bob.Client.Dispose();
        var restart = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);

        await using var reader = await WatchAsync(restarted.MqttPort);
        var corrected = await NextPresenceAsync(reader);
        Assert.False(corrected.Online);
        Assert.Empty(corrected.Devices);
        Assert.InRange(corrected.LastSeen!.Value, restart, DateTimeOffset.UtcNow.ToUnixTimeMilliseconds()); // lastSeen = the restart
    }

    [Fact]
    public async Task MosquittoSub_SeesThePresenceJson()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartImsAsync();
        await using var sub = await Mosquitto.Subscriber.StartAsync(
            "-h", "127.0.0.1", "-p", broker.MqttPort.ToString(), "-i", "GID_IMS@@@carol-phone", "-u", "carol", "-P", "carol-pass", "-t", "IMS/bob/Presence", "-q", "1", "-v");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");

        Assert.Equal("""IMS/bob/Presence {"user":"bob","online":true,"devices":["GID_IMS@@@bob-phone"],"lastSeen":null}""", await sub.NextMessageAsync());
    }

    [Fact]
    public async Task Disabled_NoPresence()
    {
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:Presence:Enabled"] = "false");
        await using var carol = await WatchAsync(broker.MqttPort, "IMS/bob/#");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await Expect.PublishAcceptedAsync(bob, "IMS/bob/status", "marker");
        await carol.ExpectOnlyAsync("IMS/bob/status", "marker");
    }
}
