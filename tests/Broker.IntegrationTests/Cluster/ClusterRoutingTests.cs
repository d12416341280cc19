using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Cluster;

/// <summary>One cluster (redis-server + 3 broker processes) shared by the tests of the "cluster" collection that do not break it.</summary>
public sealed class ThreeNodes : IAsyncLifetime
{
    public BrokerCluster Cluster { get; private set; } = null!;

    public async Task InitializeAsync() => Cluster = await BrokerCluster.StartAsync(3);

    public async Task DisposeAsync() => await Cluster.DisposeAsync();
}

/// <summary>The cluster tests run one at a time (each starts processes; two at once on two cores only slows both).</summary>
[CollectionDefinition("cluster")]
public sealed class ClusterCollection : ICollectionFixture<ThreeNodes>;

/// <summary>
/// Every IM route works across nodes with stock clients (issue #13, item 1), and a message reaches only
/// the nodes that host a reader of it (item 2). Each test uses its own client ids; they share one cluster.
/// </summary>
[Collection("cluster")]
public sealed class ClusterRoutingTests(ThreeNodes nodes)
{
    BrokerCluster Cluster => nodes.Cluster;

    [Theory]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.AtMostOnce)]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.AtLeastOnce)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.AtLeastOnce)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.ExactlyOnce)]
    public async Task P2p_FromOneNode_ReachesTheDeviceOnAnother(MqttProtocolVersion version, MqttQualityOfServiceLevel qos)
    {
        var device = $"GID_IMS@@@bob-p2p-{version}-{qos}";
        await using var bob = await TestClient.ConnectAsync(Cluster[1].MqttPort, device, "bob", version);
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, $"GID_IMS@@@alice-p2p-{version}-{qos}", "alice", version);

        await alice.PublishAsync("IMS/p2p/" + device, "hello across nodes", qos);

        var received = await bob.NextAsync();
        Assert.Equal(("IMS/p2p/" + device, "hello across nodes", qos), (received.ApplicationMessage.Topic, TestClient.Text(received), received.ApplicationMessage.QualityOfServiceLevel));
    }

    [Fact]
    public async Task P2p_WithMosquittoClients_AcrossNodes()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        var device = "GID_IMS@@@bob-mosq";
        // The SUBACK for bob's own feed says the session is in place; the P2P needs no subscription.
        await using var sub = await Mosquitto.Subscriber.StartAsync("-p", Cluster[2].MqttPort.ToString(), "-i", device, "-u", "bob", "-P", "bob-pass", "-t", "IMS/bob/unused", "-q", "1", "-v");
        var (code, output) = await Mosquitto.RunAsync("mosquitto_pub", "-p", Cluster[0].MqttPort.ToString(), "-i", "GID_IMS@@@alice-mosq", "-u", "alice", "-P", "alice-pass",
            "-t", "IMS/p2p/" + device, "-q", "1", "-m", "hi bob");
        Assert.True(code == 0, output);
        Assert.Equal("IMS/p2p/" + device + " hi bob", await sub.NextMessageAsync());
    }

    [Fact]
    public async Task Group_ReachesMembersOnOtherNodes_AndOnlyTheNodesThatHostThem()
    {
        // Its own cluster: the counters count every message a node receives, and the shared cluster carries the
        // persistent sessions (and late messages) of other tests. A group of its own too.
        await using var cluster = await BrokerCluster.StartAsync(3);
        using (var admin = ClusterAdminTests.Admin(cluster[0]))
        {
            var created = await System.Net.Http.Json.HttpClientJsonExtensions.PutAsJsonAsync(admin, "/api/groups/Ropes", new { members = new[] { "alice", "bob" } });
            Assert.True(created.IsSuccessStatusCode, await created.Content.ReadAsStringAsync());
        }

        await using var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@bob-group", "bob");
        await bob.SubscribeOkAsync("IMS/Ropes/#");
        await using var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-group", "alice");
        var atN2 = await cluster.EnvelopesReceivedAsync(1);
        var atN3 = await cluster.EnvelopesReceivedAsync(2);

        await alice.PublishAsync("IMS/Ropes/alice", "to the group");

        // One message to the node with the member, once.
        await bob.ExpectOnlyAsync("IMS/Ropes/alice", "to the group");
        Assert.Equal(atN2 + 1, await cluster.EnvelopesReceivedAsync(1));

        // n3 hosts no member: the publish never reached it. A second publish to a route n3 does read
        // (carol's own feed) is the marker that n3 has processed everything sent to it before.
        await using var carol = await TestClient.ConnectAsync(cluster[2].MqttPort, "GID_IMS@@@carol-group", "carol");
        await carol.SubscribeOkAsync("IMS/carol/#");
        await using var carolSender = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@carol-group-2", "carol");
        await carolSender.PublishAsync("IMS/carol/Note", "marker");
        await carol.ExpectOnlyAsync("IMS/carol/Note", "marker");
        Assert.Equal(atN3 + 1, await cluster.EnvelopesReceivedAsync(2));
    }

    [Fact]
    public async Task SenderStamp_SetOnThePublishersNode_ReachesTheReaderOnAnother_AndCannotBeForged()
    {
        // Contract §4: ims-sender / ims-client are the broker's, whichever node the reader is on.
        await using var bob = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@bob-stamp", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-stamp", "alice");

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "stamped", configure: m => m.WithUserProperty("ims-sender", "admin"));

        var received = await bob.NextAsync();
        Assert.Equal(
            [("ims-sender", "alice"), ("ims-client", "GID_IMS@@@alice-stamp")],
            received.ApplicationMessage.UserProperties.Where(p => p.Name != "ims-id").Select(p => (p.Name, p.ReadValueAsString())).ToArray());
    }

    [Fact]
    public async Task InboxOnOneNode_FeedFollowerOnAnother_GetsTheFeedNeverTheInbox()
    {
        await using var follower = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@carol-follow", "carol");
        await follower.SubscribeOkAsync("IMS/bob/#");
        await using var bob = await TestClient.ConnectAsync(Cluster[2].MqttPort, "GID_IMS@@@bob-inbox", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-inbox", "alice");
        await using var bobWriter = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@bob-writer", "bob");

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "private");
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "private");
        await bobWriter.PublishAsync("IMS/bob/Status", "public feed");

        // The follower's next message is the feed: the inbox message published before it never came.
        await follower.ExpectOnlyAsync("IMS/bob/Status", "public feed");
    }

    [Fact]
    public async Task Retained_SetOnOneNode_IsGivenOnAnother_AndNotThroughAWildcardThatMayNotRead()
    {
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-retain", "alice");
        await alice.PublishAsync("IMS/alice/Profile", "alice's card", retain: true);
        await alice.PublishAsync("IMS/alice/Inbox/Draft/alice", "never to others", retain: true);

        await using var bob = await TestClient.ConnectAsync(Cluster[2].MqttPort, "GID_IMS@@@bob-retain", "bob");
        await bob.SubscribeOkAsync("IMS/alice/#");
        var received = await bob.NextAsync();
        Assert.Equal(("IMS/alice/Profile", "alice's card", true), (received.ApplicationMessage.Topic, TestClient.Text(received), received.ApplicationMessage.Retain));

        // Cleared again (the empty publish reaches subscribers as any publish does); the inbox's clear does not reach bob.
        await alice.PublishAsync("IMS/alice/Profile", "", retain: true);
        await alice.PublishAsync("IMS/alice/Inbox/Draft/alice", "", retain: true);
        await alice.PublishAsync("IMS/alice/Status", "marker");
        await bob.ExpectOnlyAsync("IMS/alice/Profile", "");
        await bob.ExpectOnlyAsync("IMS/alice/Status", "marker");
    }

    [Fact]
    public async Task SharedSubscription_MembersOnTwoNodes_EachMessageReachesExactlyOneMember()
    {
        // [MQTT-4.8.2]: a shared subscription's message goes to one member of the group, here across the cluster.
        await using var worker2 = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@worker-n2", "assistant");
        await using var worker3 = await TestClient.ConnectAsync(Cluster[2].MqttPort, "GID_IMS@@@worker-n3", "assistant");
        await worker2.SubscribeOkAsync("$share/bots/IMS/alice/Ask/#");
        await worker3.SubscribeOkAsync("$share/bots/IMS/alice/Ask/#");
        await using var alice = await TestClient.ConnectAsync(Cluster[0].MqttPort, "GID_IMS@@@alice-ask", "alice");

        const int count = 20;
        for (var i = 0; i < count; i++)
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/alice/Ask/q", $"q {i}");
        }

        // Markers to each worker's own node: once each has one, everything sent before it has been delivered there.
        await alice.PublishAsync("IMS/alice/Ask/q", "marker");
        await alice.PublishAsync("IMS/alice/Ask/q", "marker");
        var got2 = await DrainUntilMarkerAsync(worker2);
        var got3 = await DrainUntilMarkerAsync(worker3);

        Assert.Equal(Enumerable.Range(0, count).Select(i => $"q {i}").Order(), got2.Concat(got3).Order());
        Assert.NotEmpty(got2);
        Assert.NotEmpty(got3);
    }

    static async Task<List<string>> DrainUntilMarkerAsync(TestClient client)
    {
        var got = new List<string>();
        while (TestClient.Text(await client.NextAsync()) is var text && text != "marker")
        {
            got.Add(text);
        }

        return got;
    }
}
