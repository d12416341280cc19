using System.Text;
using Broker.Cluster.Redis;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.Logging.Abstractions;
using Microsoft.Extensions.Time.Testing;
using MQTTnet.Protocol;
using StackExchange.Redis;

namespace Broker.IntegrationTests.Cluster;

/// <summary>The Redis store against a real redis-server (AOF, fsync always): the engine's store contract plus the cluster's session API.</summary>
public sealed class RedisStoreTests : IAsyncLifetime
{
    const MqttQualityOfServiceLevel Q1 = MqttQualityOfServiceLevel.AtLeastOnce;
    RedisServer _server = null!;
    readonly List<IConnectionMultiplexer> _connections = [];

    public async Task InitializeAsync() => _server = await RedisServer.StartAsync();

    public async Task DisposeAsync()
    {
        foreach (var connection in _connections)
        {
            await connection.DisposeAsync();
        }

        await _server.DisposeAsync();
    }

    [Fact]
    public async Task AppendedRows_AreReadInArrivalOrder_WithinTheByteBound()
    {
        var store = await NewStoreAsync();
        store.UpsertSession(Persistent("bob"));
        // Arrival order, not id order, is queue order.
        await store.AppendAsync(Message(10, "abc"), [Row("bob", 10, retain: true, ids: [7, 9])]);
        await store.AppendAsync(Message(5, "defgh"), [Row("bob", 5)]);
        await store.AppendAsync(Message(20, "ijklmnop"), [Row("bob", 20)]);

        var all = await store.ReadQueueAsync("bob", 10, long.MaxValue);
        Assert.Equal([10L, 5L, 20L], all.Select(x => x.Row.MessageId));
        Assert.Equal(["abc", "defgh", "ijklmnop"], all.Select(x => Encoding.UTF8.GetString(x.Message.Payload.Span)));
        Assert.True(all[0].Row.Retain);
        Assert.Equal([7u, 9u], all[0].Row.SubscriptionIds!);
        Assert.Equal(Q1, all[0].Row.Qos);
        Assert.Equal("t/bob", all[0].Message.Topic);

        Assert.Equal(2, (await store.ReadQueueAsync("bob", 10, 4)).Count); // 3 < 4, then 8 ≥ 4
        Assert.Single(await store.ReadQueueAsync("bob", 10, 1)); // at least one
        Assert.Equal(2, (await store.ReadQueueAsync("bob", 2, long.MaxValue)).Count);

        var session = await store.LoadSessionAsync("bob");
        Assert.Equal((3, 16L), (session!.QueuedCount, session.QueuedBytes));
    }

    [Fact]
    public async Task InflightRows_AndInboundQos2_ComeBackWithLoadSession()
    {
        var store = await NewStoreAsync();
        store.UpsertSession(Persistent("bob") with { Subscriptions = [new SubscriptionRecord("t/#", Q1, true, false, MqttRetainHandling.DoNotSendOnSubscribe, 3)] });
        for (var id = 1; id <= 4; id++)
        {
            await store.AppendAsync(Message(id, new string('x', id)), [Row("bob", id)]);
        }

        store.UpdateDelivery("bob", 1, 7, DeliveryState.AwaitingAck);
        store.UpdateDelivery("bob", 2, 8, DeliveryState.AwaitingAck);
        store.UpdateDelivery("bob", 2, 8, DeliveryState.AwaitingComp);
        store.RemoveDelivery("bob", 3);
        store.RemoveDelivery("bob", 1);
        store.UpdateDelivery("bob", 3, 9, DeliveryState.AwaitingAck); // gone already: stays gone
        store.SetInboundQos2("bob", 42, pending: true);
        store.SetInboundQos2("bob", 43, pending: true);
        store.SetInboundQos2("bob", 43, pending: false);
        await store.FlushAsync();

        var session = await store.LoadSessionAsync("bob");
        Assert.NotNull(session);
        Assert.Equal("bob-user", session.Record!.UserId);
        Assert.Equal(3600u, session.Record.ExpirySeconds);
        Assert.Equal(new SubscriptionRecord("t/#", Q1, true, false, MqttRetainHandling.DoNotSendOnSubscribe, 3), Assert.Single(session.Record.Subscriptions));
        var inflight = Assert.Single(session.Inflight);
        Assert.Equal((2L, (ushort)8, DeliveryState.AwaitingComp, "xx"), (inflight.Row.MessageId, inflight.Row.PacketId, inflight.Row.State, Encoding.UTF8.GetString(inflight.Message.Payload.Span)));
        Assert.Equal((1, 4L), (session.QueuedCount, session.QueuedBytes));
        Assert.Equal([(ushort)42], session.InboundQos2);
        Assert.Equal([4L], (await store.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));
    }

    [Fact]
    public async Task AnInflightMarkHeldBack_IsNeverWritten_WhenTheAckComesFirst_AndNeverLetsAPageReadSeeTheRowAsQueued()
    {
        var store = await NewStoreAsync();
        store.UpsertSession(Persistent("bob"));
        for (var id = 1; id <= 3; id++)
        {
            await store.AppendAsync(Message(id, "m" + id), [Row("bob", id)]);
        }

        // Message 1 goes out (its mark is held back): a page read right after must not hand it out again.
        store.UpdateDelivery("bob", 1, 7, DeliveryState.AwaitingAck);
        Assert.Equal([2L, 3L], (await store.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));

        // Message 2 goes out and is acknowledged before the mark is due: only the removal reaches Redis.
        await using var admin = await ConnectionMultiplexer.ConnectAsync(_server.Endpoint + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        await server.ConfigResetStatisticsAsync();
        store.UpdateDelivery("bob", 2, 8, DeliveryState.AwaitingAck);
        store.RemoveDelivery("bob", 2);
        await store.FlushAsync(); // writes the marks still held (none: the ack dropped it), then waits for Redis
        Assert.Equal(1, await ScriptCallsAsync(server));

        var session = await store.LoadSessionAsync("bob");
        Assert.Equal((1L, (ushort)7), (Assert.Single(session!.Inflight).Row.MessageId, session.Inflight[0].Row.PacketId));
        Assert.Equal([3L], (await store.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));
    }

    [Fact]
    public async Task AcksOfOneSessionInOneTick_AreOneScript_AndNeitherAPageReadNorAClaimElsewhereAfterTheDisconnectSeesThemUnwritten()
    {
        // The clock never moves: no tick writes what is held, only the reads, the disconnect and the flush do.
        var nodeA = await NewStoreAsync(new FakeTimeProvider(DateTimeOffset.UtcNow));
        var connectionA = _connections[^1];
        var nodeB = await NewStoreAsync();
        await nodeA.ClaimAsync("bob", "A#1", cleanStart: false);
        nodeA.UpsertSession(Persistent("bob"));
        for (var id = 1; id <= 6; id++)
        {
            await nodeA.AppendAsync(Message(id, "m" + id), [Row("bob", id)]);
        }

        await using var admin = await ConnectionMultiplexer.ConnectAsync(_server.Endpoint + ",allowAdmin=true");
        var server = admin.GetServer(admin.GetEndPoints()[0]);
        await server.ConfigResetStatisticsAsync();

        // Three deliveries sent and acknowledged within a tick: one script for the three removals.
        for (var id = 1; id <= 3; id++)
        {
            nodeA.UpdateDelivery("bob", id, (ushort)id, DeliveryState.AwaitingAck);
            nodeA.RemoveDelivery("bob", id);
        }

        await nodeA.FlushAsync();
        Assert.Equal(1, await ScriptCallsAsync(server));

        // An acknowledged row is never read back as queued (at least once would allow it; a live session must not).
        nodeA.UpdateDelivery("bob", 4, 4, DeliveryState.AwaitingAck);
        nodeA.RemoveDelivery("bob", 4);
        Assert.Equal([5L, 6L], (await nodeA.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));

        // Acknowledged, then the client disconnects and reconnects to node B: B does not send it again.
        nodeA.UpdateDelivery("bob", 5, 5, DeliveryState.AwaitingAck);
        nodeA.RemoveDelivery("bob", 5);
        nodeA.UpsertSession(Persistent("bob") with { DisconnectedAtUnixMs = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds() });
        await connectionA.GetDatabase().StringGetAsync("x"); // Redis answers one connection's commands in order: A's writes are in
        await nodeB.ClaimAsync("bob", "B#1", cleanStart: false);
        var session = await nodeB.LoadSessionAsync("bob");
        Assert.Empty(session!.Inflight);
        Assert.Equal([6L], (await nodeB.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));
    }

    [Fact]
    public async Task TakenOverByAnotherNode_TheAcksHeldHereStillReachRedis_ButTheHeldMarksDoNot()
    {
        var nodeA = await NewStoreAsync(new FakeTimeProvider(DateTimeOffset.UtcNow)); // no tick: only WriteHeldAsync writes
        var nodeB = await NewStoreAsync();
        var fenced = await ClaimBobWithTwoRowsAsync(nodeA);

        // On A: 1 was sent and acknowledged, 2 sent only; both changes are held when B claims the session.
        nodeA.UpdateDelivery("bob", 1, 1, DeliveryState.AwaitingAck);
        nodeA.RemoveDelivery("bob", 1);
        nodeA.UpdateDelivery("bob", 2, 2, DeliveryState.AwaitingAck);
        await nodeB.ClaimAsync("bob", "B#1", cleanStart: false);

        // A lets it go (the kick): what the client acknowledged on A holds; A's mark does not (B resends 2 as queued).
        await nodeA.WriteHeldAsync("bob");
        var session = await nodeB.LoadSessionAsync("bob");
        Assert.Empty(session!.Inflight);
        Assert.Equal([2L], (await nodeB.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));
        Assert.Equal(["bob"], fenced); // and A heard that it no longer owns it
    }

    [Fact]
    public async Task DropOldest_TakesRowsUntilCountAndBytesAreReached()
    {
        var store = await NewStoreAsync();
        store.UpsertSession(Persistent("bob"));
        for (var id = 1; id <= 5; id++)
        {
            await store.AppendAsync(Message(id, new string('x', 10)), [Row("bob", id)]);
        }

        Assert.Equal((3, 30L), await store.DropOldestQueuedAsync("bob", 2, 25));
        Assert.Equal([4L, 5L], (await store.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));
        var session = await store.LoadSessionAsync("bob");
        Assert.Equal((2, 20L), (session!.QueuedCount, session.QueuedBytes));
        Assert.Equal((2, 20L), await store.DropOldestQueuedAsync("bob", 100, 0));
        Assert.Equal((0, 0L), await store.DropOldestQueuedAsync("bob", 1, 0));
    }

    [Fact]
    public async Task Claim_RaisesTheEpoch_AndFencesTheNodeThatHadIt()
    {
        var nodeA = await NewStoreAsync();
        var nodeB = await NewStoreAsync();
        var fenced = new List<string>();
        nodeA.Fenced += fenced.Add;

        var first = await nodeA.ClaimAsync("bob", "A#1", cleanStart: false);
        Assert.Equal(new ClaimResult(1, null, false), first);
        nodeA.UpsertSession(Persistent("bob"));
        await nodeA.AppendAsync(Message(1, "one"), [Row("bob", 1)]);

        var second = await nodeB.ClaimAsync("bob", "B#1", cleanStart: false);
        Assert.Equal(new ClaimResult(2, "A#1", true), second);

        // A still thinks it owns bob: its writes are refused and it hears so once.
        nodeA.UpsertSession(Persistent("bob") with { ExpirySeconds = 1 });
        nodeA.UpdateDelivery("bob", 1, 5, DeliveryState.AwaitingAck);
        nodeA.SetInboundQos2("bob", 9, pending: true);
        Assert.Equal((0, 0L), await nodeA.DropOldestQueuedAsync("bob", 1, 0));
        await nodeA.FlushAsync();
        Assert.Equal(["bob"], fenced);

        var session = await nodeB.LoadSessionAsync("bob");
        Assert.Equal(3600u, session!.Record!.ExpirySeconds);
        Assert.Empty(session.Inflight);
        Assert.Empty(session.InboundQos2);
        Assert.Equal(1, session.QueuedCount);

        // B's writes go through; A's release does not take B's ownership.
        nodeB.UpdateDelivery("bob", 1, 5, DeliveryState.AwaitingAck);
        await nodeB.FlushAsync();
        Assert.Single((await nodeB.LoadSessionAsync("bob"))!.Inflight);
        await nodeA.ReleaseOwnershipAsync("bob", "A#1");
        Assert.Equal("B#1", await nodeA.GetOwnerAsync("bob"));
        await nodeB.ReleaseOwnershipAsync("bob", "B#1");
        Assert.Null(await nodeA.GetOwnerAsync("bob"));
    }

    [Fact]
    public async Task ClaimedAgainByTheSameNode_HeldMarksAreWrittenFirst_AndTheReplacedConnectionsLateWriteFencesNothing()
    {
        var node = await NewStoreAsync();
        var fenced = await ClaimBobWithTwoRowsAsync(node);

        // Sent, not acknowledged, then the client reconnects to the same node: the claim loads the mark, so the
        // message is resent under its packet id with DUP [MQTT-4.4.0-1], not as a new delivery.
        node.UpdateDelivery("bob", 1, 7, DeliveryState.AwaitingAck);
        await node.ClaimAsync("bob", "A#1", cleanStart: false);
        var session = await node.LoadSessionAsync("bob");
        Assert.Equal((1L, (ushort)7), (Assert.Single(session!.Inflight).Row.MessageId, session.Inflight[0].Row.PacketId));

        // This node's newer claim ran in Redis before a write of the replaced connection (its answer not yet
        // handled when that write was made): the write is refused, and nothing is fenced: the node still owns bob.
        await node.ClaimAsync("bob", "A#1", cleanStart: false);
        var db = _connections[0].GetDatabase();
        await db.HashIncrementAsync("s:{c/bob}", "epoch"); // what a claim of this node does first in Redis
        node.RemoveDelivery("bob", 1);
        await node.FlushAsync();
        Assert.Empty(fenced);

        // Another node's claim is a takeover: this node's next write is refused and it hears so.
        await db.HashSetAsync("s:{c/bob}", "owner", "B#1");
        node.RemoveDelivery("bob", 2);
        await node.FlushAsync();
        Assert.Equal(["bob"], fenced);
    }

    [Fact]
    public async Task CleanStart_DeletesTheSession_ButNotTheBindingOrTheMailbox()
    {
        var nodeA = await NewStoreAsync();
        var nodeB = await NewStoreAsync();
        await nodeA.ClaimAsync("bob", "A#1", cleanStart: false);
        Assert.Equal("bob-user", await nodeA.BindClientOwnerAsync("bob", "bob-user"));
        nodeA.UpsertSession(Persistent("bob"));
        await nodeA.AppendAsync(Message(1, "queued"), [Row("bob", 1)]);
        await nodeA.AppendAsync(Message(2, "inflight"), [Row("bob", 2)]);
        nodeA.UpdateDelivery("bob", 2, 1, DeliveryState.AwaitingAck);
        nodeA.SetInboundQos2("bob", 5, pending: true);
        await nodeA.AddToMailboxAsync("bob", Message(3, "mailed"), DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeMilliseconds());
        await nodeA.FlushAsync();

        var claim = await nodeB.ClaimAsync("bob", "B#1", cleanStart: true);
        Assert.Equal(new ClaimResult(2, "A#1", true), claim);
        Assert.Null(await nodeB.LoadSessionAsync("bob"));
        Assert.Empty(await nodeB.ReadQueueAsync("bob", 10, long.MaxValue));
        Assert.Equal("bob-user", await nodeB.GetClientOwnerAsync("bob"));

        nodeB.UpsertSession(Persistent("bob"));
        var session = await nodeB.LoadSessionAsync("bob");
        Assert.Empty(session!.Inflight);
        Assert.Empty(session.InboundQos2);
        Assert.Equal([3L], (await nodeB.ReadQueueAsync("bob", 10, long.MaxValue)).Select(x => x.Row.MessageId));
    }

    [Fact]
    public async Task Direct_WithoutSession_GoesToTheMailbox_AndIntoThePersistentSessionsQueue_UnlessExpired()
    {
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var store = await NewStoreAsync(clock);
        var now = clock.GetUtcNow().ToUnixTimeMilliseconds();

        Assert.Equal(new DirectResult(false, false, true), await store.AppendDirectAsync("dave", Message(1, "kept"), now + 3_600_000, null));
        Assert.Equal(new DirectResult(false, false, false), await store.AppendDirectAsync("dave", Message(2, "qos0", MqttQualityOfServiceLevel.AtMostOnce), now + 3_600_000, null));
        Assert.Equal(new DirectResult(false, false, true), await store.AppendDirectAsync("dave", Message(3, "short-lived"), now + 1_000, null));
        clock.Advance(TimeSpan.FromSeconds(2));

        store.UpsertSession(Persistent("dave"));
        var session = await store.LoadSessionAsync("dave");
        Assert.Equal((1, 4L), (session!.QueuedCount, session.QueuedBytes));
        var row = Assert.Single(await store.ReadQueueAsync("dave", 10, long.MaxValue));
        Assert.Equal((1L, Q1, false), (row.Row.MessageId, row.Row.Qos, row.Row.Retain));

        // With a session: a row when persistent, nothing when not.
        Assert.Equal(new DirectResult(true, true, false), await store.AppendDirectAsync("dave", Message(4, "row"), now + 3_600_000, null));
        store.UpsertSession(Persistent("erin") with { ExpirySeconds = 0 });
        Assert.Equal(new DirectResult(true, false, false), await store.AppendDirectAsync("erin", Message(5, "live only"), now + 3_600_000, null));
        Assert.Equal(2, (await store.LoadSessionAsync("dave"))!.QueuedCount);
    }

    [Fact]
    public async Task AMessageWrittenAgain_IsOneRow_WhetherQueuedOrInFlight_AndSettlingEitherLeavesNothingCounted()
    {
        // A publish sent again (DUP) or routed twice writes its row once: the scripts test "already there" with
        // HSETNX on the row's blob, which exists exactly while the id is queued or in flight.
        var clock = new FakeTimeProvider(DateTimeOffset.UtcNow);
        var store = await NewStoreAsync(clock);
        var later = clock.GetUtcNow().ToUnixTimeMilliseconds() + 3_600_000;
        store.UpsertSession(Persistent("gina"));
        await store.AppendAsync(Message(1, "one"), [Row("gina", 1)]);
        await store.AppendAsync(Message(1, "one"), [Row("gina", 1)]);
        Assert.Equal(new DirectResult(true, true, false), await store.AppendDirectAsync("gina", Message(2, "two"), later, null));
        Assert.Equal(new DirectResult(true, true, false), await store.AppendDirectAsync("gina", Message(2, "two"), later, null));
        var session = await store.LoadSessionAsync("gina");
        Assert.Equal((2, 6L), (session!.QueuedCount, session.QueuedBytes));

        // In flight, it is not queued again either.
        store.UpdateDelivery("gina", 1, 7, DeliveryState.AwaitingAck);
        await store.FlushAsync();
        await store.AppendDirectAsync("gina", Message(1, "one"), later, null);
        session = await store.LoadSessionAsync("gina");
        Assert.Equal((1, 3L, 1L), (session!.QueuedCount, session.QueuedBytes, Assert.Single(session.Inflight).Row.MessageId));

        // Settled in flight (1) and settled while still queued (2): no row, no count, no bytes left.
        store.RemoveDelivery("gina", 1);
        store.RemoveDelivery("gina", 2);
        await store.FlushAsync();
        session = await store.LoadSessionAsync("gina");
        Assert.Equal((0, 0L), (session!.QueuedCount, session.QueuedBytes));
        Assert.Empty(session.Inflight);
        await using var admin = await ConnectionMultiplexer.ConnectAsync(_server.Endpoint);
        var db = admin.GetDatabase();
        Assert.Equal(0, await db.HashLengthAsync(RedisKeys.Session("gina")[2])); // m: no blob left behind
        Assert.Equal(0, await db.HashLengthAsync(RedisKeys.Session("gina")[3])); // f
    }

    [Fact]
    public async Task MailboxEntry_RemovedOrNonPersistentSession_IsNotQueued()
    {
        var store = await NewStoreAsync();
        var later = DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeMilliseconds();
        await store.AddToMailboxAsync("frank", Message(1, "gone"), later);
        await store.AddToMailboxAsync("frank", Message(2, "stays"), later);
        store.RemoveFromMailbox("frank", 1);
        store.UpsertSession(Persistent("frank") with { ExpirySeconds = 0 });
        Assert.Equal(0, (await store.LoadSessionAsync("frank"))!.QueuedCount); // not persistent: the mailbox waits

        store.UpsertSession(Persistent("frank"));
        Assert.Equal(1, (await store.LoadSessionAsync("frank"))!.QueuedCount);
        Assert.Equal([2L], (await store.ReadQueueAsync("frank", 10, long.MaxValue)).Select(x => x.Row.MessageId));
    }

    [Fact]
    public async Task AppendRows_SkipsClientIdsWithoutAPersistentSession_AndRecordsTheInboundPacket()
    {
        var store = await NewStoreAsync();
        store.UpsertSession(Persistent("p1"));
        store.UpsertSession(Persistent("p2") with { ExpirySeconds = 0 });
        store.UpsertSession(Persistent("pub"));

        var written = await store.AppendRowsAsync(Message(1, "hi"), [Row("p1", 1), Row("p2", 1), Row("p3", 1)], new InboundPacket("pub", 77));
        Assert.Equal(["p1"], written);
        Assert.Equal(1, (await store.LoadSessionAsync("p1"))!.QueuedCount);
        Assert.Equal(0, (await store.LoadSessionAsync("p2"))!.QueuedCount);
        Assert.Null(await store.LoadSessionAsync("p3"));
        Assert.Equal([(ushort)77], (await store.LoadSessionAsync("pub"))!.InboundQos2);

        // The same row twice (a resend) is one row.
        await store.AppendAsync(Message(1, "hi"), [Row("p1", 1)]);
        Assert.Equal((1, 2L), ((await store.LoadSessionAsync("p1"))!.QueuedCount, (await store.LoadSessionAsync("p1"))!.QueuedBytes));
    }

    [Fact]
    public async Task DeleteSession_LeavesNothingBehind_AndAnotherClaimIsHigher()
    {
        var store = await NewStoreAsync();
        await store.ClaimAsync("bob", "A#1", cleanStart: false);
        store.UpsertSession(Persistent("bob"));
        await store.AppendAsync(Message(1, "x"), [Row("bob", 1)]);
        store.DeleteSession("bob");
        await store.FlushAsync();
        Assert.Null(await store.LoadSessionAsync("bob"));
        Assert.Empty(await store.ReadQueueAsync("bob", 10, long.MaxValue));
        Assert.Equal(2, (await store.ClaimAsync("bob", "A#1", cleanStart: false)).Epoch);
    }

    [Fact]
    public async Task Binding_IsSetOnce_UntilReleased()
    {
        var store = await NewStoreAsync();
        Assert.Null(await store.GetClientOwnerAsync("c1"));
        Assert.Equal("alice", await store.BindClientOwnerAsync("c1", "alice"));
        Assert.Equal("alice", await store.BindClientOwnerAsync("c1", "eve"));
        Assert.Equal("alice", await store.GetClientOwnerAsync("c1"));
        Assert.True(await store.ReleaseClientOwnerAsync("c1"));
        Assert.False(await store.ReleaseClientOwnerAsync("c1"));
        Assert.Null(await store.GetClientOwnerAsync("c1"));
        Assert.Equal("eve", await store.BindClientOwnerAsync("c1", "eve"));
    }

    [Fact]
    public async Task Records_KeepTheLatestValue_AndDeletions()
    {
        var store = await NewStoreAsync();
        await store.SaveRecordAsync("ims.user", "b", [1, 2]);
        await store.SaveRecordAsync("ims.user", "a", [3]);
        await store.SaveRecordAsync("ims.user", "a", null);
        await store.SaveRecordAsync("ims.user", "c", []);
        await store.SaveRecordAsync("ims.group", "g", [4]);

        var records = store.LoadRecords("ims.user");
        Assert.Equal(["a", "b", "c"], records.Select(r => r.Key));
        Assert.Null(records[0].Value);
        Assert.Equal([1, 2], records[1].Value!);
        Assert.Equal([], records[2].Value!);
        Assert.Equal("g", Assert.Single(store.LoadRecords("ims.group")).Key);
        Assert.Empty(store.LoadRecords("none"));
    }

    [Fact]
    public async Task Retained_SetAndDeleted_IsWhatLoadReturns()
    {
        var store = await NewStoreAsync();
        await store.SetRetainedAsync(Message(1, "old", topic: "r/1"));
        await store.SetRetainedAsync(Message(2, "new", topic: "r/1"));
        await store.SetRetainedAsync(Message(3, "other", topic: "r/2"));
        await store.SetRetainedAsync(Message(4, "deleted", topic: "r/3"));
        await store.DeleteRetainedAsync("r/3");
        store.UpsertSession(Persistent("bob"));

        var snapshot = await store.LoadAsync(CancellationToken.None);
        Assert.Equal(["r/1:new", "r/2:other"], snapshot.Retained.Select(m => $"{m.Topic}:{Encoding.UTF8.GetString(m.Payload.Span)}").Order());
        Assert.Empty(snapshot.Sessions); // sessions are read when claimed
        Assert.Equal(0, snapshot.MaxMessageId);
    }

    [Fact]
    public async Task Readers_OfARoute_AreAddedAndRemoved()
    {
        var store = await NewStoreAsync();
        var s1 = new SubscriptionRecord("g/1/#", Q1, false, false, MqttRetainHandling.SendAtSubscribe, 0);
        var s2 = new SubscriptionRecord("g/1/+", MqttQualityOfServiceLevel.ExactlyOnce, true, true, MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly, 4);
        await store.AddReaderAsync("g/1", "bob", s1);
        await store.AddReaderAsync("g/1", "bob", s2);
        await store.AddReaderAsync("g/1", "carol", s1);
        await store.RemoveReaderAsync("g/1", "carol", "g/1/#");

        var readers = await store.ReadReadersAsync("g/1");
        Assert.Equal([new RouteReader("bob", s1), new RouteReader("bob", s2)], readers.OrderBy(r => r.Subscription.Filter, StringComparer.Ordinal));
        Assert.Empty(await store.ReadReadersAsync("g/2"));
    }

    [Fact]
    public async Task AcknowledgedAppends_SurviveKillingRedis()
    {
        var store = await NewStoreAsync();
        store.UpsertSession(Persistent("bob"));
        await Task.WhenAll(Enumerable.Range(1, 200).Select(id => store.AppendAsync(Message(id, $"m{id}"), [Row("bob", id)]).AsTask()));
        store.UpdateDelivery("bob", 1, 11, DeliveryState.AwaitingAck);
        await store.FlushAsync();

        await _server.KillAsync();
        await _server.RestartAsync();

        var after = await NewStoreAsync();
        var session = await after.LoadSessionAsync("bob");
        Assert.NotNull(session);
        Assert.Equal(199, session.QueuedCount);
        Assert.Equal((1L, (ushort)11), (Assert.Single(session.Inflight).Row.MessageId, session.Inflight[0].Row.PacketId));
        var queued = await after.ReadQueueAsync("bob", 1000, long.MaxValue);
        Assert.Equal(199, queued.Count);
        Assert.Equal(queued.Select(q => q.Row.MessageId).Order(), queued.Select(q => q.Row.MessageId).ToHashSet().Order());
    }

    [Fact]
    public async Task RedisDown_FailsAwaitedWrites_CountsTheOthers_AndReleasesWaitingPublishers()
    {
        var connection = await ConnectionMultiplexer.ConnectAsync($"{_server.Endpoint},abortConnect=false,asyncTimeout=500,connectTimeout=500");
        _connections.Add(connection);
        var store = new RedisBrokerStore(connection, NullLogger<RedisBrokerStore>.Instance, maxPendingWrites: 1);
        store.UpsertSession(Persistent("bob"));
        await store.FlushAsync();
        await store.WaitForRoomAsync();

        await _server.KillAsync();
        store.SetInboundQos2("bob", 1, pending: true); // nobody awaits it
        var room = store.WaitForRoomAsync().AsTask();
        Assert.False(room.IsCompleted); // one write outstanding: at the bound
        await Assert.ThrowsAnyAsync<Exception>(() => store.AppendAsync(Message(1, "x"), [Row("bob", 1)]).AsTask());
        await room; // the failed writes are no longer outstanding
        await store.FlushAsync(); // another caller's barrier: not failed by a write it is not about
        Assert.Equal(1, store.FailedWrites); // the one nobody awaited: counted (and logged)
    }

    [Fact]
    public async Task Mailbox_KeepsAtMostItsCapPerClientId_OldestGoFirst()
    {
        // Contract §5 / Broker:MaxQueuedMessages: a sender cannot fill Redis by writing to one absent client id.
        var connection = await ConnectionMultiplexer.ConnectAsync(_server.Endpoint);
        _connections.Add(connection);
        var store = new RedisBrokerStore(connection, NullLogger<RedisBrokerStore>.Instance) { MailboxCap = 3 };
        var expires = DateTimeOffset.UtcNow.AddHours(1).ToUnixTimeMilliseconds();
        for (var id = 1; id <= 5; id++)
        {
            var result = await store.AppendDirectAsync("absent", Message(id, $"m{id}"), expires, null);
            Assert.True(result.Mailed);
        }

        var mailbox = await store.ReadMailboxAsync("absent");
        Assert.Equal(["m3", "m4", "m5"], mailbox.Select(m => Encoding.UTF8.GetString(m.Message.Payload.Span)));
    }

    async Task<RedisBrokerStore> NewStoreAsync(TimeProvider? time = null)
    {
        var connection = await ConnectionMultiplexer.ConnectAsync(_server.Endpoint);
        _connections.Add(connection);
        return new RedisBrokerStore(connection, NullLogger<RedisBrokerStore>.Instance, time: time);
    }

    /// <summary>bob claimed by <paramref name="store"/> as A#1, persistent, rows 1 and 2 queued; returns the client ids the store hears fenced.</summary>
    static async Task<List<string>> ClaimBobWithTwoRowsAsync(RedisBrokerStore store)
    {
        var fenced = new List<string>();
        store.Fenced += fenced.Add;
        await store.ClaimAsync("bob", "A#1", cleanStart: false);
        store.UpsertSession(Persistent("bob"));
        await store.AppendAsync(Message(1, "one"), [Row("bob", 1)]);
        await store.AppendAsync(Message(2, "two"), [Row("bob", 2)]);
        return fenced;
    }

    /// <summary>Lua scripts Redis ran since its statistics were reset (EVAL and EVALSHA).</summary>
    static async Task<long> ScriptCallsAsync(IServer server) =>
        (await server.InfoAsync("commandstats")).SelectMany(g => g).Where(kv => kv.Key is "cmdstat_evalsha" or "cmdstat_eval")
            .Sum(kv => long.Parse(kv.Value.Split(',')[0]["calls=".Length..], System.Globalization.CultureInfo.InvariantCulture));

    static SessionRecord Persistent(string clientId) => new(clientId, clientId + "-user", "user", 3600, 0, []);

    static BrokerMessage Message(long id, string payload, MqttQualityOfServiceLevel qos = Q1, string topic = "t/bob") =>
        new() { Id = id, Topic = topic, Payload = Encoding.UTF8.GetBytes(payload), Qos = qos, SenderClientId = "alice" };

    static StoredDelivery Row(string clientId, long id, bool retain = false, uint[]? ids = null) => new(clientId, id, Q1, retain, ids);
}
