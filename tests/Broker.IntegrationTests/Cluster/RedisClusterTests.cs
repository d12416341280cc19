using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;
using StackExchange.Redis;

namespace Broker.IntegrationTests.Cluster;

/// <summary>Three broker processes on a Redis Cluster of three primaries.</summary>
public sealed class ThreeNodesOnRedisCluster : IAsyncLifetime
{
    public BrokerCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await BrokerCluster.StartAsync(3, redisCluster: true);

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

/// <summary>
/// A Redis Cluster works as well as a single Redis: the keys one operation touches share a hash tag, so
/// sessions whose slots live on different primaries route, queue and move between nodes as before.
/// </summary>
[Collection("cluster")]
public sealed class RedisClusterTests(ThreeNodesOnRedisCluster nodes) : IClassFixture<ThreeNodesOnRedisCluster>
{
    BrokerCluster Cluster => nodes.Cluster;

    [Theory]
    [InlineData(MqttQualityOfServiceLevel.AtLeastOnce)]
    [InlineData(MqttQualityOfServiceLevel.ExactlyOnce)]
    public async Task P2p_AcrossNodes_ForClientIdsOnEveryPrimary(MqttQualityOfServiceLevel qos)
    {
        var devices = Enumerable.Range(0, 10).Select(i => $"GID_IMS@@@bob-rc-{qos}-{i}").ToList();
        Assert.Equal(3, (await PrimariesOfAsync(devices)).Count); // the test means something only when they spread

        for (var i = 0; i < devices.Count; i++)
        {
            var device = devices[i];
            await using var bob = await TestClient.ConnectAsync(Cluster[i % 3].MqttPort, device, "bob", MqttProtocolVersion.V500);
            await using var alice = await TestClient.ConnectAsync(Cluster[(i + 1) % 3].MqttPort, $"GID_IMS@@@alice-rc-{qos}-{i}", "alice", MqttProtocolVersion.V311);

            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/" + device, $"hello {i}", qos);

            var received = await bob.NextAsync();
            Assert.Equal(("IMS/p2p/" + device, $"hello {i}", qos), (received.ApplicationMessage.Topic, TestClient.Text(received), received.ApplicationMessage.QualityOfServiceLevel));
        }

        // Each session's hash is where its slot says, on all three primaries.
        await using var redis = await ConnectionMultiplexer.ConnectAsync(Cluster.Redis.Endpoint);
        foreach (var device in devices)
        {
            Assert.True(await redis.GetDatabase().KeyExistsAsync("s:{c/" + device + "}"), device);
        }
    }

    [Fact]
    public async Task OfflineOnOneNode_BackOnAnother_SessionPresentAndQueuedGroupMessagesInOrder()
    {
        const string device = "GID_IMS@@@bob-rc-move";
        await using (var bob = await TestClient.ConnectAsync(Cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/Group123/#");
        }

        await using (var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-rc-move", "alice"))
        {
            for (var i = 0; i < 50; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", $"group {i}");
            }

            for (var i = 0; i < 10; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/p2p/" + device, $"p2p {i}", MqttQualityOfServiceLevel.ExactlyOnce);
            }
        }

        await using var back = await TestClient.ConnectAsync(Cluster[2].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.True(back.ConnectResult.IsSessionPresent); // [MQTT-3.2.2-2]
        var byTopic = await ClusterSessionTests.ReceiveByTopicAsync(back, 60);
        Assert.Equal(Enumerable.Range(0, 50).Select(i => $"group {i}"), byTopic["IMS/Group123/alice"]);
        Assert.Equal(Enumerable.Range(0, 10).Select(i => $"p2p {i}"), byTopic["IMS/p2p/" + device]);

        await using var carol = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-rc-move2", "alice");
        await carol.PublishAsync("IMS/Group123/alice", "after the move");
        await back.ExpectOnlyAsync("IMS/Group123/alice", "after the move");
    }

    [Fact]
    public async Task Group_ReachesMembersOnEveryOtherNode_InOrder()
    {
        // Two of bob's devices, one on each other node: the group's route channel reaches both.
        await using var phone = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@bob-rc-group-phone", "bob");
        await phone.SubscribeOkAsync("IMS/Group123/#");
        await using var laptop = await TestClient.ConnectAsync(Cluster[2].MqttPort, "GID_IMS@@@bob-rc-group-laptop", "bob", MqttProtocolVersion.V311);
        await laptop.SubscribeOkAsync("IMS/Group123/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-rc-group", "alice");

        for (var i = 0; i < 20; i++)
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", $"to the group {i}", i % 2 == 0 ? MqttQualityOfServiceLevel.AtLeastOnce : MqttQualityOfServiceLevel.ExactlyOnce);
        }

        for (var i = 0; i < 20; i++)
        {
            await phone.ExpectOnlyAsync("IMS/Group123/alice", $"to the group {i}");
            await laptop.ExpectOnlyAsync("IMS/Group123/alice", $"to the group {i}");
        }
    }

    [Fact]
    public async Task SameClientIdOnAnotherNode_TakesOver_InflightResent()
    {
        const string device = "GID_IMS@@@bob-rc-takeover";
        var first = await TestClient.ConnectAsync(Cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600, autoAcknowledge: false);
        await first.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using (var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-rc-takeover", "alice"))
        {
            for (var i = 0; i < 5; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"m {i}", MqttQualityOfServiceLevel.ExactlyOnce);
            }
        }

        for (var i = 0; i < 5; i++)
        {
            Assert.Equal($"m {i}", TestClient.Text(await first.NextAsync()));
        }

        // The kick travels on the old owner's node channel, on whichever primary that channel's slot is.
        await using var second = await TestClient.ConnectAsync(Cluster[2].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.True(second.ConnectResult.IsSessionPresent);
        var closed = await first.Disconnected.WaitAsync(TestClient.Timeout);
        Assert.Equal(MqttClientDisconnectReason.SessionTakenOver, closed.Reason);
        await first.DisposeAsync();
        for (var i = 0; i < 5; i++)
        {
            Assert.Equal($"m {i}", TestClient.Text(await second.NextAsync()));
        }
    }

    [Fact]
    public async Task Retained_SetOnOneNode_IsGivenOnAnother()
    {
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-rc-retain", "alice");
        await alice.PublishAsync("IMS/alice/Profile", "alice's card", retain: true);

        await using var bob = await TestClient.ConnectAsync(Cluster[2].MqttPort, "GID_IMS@@@bob-rc-retain", "bob");
        await bob.SubscribeOkAsync("IMS/alice/#");
        var received = await bob.NextAsync();
        Assert.Equal(("IMS/alice/Profile", "alice's card", true), (received.ApplicationMessage.Topic, TestClient.Text(received), received.ApplicationMessage.Retain));
    }

    /// <summary>The primaries that hold the session keys of these client ids (as the broker names them: <c>s:{c/&lt;cid&gt;}</c>).</summary>
    async Task<HashSet<string>> PrimariesOfAsync(IEnumerable<string> clientIds)
    {
        await using var redis = await ConnectionMultiplexer.ConnectAsync(Cluster.Redis.Endpoint);
        var slots = redis.GetServer(redis.GetEndPoints()[0]).ClusterConfiguration!;
        return [.. clientIds.Select(cid => slots.GetBySlot("s:{c/" + cid + "}")!.EndPoint!.ToString()!)];
    }
}
