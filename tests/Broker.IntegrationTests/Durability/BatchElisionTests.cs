using Broker.Engine.Routing;
using Broker.Engine.Store;
using Broker.IntegrationTests.Infrastructure;
using Broker.Store.Sqlite;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>
/// The store writer's batches: changes that cancel out within one batch are not written (a delivery
/// acknowledged before its commit), and what is on disk afterwards is what writing them would have left;
/// the commit delay that gathers a batch is skipped under a sustained load and ends at dispose.
/// </summary>
public sealed class BatchElisionTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-elision-");

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        _dir.Delete(recursive: true);
    }

    static BrokerMessage Message(long id) => new() { Id = id, Topic = "IMS/bob/Inbox/Msg/alice", Payload = new byte[] { 1, 2, 3 }, Qos = MqttQualityOfServiceLevel.AtLeastOnce };

    static StoredDelivery Delivery(string client, long message) => new(client, message, MqttQualityOfServiceLevel.AtLeastOnce, false, null);

    [Fact]
    public void AppendUpdateRemove_OfOneDelivery_CancelOut_OthersOfTheSameMessageStay()
    {
        var elision = new BatchElision();
        List<StoreOperation> batch =
        [
            new StoreOperation.Append(Message(1), [Delivery("a", 1), Delivery("b", 1)]),
            new StoreOperation.UpdateDelivery("a", 1, 7, DeliveryState.AwaitingAck),
            new StoreOperation.UpdateDelivery("b", 1, 8, DeliveryState.AwaitingAck),
            new StoreOperation.RemoveDelivery("a", 1),
        ];

        elision.Plan(batch);

        Assert.False(elision.Skips(0)); // the message itself: b still needs it
        Assert.True(elision.Skips(0, "a"));
        Assert.False(elision.Skips(0, "b"));
        Assert.True(elision.Skips(1));
        Assert.False(elision.Skips(2));
        Assert.True(elision.Skips(3));
        Assert.Equal(3, elision.Elided);
    }

    [Fact]
    public void RemoveOfADeliveryFromAnEarlierBatch_IsWritten()
    {
        var elision = new BatchElision();
        List<StoreOperation> batch =
        [
            new StoreOperation.RemoveDelivery("a", 1),
            new StoreOperation.Append(Message(1), [Delivery("a", 1)]), // appended again after the removal: stays
        ];

        elision.Plan(batch);

        Assert.False(elision.Skips(0));
        Assert.False(elision.Skips(1, "a"));
        Assert.Equal(0, elision.Elided);
    }

    [Fact]
    public void InFlightMark_OfADeliveryRemovedLaterInTheBatch_IsNotWritten_TheRemovalIs()
    {
        var elision = new BatchElision();
        List<StoreOperation> batch =
        [
            new StoreOperation.UpdateDelivery("a", 1, 7, DeliveryState.AwaitingAck), // appended in an earlier batch
            new StoreOperation.UpdateDelivery("b", 1, 8, DeliveryState.AwaitingAck), // stays in flight
            new StoreOperation.RemoveDelivery("a", 1),
            new StoreOperation.UpdateDelivery("a", 1, 9, DeliveryState.AwaitingAck), // after the removal: written
        ];

        elision.Plan(batch);

        Assert.True(elision.Skips(0));
        Assert.False(elision.Skips(1));
        Assert.False(elision.Skips(2));
        Assert.False(elision.Skips(3));
    }

    [Fact]
    public void MailboxAddAndTake_AndQos2MarkAndRelease_CancelOut()
    {
        var elision = new BatchElision();
        List<StoreOperation> batch =
        [
            new StoreOperation.MailboxAdd("GID_IMS@@@carol", Message(2), 0),
            new StoreOperation.InboundQos2("GID_IMS@@@alice", 5, true),
            new StoreOperation.MailboxRemove("GID_IMS@@@carol", 2),
            new StoreOperation.InboundQos2("GID_IMS@@@alice", 5, false),
            new StoreOperation.InboundQos2("GID_IMS@@@alice", 6, true),
        ];

        elision.Plan(batch);

        Assert.True(elision.Skips(0) && elision.Skips(1) && elision.Skips(2) && elision.Skips(3));
        Assert.False(elision.Skips(4));
    }

    [Fact]
    public async Task OnDisk_AnAcknowledgedDeliveryLeavesNothing_AnUnacknowledgedOneStays()
    {
        // Whether the writer takes these in one batch or several, the file must end the same.
        await using (var store = SqliteBrokerStore.Open(_dir.FullName, fullSync: true, NullLogger.Instance))
        {
            var acked = store.AppendAsync(Message(1), [Delivery("GID_IMS@@@bob", 1)]);
            store.UpdateDelivery("GID_IMS@@@bob", 1, 1, DeliveryState.AwaitingAck);
            store.RemoveDelivery("GID_IMS@@@bob", 1);
            var kept = store.AppendAsync(Message(2), [Delivery("GID_IMS@@@bob", 2), Delivery("GID_IMS@@@carol", 2)]);
            store.UpdateDelivery("GID_IMS@@@bob", 2, 2, DeliveryState.AwaitingAck);
            store.RemoveDelivery("GID_IMS@@@bob", 2);
            await acked;
            await kept;

            // A group message whose members all acknowledge after its commit: released in one go.
            await store.AppendAsync(Message(3), [Delivery("GID_IMS@@@m1", 3), Delivery("GID_IMS@@@m2", 3), Delivery("GID_IMS@@@m3", 3)]);
            store.RemoveDelivery("GID_IMS@@@m1", 3);
            store.RemoveDelivery("GID_IMS@@@m2", 3);
            store.RemoveDelivery("GID_IMS@@@m3", 3);
            await store.FlushAsync();
        }

        await using var reopened = SqliteBrokerStore.Open(_dir.FullName, fullSync: true, NullLogger.Instance);
        var snapshot = await reopened.LoadAsync(CancellationToken.None);
        Assert.Empty(snapshot.Deliveries); // nothing in flight; carol's row waits in the store's queue
        Assert.Equal(["GID_IMS@@@carol"], snapshot.QueuedTotals.Keys);
        var queued = Assert.Single(await reopened.ReadQueueAsync("GID_IMS@@@carol", 10, long.MaxValue));
        Assert.Equal(2L, queued.Message.Id);
        Assert.Empty(await reopened.ReadQueueAsync("GID_IMS@@@bob", 10, long.MaxValue));
        Assert.Equal(2L, snapshot.MaxMessageId); // messages 1 and 3 are gone with their last row
    }

    [Fact]
    public async Task OnDisk_APacketIdWrittenWithItsMessage_StaysWhenItsRowsCancelOut()
    {
        // A QoS 2 packet id travels with its message (engine invariant 2); the message's rows may cancel out
        // within the batch (acknowledged at once), the id must not: the publisher's PUBREL has not come yet.
        await using (var store = SqliteBrokerStore.Open(_dir.FullName, fullSync: true, NullLogger.Instance))
        {
            var appended = store.AppendAsync(Message(1), [Delivery("GID_IMS@@@bob", 1)], new InboundPacket("GID_IMS@@@alice", 7));
            store.RemoveDelivery("GID_IMS@@@bob", 1);
            var mailed = store.AddToMailboxAsync("GID_IMS@@@bob-p2p", Message(2), long.MaxValue, new InboundPacket("GID_IMS@@@alice", 8));
            store.RemoveFromMailbox("GID_IMS@@@bob-p2p", 2);
            await appended;
            await mailed;
            await store.FlushAsync();
        }

        await using var reopened = SqliteBrokerStore.Open(_dir.FullName, fullSync: true, NullLogger.Instance);
        var snapshot = await reopened.LoadAsync(CancellationToken.None);
        Assert.Equal([("GID_IMS@@@alice", (ushort)7), ("GID_IMS@@@alice", (ushort)8)], snapshot.InboundQos2.Order());
        Assert.Empty(snapshot.Mailbox);
        Assert.Empty(snapshot.QueuedTotals);
    }

    [Theory]
    [InlineData(0, 2)] // woken from idle by one change: the delay gathers the rest
    [InlineData(SqliteBrokerStore.EagerBatch - 1, 2)]
    [InlineData(SqliteBrokerStore.EagerBatch, 0)] // a batch gathered while the last commit ran: at once
    [InlineData(SqliteBrokerStore.MaxBatch, 0)]
    public void TheCommitDelay_IsSkippedWhenABatchIsAlreadyWaiting(int waiting, int gatherMs)
    {
        Assert.Equal(TimeSpan.FromMilliseconds(gatherMs), SqliteBrokerStore.Gather(TimeSpan.FromMilliseconds(2), waiting));
    }

    [Fact]
    public async Task Dispose_CommitsWhatWaitsOutTheCommitDelay()
    {
        // A delay no test could wait out: this passes only because dispose ends the wait.
        var store = SqliteBrokerStore.Open(_dir.FullName, fullSync: true, NullLogger.Instance, commitDelay: TimeSpan.FromHours(1));
        var appended = store.AppendAsync(Message(1), [Delivery("GID_IMS@@@bob", 1)]).AsTask(); // one change: the writer waits

        await store.DisposeAsync().AsTask().WaitAsync(TestClient.Timeout);
        await appended;

        await using var reopened = SqliteBrokerStore.Open(_dir.FullName, fullSync: true, NullLogger.Instance);
        var snapshot = await reopened.LoadAsync(CancellationToken.None);
        Assert.Equal(["GID_IMS@@@bob"], snapshot.QueuedTotals.Keys);
    }

    [Fact]
    public async Task Acks_OfABatchQueuedBehindACommit_AreSentByThePool_ALoneOneByTheWriter()
    {
        await using var store = SqliteBrokerStore.Open(_dir.FullName, fullSync: false, NullLogger.Instance);

        // Quiet: the writer completes an append itself, where the connection's ack line runs (no thread hop).
        // (The disk is held while the append is awaited, so the completion cannot come before the await.)
        Task<int> lone;
        using (SqliteWriteLock.Hold(store.FilePath))
        {
            lone = CompletedOn(store.AppendAsync(Message(1), [Delivery("GID_IMS@@@bob", 1)]));
        }

        Assert.Equal(store.WriterThreadId, await lone.WaitAsync(TestClient.Timeout));

        // A slow disk: a batch queues behind a commit. The writer is then the line everyone waits on: the pool
        // completes the batch's appends while it goes on.
        Task first;
        Task<int>[] queued;
        using (SqliteWriteLock.Hold(store.FilePath))
        {
            first = store.AppendAsync(Message(2), [Delivery("GID_IMS@@@bob", 2)]).AsTask();
            queued = Enumerable.Range(3, SqliteBrokerStore.EagerBatch).Select(i => CompletedOn(store.AppendAsync(Message(i), [Delivery("GID_IMS@@@bob", i)]))).ToArray();
        }

        await first.WaitAsync(TestClient.Timeout);
        Assert.DoesNotContain(store.WriterThreadId, await Task.WhenAll(queued).WaitAsync(TestClient.Timeout));
    }

    [Fact]
    public async Task AWriteHeardOfAsCommitted_IsNoLongerCountedPending()
    {
        // The count drives backpressure and the metric; a caller that awaited its write (here: a continuation that
        // runs where the store completes it, as a connection's acks do) must see it counted out. It was lowered
        // after the waiters were told: such a continuation saw 1, and a test that read it after FlushAsync failed
        // now and then on a loaded machine.
        await using var store = SqliteBrokerStore.Open(_dir.FullName, fullSync: false, NullLogger.Instance);
        Task<long> seen;
        using (SqliteWriteLock.Hold(store.FilePath))
        {
            seen = store.AppendAsync(Message(1), [Delivery("GID_IMS@@@bob", 1)]).AsTask()
                .ContinueWith(_ => store.PendingWrites, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        Assert.Equal(0, await seen.WaitAsync(TestClient.Timeout));
    }

    /// <summary>The thread that completed an append: a synchronous continuation runs where its store completed it.</summary>
    static Task<int> CompletedOn(ValueTask append) =>
        append.AsTask().ContinueWith(_ => Environment.CurrentManagedThreadId, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
}
