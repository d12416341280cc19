using Broker.Engine.Store;
using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;
using Broker.Store.Sqlite;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>
/// The store's write queue is bounded (Broker:Store:MaxPendingWrites) with backpressure on the publishers:
/// at the bound a connection stops reading PUBLISH packets until commits make room; nothing is dropped.
/// </summary>
public sealed class StoreBackpressureTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-backpressure-");

    public void Dispose()
    {
        SqliteConnection.ClearAllPools();
        _dir.Delete(recursive: true);
    }

    [Fact]
    public async Task PublisherBeyondTheBound_IsNotReadUntilCommitsMakeRoom_AndNothingIsLost()
    {
        const int bound = 20;
        const int total = 100;
        var store = new GatedStore { MaxPendingWrites = bound };
        await using var broker = await TestBroker.StartAsync(
            s =>
            {
                s["Broker:Conventions:Enabled"] = "false";
                s["Broker:AllowAnonymous"] = "true";
                s["Broker:Mqtt:ReceiveMaximum"] = "1000"; // the ack line's own backpressure stays out of the way
            },
            configureServices: services => services.AddSingleton<IBrokerStore>(store));

        // A persistent subscriber: every publish to bp/# is one store write (its row), held while the disk is "slow".
        await using var keeper = await Raw.ConnectAsync(broker.MqttPort, "keeper", cleanSession: false);
        await keeper.SubscribeAsync("bp/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await using var publisher = await Raw.ConnectAsync(broker.MqttPort, "fast");

        store.Hold = true;
        for (ushort id = 1; id <= total; id++)
        {
            await publisher.SendAsync(Raw.Publish("bp/x", "m" + id, MqttQualityOfServiceLevel.AtLeastOnce, id));
        }

        // The connection is waiting for room: it has handled exactly the publishes that filled the queue.
        await store.RoomWaited;
        Assert.Equal(bound, store.HeldWrites);
        Assert.Equal(bound, broker.Counters.Received);

        // Still so while the commits are held: nothing more is read.
        await publisher.SendAsync(MqttPingReqPacket.Instance);
        await keeper.SendAsync(MqttPingReqPacket.Instance); // another connection is served meanwhile
        var keeperSaw = new List<MqttPacket>();
        while (await keeper.ReceiveAsync() is { } packet and not MqttPingRespPacket)
        {
            keeperSaw.Add(packet);
        }

        Assert.Equal(bound, broker.Counters.Received);

        // The disk catches up: the rest is read and acknowledged in order, and the subscriber gets every one.
        store.Release();
        var acks = new List<int>();
        var pingAnswered = false;
        while (acks.Count < total || !pingAnswered)
        {
            // The PINGRESP is not ordered with the acks (those wait for their commits): it may come first.
            var packet = await publisher.ReceiveAsync();
            Assert.NotNull(packet);
            if (packet is MqttPingRespPacket)
            {
                pingAnswered = true;
            }
            else
            {
                acks.Add(Assert.IsType<MqttPubAckPacket>(packet).PacketIdentifier);
            }
        }

        Assert.Equal(Enumerable.Range(1, total), acks);
        Assert.Equal(total, broker.Counters.Received);
        var delivered = new List<string>();
        foreach (var publish in keeperSaw.OfType<MqttPublishPacket>())
        {
            delivered.Add(Raw.Text(publish));
            await keeper.SendAsync(new MqttPubAckPacket { PacketIdentifier = publish.PacketIdentifier });
        }

        while (delivered.Count < total)
        {
            var publish = await keeper.ExpectAsync<MqttPublishPacket>();
            delivered.Add(Raw.Text(publish));
            await keeper.SendAsync(new MqttPubAckPacket { PacketIdentifier = publish.PacketIdentifier });
        }

        Assert.Equal(Enumerable.Range(1, total).Select(i => "m" + i), delivered);
    }

    [Fact]
    public async Task SqliteStore_AtItsBound_MakesCallersWaitForRoom_AndKeepsEveryWrite()
    {
        const int bound = 5;
        const int writes = 50;
        var store = SqliteBrokerStore.Open(_dir.FullName, fullSync: false, NullLogger.Instance, maxPendingWrites: bound);
        try
        {
            Assert.True(store.WaitForRoomAsync().AsTask().IsCompletedSuccessfully);

            // A slow disk: another connection holds the file's write lock, so the store's writer waits in its commit.
            ValueTask room;
            using (SqliteWriteLock.Hold(store.FilePath))
            {
                // Fire-and-forget writes are always taken, beyond the bound too: never refused, never blocked.
                for (var i = 0; i < writes; i++)
                {
                    await store.BindClientOwnerAsync($"client-{i}", "user");
                }

                Assert.Equal(writes, store.PendingWrites);
                room = store.WaitForRoomAsync();
                Assert.False(room.IsCompleted);
            }

            await room.AsTask().WaitAsync(TestClient.Timeout);
            await store.FlushAsync();
            Assert.Equal(0, store.PendingWrites);
            Assert.True(store.WaitForRoomAsync().AsTask().IsCompletedSuccessfully);
        }
        finally
        {
            await store.DisposeAsync();
        }

        // Nothing was lost: every binding is in the file.
        var reopened = SqliteBrokerStore.Open(_dir.FullName, fullSync: false, NullLogger.Instance);
        await using (reopened)
        {
            for (var i = 0; i < writes; i++)
            {
                Assert.Equal("user", await reopened.GetClientOwnerAsync($"client-{i}"));
            }
        }
    }
}
