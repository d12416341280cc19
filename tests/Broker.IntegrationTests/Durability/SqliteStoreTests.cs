using Broker.IntegrationTests.Infrastructure;
using Microsoft.Data.Sqlite;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>The SQLite store in process: storage shrinks as messages are delivered; mailbox time to live.</summary>
public sealed class SqliteStoreTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-sqlite-");

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        _dir.Delete(recursive: true);
    }

    [Fact]
    public async Task DeliveredMessages_AreDeletedFromTheStore()
    {
        await using (var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Store:Type"] = "sqlite";
            s["Broker:DataPath"] = _dir.FullName;
        }))
        {
            await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600))
            {
                // QoS 1 to bob, so each read (and its PUBACK) ends the exchange; QoS 2 ones would wait for PUBCOMP.
                await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.AtLeastOnce);
            }

            await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
            {
                for (var i = 0; i < 50; i++)
                {
                    await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"m{i}", i % 2 == 0 ? MqttQualityOfServiceLevel.AtLeastOnce : MqttQualityOfServiceLevel.ExactlyOnce);
                }
            }

            Assert.Equal((50, 50), Count("messages", "deliveries"));
            await using var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
            for (var i = 0; i < 50; i++)
            {
                await back.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", $"m{i}");
            }

            // A QoS 2 exchange ends at PUBCOMP, a round trip after the read (PUBREL waits for its commit).
            await broker.WaitAcknowledgedAsync("GID_IMS@@@bob-phone");
        }

        // After a clean stop every acknowledged message row is gone; only the session remains.
        Assert.Equal((0, 0), Count("messages", "deliveries"));
        Assert.Equal((1, 0), Count("sessions", "inbound_qos2"));
    }

    [Fact]
    public async Task MailboxMessage_AfterItsTimeToLive_IsGoneAndCounted()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Store:Type"] = "sqlite";
            s["Broker:DataPath"] = _dir.FullName;
            s["Broker:OfflineP2PTtl"] = "00:10:00";
        }, fakeClock: true);
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@carol-new", "too late");
            await Expect.PublishAcceptedAsync(alice, "IMS/p2p/GID_IMS@@@carol-new", "qos 0 is not kept", MqttQualityOfServiceLevel.AtMostOnce);
        }

        Assert.Equal(1, broker.Engine.MailboxCount);
        var droppedBefore = broker.Counters.Dropped;
        broker.Clock!.Advance(TimeSpan.FromMinutes(11));

        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-new", "carol", cleanStart: false, sessionExpiry: 3600);
        await using var alice2 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice2.PublishAsync("IMS/p2p/GID_IMS@@@carol-new", "fresh");

        await carol.ExpectOnlyAsync("IMS/p2p/GID_IMS@@@carol-new", "fresh");
        Assert.Equal(0, broker.Engine.MailboxCount);
        Assert.Equal(droppedBefore + 1, broker.Counters.Dropped);
    }

    (long, long) Count(string first, string second)
    {
        using var connection = new SqliteConnection($"Data Source={Path.Combine(_dir.FullName, "broker.db")};Mode=ReadOnly;Pooling=False");
        connection.Open();
        return (Scalar(connection, first), Scalar(connection, second));
    }

    static long Scalar(SqliteConnection connection, string table)
    {
        using var command = connection.CreateCommand();
        command.CommandText = $"SELECT count(*) FROM {table}";
        return (long)command.ExecuteScalar()!;
    }

    [Fact]
    public async Task AFailedCommit_FailsWhatIsAwaited_AndWritesWhatNobodyAwaitsWithTheNextCommit()
    {
        // Reliability issue, item 6: a failed commit must not silently drop the batch's other changes (a binding,
        // a session, a removal), nor stop the only writer. Another process holding the file's write lock makes
        // the commit fail (SQLITE_BUSY after the 5 s busy timeout), as a disk error would.
        var path = Path.Combine(_dir.FullName, Broker.Store.Sqlite.SqliteBrokerStore.FileName);
        await using (var store = Broker.Store.Sqlite.SqliteBrokerStore.Open(_dir.FullName, fullSync: true, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance, commitDelay: TimeSpan.FromMilliseconds(100)))
        {
            using (SqliteWriteLock.Hold(path))
            {
                // One batch (the writer gathers for 100 ms): a change nobody awaits, and a publish that is awaited.
                store.UpsertSession(new Broker.Engine.Store.SessionRecord("GID_IMS@@@bob-phone", "bob", "user", 3600, 0, []));
                var publish = store.AppendAsync(
                    new Broker.Engine.Routing.BrokerMessage { Id = 1, Topic = "IMS/bob/Inbox/Msg/alice", Payload = new byte[] { 1 }, Qos = MqttQualityOfServiceLevel.AtLeastOnce },
                    [new Broker.Engine.Store.StoredDelivery("GID_IMS@@@bob-phone", 1, MqttQualityOfServiceLevel.AtLeastOnce, false, null)]);
                await Assert.ThrowsAsync<Broker.Store.Sqlite.StoreWriteException>(async () => await publish); // not acknowledged
            }

            await store.FlushAsync(); // the writer is alive, and the session change went with this commit
        }

        await using var reopened = Broker.Store.Sqlite.SqliteBrokerStore.Open(_dir.FullName, fullSync: true, Microsoft.Extensions.Logging.Abstractions.NullLogger.Instance);
        var snapshot = await reopened.LoadAsync(CancellationToken.None);
        Assert.Equal("GID_IMS@@@bob-phone", Assert.Single(snapshot.Sessions).ClientId);
        Assert.Empty(snapshot.QueuedTotals); // the refused publish left nothing
    }
}
