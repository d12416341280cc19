using System.Text.Json;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Cluster;

/// <summary>Two nodes with presence on (contract §10) and a device quota of 2 (§13), on one Redis.</summary>
public sealed class TwoNodesWithPresence : IAsyncLifetime
{
    public BrokerCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await BrokerCluster.StartAsync(2, ClusterPresenceTests.Settings);

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

/// <summary>
/// Presence (§10) and the device quota (§13) are the cluster's: a user's devices are counted and listed over
/// every node (issue #13), so a device leaving one node does not announce the user offline while another
/// node still has one, and a dead node's devices are taken out of the list by a survivor.
/// </summary>
[Collection("cluster")]
public sealed class ClusterPresenceTests(TwoNodesWithPresence nodes) : IClassFixture<TwoNodesWithPresence>
{
    public static readonly Dictionary<string, string> Settings = new()
    {
        ["Broker:Presence:Enabled"] = "true",
        ["Broker:Limits:Roles:user:MaxDevices"] = "2",
        ["Broker:Cluster:NodeTtl"] = "00:00:02", // a dead node is noticed after this
    };

    BrokerCluster Cluster => nodes.Cluster;

    sealed record Presence(bool Online, string[] Devices, long? LastSeen);

    static readonly System.Runtime.CompilerServices.ConditionalWeakTable<TestClient, Presence> LastSeenBy = [];

    /// <summary>
    /// The next change of the user's presence. Two nodes that change a user's devices at the same moment may
    /// both publish the same list (each reads it again after its publish): a repeat of the list before is skipped.
    /// </summary>
    static async Task<Presence> NextPresenceAsync(TestClient watcher, string user)
    {
        while (true)
        {
            var e = await watcher.NextAsync();
            Assert.Equal($"IMS/{user}/Presence", e.ApplicationMessage.Topic);
            using var json = JsonDocument.Parse(e.ApplicationMessage.Payload);
            var root = json.RootElement;
            var presence = new Presence(
                root.GetProperty("online").GetBoolean(),
                [.. root.GetProperty("devices").EnumerateArray().Select(d => d.GetString()!)],
                root.GetProperty("lastSeen").ValueKind == JsonValueKind.Null ? null : root.GetProperty("lastSeen").GetInt64());
            if (LastSeenBy.TryGetValue(watcher, out var last) && last.Online == presence.Online && last.Devices.SequenceEqual(presence.Devices))
            {
                continue;
            }

            LastSeenBy.AddOrUpdate(watcher, presence);
            return presence;
        }
    }

    static async Task<TestClient> WatchAsync(int port, string user)
    {
        var carol = await TestClient.ConnectAsync(port, $"GID_IMS@@@carol-watch-{user}", "carol");
        await carol.SubscribeOkAsync($"IMS/{user}/Presence");
        return carol;
    }

    [Fact]
    public async Task DevicesOnTwoNodes_OneList_OnlineUntilTheLastLeavesAnywhere()
    {
        await using var carol = await WatchAsync(Cluster[0].MqttPort, "bob");
        await using var phone = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@bob-phone", "bob");
        Assert.Equal(["GID_IMS@@@bob-phone"], (await NextPresenceAsync(carol, "bob")).Devices);

        await using var laptop = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@bob-laptop", "bob", MqttProtocolVersion.V311);
        Assert.Equal(["GID_IMS@@@bob-phone", "GID_IMS@@@bob-laptop"], (await NextPresenceAsync(carol, "bob")).Devices);

        // n1 has no device of bob left, n2 still has one: bob stays online (a per-node count would say offline).
        await phone.Client.DisconnectAsync();
        var left = await NextPresenceAsync(carol, "bob");
        Assert.True(left.Online);
        Assert.Equal(["GID_IMS@@@bob-laptop"], left.Devices);

        await laptop.Client.DisconnectAsync();
        var gone = await NextPresenceAsync(carol, "bob");
        Assert.False(gone.Online);
        Assert.Empty(gone.Devices);
        Assert.NotNull(gone.LastSeen);
    }

    [Fact]
    public async Task DeviceQuota_CountsEveryNode_TheSameDeviceMayMoveNodes_NoPresenceFlap()
    {
        await using var carol = await WatchAsync(Cluster[0].MqttPort, "alice");
        await using var phone = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-phone", "alice");
        Assert.Equal(["GID_IMS@@@alice-phone"], (await NextPresenceAsync(carol, "alice")).Devices);
        await using var laptop = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@alice-laptop", "alice");
        Assert.Equal(["GID_IMS@@@alice-phone", "GID_IMS@@@alice-laptop"], (await NextPresenceAsync(carol, "alice")).Devices);

        // Two devices, one on each node: a third is refused on either node (each node alone has one).
        Assert.Equal(MqttClientConnectResultCode.QuotaExceeded, await Connect.V5ResultAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-tablet", "alice"));
        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedServerUnavailable, await Connect.V311ReturnCodeAsync(Cluster[1].MqttPort, "GID_IMS@@@alice-tablet", "alice"));

        // The phone moves to n2 (a takeover across nodes): still one device, and presence does not change.
        await using var phoneAgain = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@alice-phone", "alice");
        await phone.Disconnected.WaitAsync(TestClient.Timeout);

        // The laptop leaves: the next presence says so, with nothing (offline, reordered) in between, and its slot is free.
        await laptop.Client.DisconnectAsync();
        Assert.Equal(["GID_IMS@@@alice-phone"], (await NextPresenceAsync(carol, "alice")).Devices);
        await using var tablet = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-tablet", "alice");
        Assert.Equal(["GID_IMS@@@alice-phone", "GID_IMS@@@alice-tablet"], (await NextPresenceAsync(carol, "alice")).Devices);
    }

    [Fact]
    public async Task NodeStoppedOrKilled_ItsDevicesLeaveTheList_UsersOnOtherNodesStayOnline()
    {
        await using var cluster = await BrokerCluster.StartAsync(3, Settings);
        await using var watchBob = await WatchAsync(cluster[0].MqttPort, "bob");
        await using var watchAlice = await WatchAsync(cluster[0].MqttPort, "alice");
        await using var laptop = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@bob-laptop", "bob");
        await NextPresenceAsync(watchBob, "bob");
        await using var phone = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@bob-phone", "bob");
        Assert.Equal(["GID_IMS@@@bob-laptop", "GID_IMS@@@bob-phone"], (await NextPresenceAsync(watchBob, "bob")).Devices);
        await using var alice = await TestClient.ConnectAsync(cluster[2].MqttPort, "GID_IMS@@@alice-phone", "alice", MqttProtocolVersion.V311);
        Assert.True((await NextPresenceAsync(watchAlice, "alice")).Online);

        // SIGTERM of n3: on its way down it takes its devices out and publishes alice offline.
        Assert.Equal(0, await cluster.TerminateAsync(2));
        var aliceNow = await NextPresenceAsync(watchAlice, "alice");
        Assert.False(aliceNow.Online);
        Assert.NotNull(aliceNow.LastSeen);

        // kill -9 of n2: n1 notices it is gone (NodeTtl 2 s) and takes its devices out; bob is still online by his laptop.
        await cluster.KillAsync(1);
        var bob = await NextPresenceAsync(watchBob, "bob");
        Assert.True(bob.Online);
        Assert.Equal(["GID_IMS@@@bob-laptop"], bob.Devices);
    }
}
