using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Cluster;

/// <summary>
/// Faults (issue #13, item 5): kill -9 of a broker node under load and kill -9 of redis-server lose
/// nothing that was acknowledged; while Redis is out of reach nothing new is acknowledged, CONNECT gets
/// 0x88 (v3.1.1 0x03) and /readyz says not ready, and everything resumes by itself. Each test has its own cluster.
/// </summary>
[Collection("cluster")]
public sealed class ClusterFaultTests
{
    /// <summary>A dead node is noticed after this (Broker:Cluster:NodeTtl; 5 s by default).</summary>
    static readonly Dictionary<string, string> ShortNodeTtl = new() { ["Broker:Cluster:NodeTtl"] = "00:00:02" };

    [Fact]
    public async Task Kill9OfANode_TheWillsOfItsClientsArePublishedByASurvivor()
    {
        await using var cluster = await BrokerCluster.StartAsync(3, ShortNodeTtl);
        await using var carol = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@carol-will", "carol");
        await carol.SubscribeOkAsync("IMS/bob/#");
        var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@bob-will", "bob",
            configure: o => o.WithWillTopic("IMS/bob/Status").WithWillPayload("bob is gone").WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce));

        await cluster.KillAsync(1);

        // [MQTT-3.1.2-8]: the network connection closed without DISCONNECT; its node cannot send the will, a survivor does.
        var will = await carol.NextAsync(TimeSpan.FromSeconds(20));
        Assert.Equal(("IMS/bob/Status", "bob is gone"), (will.ApplicationMessage.Topic, TestClient.Text(will)));
        await bob.DisposeAsync();
    }

    [Fact]
    public async Task Kill9OfANode_ADelayedWillWaitsItsDelay_AndIsNotSentWhenItsSessionIsResumedFirst()
    {
        await using var cluster = await BrokerCluster.StartAsync(2, ShortNodeTtl);
        await using var carol = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@carol-delayed-will", "carol");
        await carol.SubscribeOkAsync("IMS/bob/#");
        static Action<MqttClientOptionsBuilder> Will(string device, uint delay) => o => o
            .WithWillTopic("IMS/bob/Status/" + device).WithWillPayload(device + " is gone").WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce)
            .WithWillDelayInterval(delay);
        var phone = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@bob-phone-delayed", "bob", cleanStart: false, sessionExpiry: 3600, configure: Will("phone", 3));
        var laptop = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@bob-laptop-delayed", "bob", cleanStart: false, sessionExpiry: 3600, configure: Will("laptop", 6));

        var killed = System.Diagnostics.Stopwatch.StartNew();
        await cluster.KillAsync(1);

        // The phone comes back on n1 within its will delay: its will is never sent [MQTT-3.1.3-9].
        await using var phoneAgain = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@bob-phone-delayed", "bob", cleanStart: false, sessionExpiry: 3600);

        // The laptop does not: its will goes out, published by the survivor, and not before its delay (6 s) has passed
        // since the death; nothing came before it (the phone's delay, 3 s, ended long before).
        var will = await carol.NextAsync(TimeSpan.FromSeconds(30));
        Assert.Equal(("IMS/bob/Status/laptop", "laptop is gone"), (will.ApplicationMessage.Topic, TestClient.Text(will)));
        Assert.True(killed.Elapsed >= TimeSpan.FromSeconds(6), $"the will came {killed.Elapsed.TotalSeconds:0.0} s after the node died, before its 6 s delay");
        await phone.DisposeAsync();
        await laptop.DisposeAsync();
    }

    [Fact]
    public async Task Sigterm_DrainsTheNode_ClientsGet0x8B_AndLoseNothingOnAnotherNode()
    {
        await using var cluster = await BrokerCluster.StartAsync(2);
        const string device = "GID_IMS@@@bob-drain";
        var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-drain", "alice");
        for (var i = 0; i < 10; i++)
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"before {i}");
        }

        for (var i = 0; i < 10; i++)
        {
            Assert.Equal($"before {i}", TestClient.Text(await bob.NextAsync()));
        }

        Assert.Equal(0, await cluster.TerminateAsync(1));
        var closed = await bob.Disconnected.WaitAsync(TestClient.Timeout);
        Assert.Equal(MqttClientDisconnectReason.ServerShuttingDown, closed.Reason); // v5 0x8B
        await bob.DisposeAsync();

        for (var i = 0; i < 10; i++)
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"after {i}");
        }

        await using var back = await TestClient.ConnectAsync(cluster[0].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.True(back.ConnectResult.IsSessionPresent);
        for (var i = 0; i < 10; i++)
        {
            Assert.Equal($"after {i}", TestClient.Text(await back.NextAsync()));
        }
    }

    [Fact]
    public async Task Kill9OfTheSubscribersNode_EveryAcknowledgedMessageIsDeliveredOnAnotherNode()
    {
        await using var cluster = await BrokerCluster.StartAsync(3);
        const string device = "GID_IMS@@@bob-kill";
        await using (var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/Group123/#");
        }

        // bob's session is hosted offline on n2 when n2 dies: its queue lives in Redis.
        await using var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-kill", "alice");
        var acknowledged = new List<string>();
        for (var i = 0; i < 200; i++)
        {
            if (i == 100)
            {
                await cluster.KillAsync(1);
            }

            var payload = $"m {i}";
            await Expect.PublishAcceptedAsync(alice, "IMS/Group123/alice", payload);
            acknowledged.Add(payload);
        }

        await using var back = await TestClient.ConnectAsync(cluster[2].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.True(back.ConnectResult.IsSessionPresent);
        var received = new List<string>();
        for (var i = 0; i < acknowledged.Count; i++)
        {
            received.Add(TestClient.Text(await back.NextAsync()));
        }

        Assert.Equal(acknowledged, received);
    }

    [Fact]
    public async Task Kill9OfRedis_NothingAcknowledgedIsLost_AndWhileItIsDown_ConnectGets0x88AndReadyzSaysNotReady()
    {
        await using var cluster = await BrokerCluster.StartAsync(2);
        const string device = "GID_IMS@@@bob-redis";
        await using (var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await using (var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-redis", "alice"))
        {
            for (var i = 0; i < 50; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"m {i}");
            }
        }

        await using var publisher5 = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-redis5", "alice");
        await using var publisher3 = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-redis3", "alice", MqttProtocolVersion.V311);
        await cluster.Redis.KillAsync();

        // Not stored, not acknowledged: v5 hears 0x97, a v3.1.1 client (which has no reason codes) loses its connection.
        Assert.Equal(MqttClientPublishReasonCode.QuotaExceeded, (await publisher5.PublishAsync("IMS/bob/Inbox/Msg/alice", "while redis is down")).ReasonCode);
        var publish3 = publisher3.PublishAsync("IMS/bob/Inbox/Msg/alice", "while redis is down");
        await publisher3.Disconnected.WaitAsync(TestClient.Timeout);
        await Assert.ThrowsAnyAsync<Exception>(() => publish3);

        Assert.Equal(MqttClientConnectResultCode.ServerUnavailable, await Connect.V5ResultAsync(cluster[0].MqttPort, "GID_IMS@@@alice-down", "alice", "alice-pass"));
        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedServerUnavailable, await Connect.V311ReturnCodeAsync(cluster[1].MqttPort, "GID_IMS@@@alice-down3", "alice", "alice-pass"));
        using (var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{cluster[0].HttpPort}") })
        {
            var ready = await http.GetAsync("/readyz");
            Assert.Equal(System.Net.HttpStatusCode.ServiceUnavailable, ready.StatusCode);
        }

        await cluster.Redis.RestartAsync();

        // Back by itself: the node says ready once it reaches Redis again (polled, as a load balancer does).
        await WaitUntilReadyAsync(cluster[0]);
        var back = await TestClient.ConnectAsync(cluster[0].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        await using (back)
        {
            Assert.True(back.ConnectResult.IsSessionPresent);
            for (var i = 0; i < 50; i++)
            {
                Assert.Equal($"m {i}", TestClient.Text(await back.NextAsync()));
            }
        }
    }

    [Fact]
    public async Task AZombieNodeThatWakesUpAfterItsSessionWasTakenOver_CannotCorruptIt()
    {
        await using var cluster = await BrokerCluster.StartAsync(3, ShortNodeTtl);
        const string device = "GID_IMS@@@bob-zombie";
        var first = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        await first.SubscribeOkAsync("IMS/bob/Inbox/#");

        // n2 freezes with bob's session; bob comes back on n3 (the kick is not answered: n3 goes on after ClaimWait).
        await cluster[1].FreezeAsync(stop: true);
        TestClient second;
        try
        {
            second = await TestClient.ConnectAsync(cluster[2].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
            Assert.True(second.ConnectResult.IsSessionPresent);
            await using var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-zombie", "alice");
            for (var i = 0; i < 10; i++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"m {i}");
            }

            for (var i = 0; i < 10; i++)
            {
                Assert.Equal($"m {i}", TestClient.Text(await second.NextAsync()));
            }
        }
        finally
        {
            // n2 wakes up: it still believes it hosts bob, lets him go when it reads the kick, and every write
            // it makes to his session carries the old epoch and is refused.
            await cluster[1].FreezeAsync(stop: false);
        }

        await first.DisposeAsync();
        await using (second)
        await using (var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-zombie2", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "after the wake-up");
            await second.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "after the wake-up");
        }

        // The session in Redis is whole: back on n1, present, with nothing sent twice and nothing left over.
        await using var third = await TestClient.ConnectAsync(cluster[0].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.True(third.ConnectResult.IsSessionPresent);
        await using var carol = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-zombie3", "alice");
        await carol.PublishAsync("IMS/bob/Inbox/Msg/alice", "marker");
        await third.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "marker");
    }

    [Fact]
    public async Task RedisOutOfMemory_PublishIsNotAcknowledged_0x97_AndTheNodeGoesOn()
    {
        await using var cluster = await BrokerCluster.StartAsync(2);
        const string device = "GID_IMS@@@bob-oom";
        await using (var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await using var alice = await TestClient.ConnectAsync(cluster[0].MqttPort, "GID_IMS@@@alice-oom", "alice");
        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "stored");

        // maxmemory below what Redis holds (noeviction): every write is refused with OOM.
        await using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(cluster.Redis.Endpoint + ",allowAdmin=true");
        var server = redis.GetServers()[0];
        await server.ConfigSetAsync("maxmemory", "1");
        Assert.Equal(MqttClientPublishReasonCode.QuotaExceeded, (await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "refused")).ReasonCode);

        await server.ConfigSetAsync("maxmemory", "0");
        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "stored again");
        await using var back = await TestClient.ConnectAsync(cluster[0].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.Equal("stored", TestClient.Text(await back.NextAsync()));
        Assert.Equal("stored again", TestClient.Text(await back.NextAsync()));
    }

    [Fact]
    public async Task LinkToRedisCut_PersistentSessionsCatchUpFromTheirQueues_CleanQos1SubscribersAreDisconnected()
    {
        // Pub/sub is at most once: a message whose notice a node missed while its connections to Redis were cut must
        // still reach a persistent session (its row is in Redis), and a clean session that cannot be caught up is told.
        await using var cluster = await BrokerCluster.StartAsync(2);
        const string device = "GID_IMS@@@bob-gap";
        await using var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var carol = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@carol-gap", "carol");
        await carol.SubscribeOkAsync("IMS/carol/#");

        // A row written for bob whose message never reached his node (as if sent while the link was cut).
        await using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(cluster.Redis.Endpoint + ",allowAdmin=true");
        var store = new Broker.Cluster.Redis.RedisBrokerStore(redis, Microsoft.Extensions.Logging.Abstractions.NullLogger<Broker.Cluster.Redis.RedisBrokerStore>.Instance);
        var missed = new Broker.Engine.Routing.BrokerMessage
        {
            Id = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() << 20,
            Topic = "IMS/bob/Inbox/Msg/alice",
            Payload = "missed"u8.ToArray(),
            Qos = MqttQualityOfServiceLevel.AtLeastOnce,
            SenderClientId = "GID_IMS@@@alice-gap",
            SenderUserId = "alice",
        };
        Assert.Equal([device], await store.AppendRowsAsync(missed, [new Broker.Engine.Store.StoredDelivery(device, missed.Id, MqttQualityOfServiceLevel.AtLeastOnce, false, null)], null));

        // A retained message whose announcement never reached the nodes either.
        await store.SetRetainedAsync(new Broker.Engine.Routing.BrokerMessage
        {
            Id = missed.Id + 1,
            Topic = "IMS/alice/Card",
            Payload = "set while cut"u8.ToArray(),
            Qos = MqttQualityOfServiceLevel.AtLeastOnce,
            Retain = true,
            SenderClientId = "GID_IMS@@@alice-gap",
            SenderUserId = "alice",
        });

        // Cut every broker connection to Redis; the nodes reconnect by themselves.
        await redis.GetServers()[0].ExecuteAsync("CLIENT", "KILL", "SKIPME", "yes");

        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "missed");
        Assert.Equal(MqttClientDisconnectReason.UnspecifiedError, (await carol.Disconnected.WaitAsync(TestClient.Timeout)).Reason); // v5 0x80

        // The node's retained copy follows Redis again (read back after the reconnect, in the background): a new
        // subscriber there is given the message it missed. Polled by subscribing, at most a few seconds.
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(10);
        while (true)
        {
            await using var reader = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@bob-gap-reader", "bob");
            await reader.SubscribeOkAsync("IMS/alice/Card");
            try
            {
                var card = await reader.NextAsync(TimeSpan.FromSeconds(1));
                Assert.Equal(("IMS/alice/Card", "set while cut"), (card.ApplicationMessage.Topic, TestClient.Text(card)));
                break;
            }
            catch (TimeoutException) when (DateTime.UtcNow < deadline)
            {
                // Not read back yet: the next subscription tries again.
            }
        }
    }

    [Fact]
    public async Task Kill9OfANode_ItsOfflineSessionsStillExpire()
    {
        // [MQTT-3.1.2-23]: a session ends when its expiry interval has passed after the connection closed, also
        // when the node that hosted it died meanwhile: a survivor expires it.
        await using var cluster = await BrokerCluster.StartAsync(2, ShortNodeTtl);
        const string device = "GID_IMS@@@bob-expire";
        // 1 s: the deadline passes before the node's death is noticed (NodeTtl 2 s), the order that once lost the expiry.
        await using (var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 1))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        // Killed once its node has recorded the disconnect (the deadline, in the session and in ims:expiry): the
        // client's DISCONNECT returns before the node has read it, and a kill before that is the next test's case.
        await using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(cluster.Redis.Endpoint);
        var db = redis.GetDatabase();
        await Poll.UntilAsync(
            async () => await db.HashExistsAsync(SessionKey(device), "dl") && await db.SortedSetScoreAsync("ims:expiry", device) is not null,
            "n2 did not record bob's disconnect in Redis");

        await cluster.KillAsync(1);
        await AssertExpiresAsync(db, device);

        await using var back = await TestClient.ConnectAsync(cluster[0].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 60);
        Assert.False(back.ConnectResult.IsSessionPresent);
    }

    [Fact]
    public async Task Kill9OfANode_ItsConnectedSessionsExpireAsIfDisconnectedWhenItDied()
    {
        // [MQTT-3.1.2-23]: the connection closed with the node, which never wrote an expiry deadline for the session:
        // its expiry interval runs from when the death is noticed, and a survivor expires it.
        await using var cluster = await BrokerCluster.StartAsync(2, ShortNodeTtl);
        const string device = "GID_IMS@@@bob-expire-live";
        await using var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 1);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");

        await cluster.KillAsync(1); // bob still connected: no DISCONNECT reaches the node

        await using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(cluster.Redis.Endpoint);
        await AssertExpiresAsync(redis.GetDatabase(), device);

        await using var back = await TestClient.ConnectAsync(cluster[0].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 60);
        Assert.False(back.ConnectResult.IsSessionPresent);
    }

    [Fact]
    public async Task ANodeTakenForDeadThatRunsOn_JoinsAgain_AndItsRealDeathIsNoticedToo()
    {
        // A node that misses renewing its liveness key for NodeTtl (a stall, a starved machine) is swept while it
        // still runs. It used to be left out of ims:nodes for good: when it died later, nobody swept it, and the
        // sessions it had claimed since never expired.
        await using var cluster = await BrokerCluster.StartAsync(2, ShortNodeTtl);
        await using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(cluster.Redis.Endpoint);
        var db = redis.GetDatabase();
        string? n2 = null;
        foreach (var member in await db.SetMembersAsync("ims:nodes"))
        {
            if (await db.StringGetAsync("node:{" + member + "}") == "n2")
            {
                n2 = member;
            }
        }

        Assert.NotNull(n2);
        await using var carol = await TestClient.ConnectAsync(cluster[1].MqttPort, "GID_IMS@@@carol-stall", "carol");

        // n2 stalls (SIGSTOP) until n1 has swept it, then goes on.
        await cluster[1].FreezeAsync(stop: true);
        try
        {
            await Poll.UntilAsync(async () => !await db.SetContainsAsync("ims:nodes", n2), "n1 did not sweep the stalled n2");
        }
        finally
        {
            await cluster[1].FreezeAsync(stop: false);
        }

        // Back among the nodes with its next renewal; carol's session was freed meanwhile: her connection there closes.
        await Poll.UntilAsync(() => db.SetContainsAsync("ims:nodes", n2), "n2 did not join again");
        Assert.Equal(MqttClientDisconnectReason.SessionTakenOver, (await carol.Disconnected.WaitAsync(TestClient.Timeout)).Reason); // v5 0x8E

        const string device = "GID_IMS@@@bob-stall";
        await using (var bob = await TestClient.ConnectAsync(cluster[1].MqttPort, device, "bob", cleanStart: false, sessionExpiry: 1))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await Poll.UntilAsync(async () => await db.HashExistsAsync(SessionKey(device), "dl"), "n2 did not record bob's disconnect in Redis");
        await cluster.KillAsync(1);
        await AssertExpiresAsync(db, device);
    }

    static string SessionKey(string clientId) => "s:{c/" + clientId + "}";

    /// <summary>Watched in Redis (the state an operator would see): the session's record goes once it is due and its node is swept.</summary>
    static async Task AssertExpiresAsync(StackExchange.Redis.IDatabase db, string clientId)
    {
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(20);
        while (await db.HashExistsAsync(SessionKey(clientId), "rec"))
        {
            Assert.True(DateTime.UtcNow < deadline, "the dead node's expired session is still in Redis after 20 s");
            await Task.Delay(200);
        }
    }

    static async Task WaitUntilReadyAsync(RunningBroker node)
    {
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{node.HttpPort}") };
        var deadline = DateTime.UtcNow + TimeSpan.FromSeconds(30);
        while (!(await http.GetAsync("/readyz")).IsSuccessStatusCode)
        {
            Assert.True(DateTime.UtcNow < deadline, "the node did not say ready within 30 s of Redis coming back");
            await Task.Delay(100);
        }
    }

    [Fact]
    public async Task MessageIdIndex_NeverSharedByTwoLiveNodes_EvenWhenTheJoinCounterComesRound()
    {
        // ims-id (contract §11) is unique across the nodes because each live node gives ids with its own index.
        await using var cluster = await BrokerCluster.StartAsync(1);
        await using var redis = await StackExchange.Redis.ConnectionMultiplexer.ConnectAsync(cluster.Redis.Endpoint);
        var server = redis.GetServer(redis.GetEndPoints()[0]);
        var held = server.Keys(pattern: "ims:node-index:*").Select(k => (string)k!).Single();
        var index = int.Parse(held["ims:node-index:".Length..], System.Globalization.CultureInfo.InvariantCulture);

        // 255 joins (restarts) later the join counter hands out n1's index again.
        await redis.GetDatabase().StringSetAsync("ims:node-index", index + 255);
        await cluster.AddNodeAsync();

        var indexes = server.Keys(pattern: "ims:node-index:*").Select(k => (string)k!).ToList();
        Assert.Equal(2, indexes.Count);
        Assert.Equal(2, (await Task.WhenAll(indexes.Select(k => redis.GetDatabase().StringGetAsync(k)))).Distinct().Count());
    }
}
