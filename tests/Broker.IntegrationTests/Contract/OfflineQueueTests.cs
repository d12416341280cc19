using System.Text;
using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// Contract §6 (revised): a persistent session's queue waits in the durable store, not in memory; only a
/// window of it is held while the client is connected. Limits per session (messages, bytes, time to
/// live) drop the oldest, and the next v5 CONNACK says how many (ims-dropped).
/// </summary>
public sealed class OfflineQueueTests : IDisposable
{
    const string Bob = "GID_IMS@@@bob-phone";
    const string Inbox = "IMS/bob/Inbox/Msg/alice";
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-offline-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public async Task AnOfflineSessionGetsEveryMessage_FarBeyondTheWindow_InOrder_WithNothingInMemory()
    {
        // The window is 20 messages; 2,000 wait in the SQLite file and come back a page at a time.
        const int Count = 2000;
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Store:Type"] = "sqlite";
            s["Broker:Store:Synchronous"] = "normal";
            s["Broker:DataPath"] = _dir.FullName;
            s["Broker:MaxQueuedMessages"] = "20";
        });
        await SubscribeThenLeaveAsync(broker);

        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            for (var batch = 0; batch < Count; batch += 100)
            {
                await Task.WhenAll(Enumerable.Range(batch, 100).Select(i => Expect.PublishAcceptedAsync(alice, Inbox, $"m{i:D4}")));
            }
        }

        var session = broker.Engine.FindSession(Bob)!;
        Assert.Equal(Count, session.QueuedCount);
        Assert.Equal(0, session.WindowCount); // offline: all of it waits on disk

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600);
        Assert.Null(Expect.UserProperty(back.ConnectResult.UserProperties, "ims-dropped"));
        var received = new List<string>();
        for (var i = 0; i < Count; i++)
        {
            received.Add(TestClient.Text(await back.NextAsync()));
            Assert.True(session.WindowCount <= 20, $"window of {session.WindowCount} messages");
        }

        // Each publish was concurrent within its batch of 100: the set is exact, and batches keep their order.
        Assert.Equal(Enumerable.Range(0, Count).Select(i => $"m{i:D4}"), received.Order());
        for (var i = 100; i < Count; i += 100)
        {
            Assert.True(received.IndexOf($"m{i - 1:D4}") < received.IndexOf($"m{i + 99:D4}"));
        }

        await broker.WaitAcknowledgedAsync(Bob);
        Assert.Equal(0, session.QueuedCount);
    }

    [Fact]
    public async Task TheNextPage_ReadWhileHalfTheWindowIsLeft_NeverTakesTheWindowAboveItsBound()
    {
        // Contract §6: memory holds a bounded window (Broker:MaxQueuedMessages). The next page is read when half
        // of it is left; while the client acknowledges nothing more, that page lands on a half-full window and
        // must only fill it (it held 30 of 20 before the page counted the window's own rows).
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Store:Type"] = "sqlite";
            s["Broker:Store:Synchronous"] = "normal";
            s["Broker:DataPath"] = _dir.FullName;
            s["Broker:MaxQueuedMessages"] = "20";
            s["Broker:Mqtt:MaxInflightMessages"] = "1";
        });
        await SubscribeThenLeaveAsync(broker);
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            for (var i = 0; i < 100; i++)
            {
                await Expect.PublishAcceptedAsync(alice, Inbox, $"m{i:D3}");
            }
        }

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600, autoAcknowledge: false);
        var session = broker.Engine.FindSession(Bob)!;
        for (var i = 0; i < 11; i++)
        {
            var received = await back.NextAsync();
            Assert.Equal($"m{i:D3}", TestClient.Text(received));
            await received.AcknowledgeAsync(CancellationToken.None); // one in flight at a time: the window shrinks by one
        }

        // m011 is in flight, unacknowledged; the window fell to half and the next page was asked for.
        Assert.Equal("m011", TestClient.Text(await back.NextAsync()));
        await Poll.UntilAsync(() => Task.FromResult(session.WindowCount > 10), "the next page never came");
        Assert.True(session.WindowCount <= 20, $"window of {session.WindowCount} messages");
    }

    [Theory]
    [InlineData("memory")]
    [InlineData("sqlite")]
    public async Task AnOnlineSlowSubscriber_BehindATinyWindow_GetsEveryMessageOnceAndInOrder(string store)
    {
        // The window (here 5 messages) fills while the subscriber reads: new messages wait in the store behind
        // it and are paged in, while more keep arriving [MQTT-4.6.0-6: in order per publisher and QoS].
        const int Count = 400;
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Store:Type"] = store;
            s["Broker:DataPath"] = _dir.FullName;
            s["Broker:MaxQueuedMessages"] = "5";
        });
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        var publishing = Task.Run(async () =>
        {
            for (var batch = 0; batch < Count; batch += 20)
            {
                // 20 at a time in flight: the broker routes them in the order they come [MQTT-4.6.0-2].
                await Task.WhenAll(Enumerable.Range(batch, 20).Select(i => alice.PublishAsync(Inbox, $"m{i:D4}")));
            }
        });

        var received = new List<string>();
        for (var i = 0; i < Count; i++)
        {
            received.Add(TestClient.Text(await bob.NextAsync()));
        }

        await publishing;
        Assert.Equal(Count, received.Distinct().Count()); // none twice, none missing
        Assert.Equal(received.Order(), received); // and in publish order
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PastMaxBytes_TheOldestAreDropped_AndTheNextV5ConnAckSaysHowMany(MqttProtocolVersion version)
    {
        // 10 messages of 300 bytes against Broker:OfflineQueue:MaxBytes = 1024: the newest 3 stay (900 bytes).
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:OfflineQueue:MaxBytes"] = "1024");
        await SubscribeThenLeaveAsync(broker, version);
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            for (var i = 0; i < 10; i++)
            {
                await Expect.PublishAcceptedAsync(alice, Inbox, i + new string('.', 299));
            }
        }

        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, BobConnect(), version);
        await using (raw)
        {
            Assert.True(ack.IsSessionPresent);
            var told = ack.UserProperties?.SingleOrDefault(p => p.Name == "ims-dropped")?.ReadValueAsString();
            Assert.Equal(version == MqttProtocolVersion.V500 ? "7" : null, told); // v3.1.1 has no properties to say it with
            for (var i = 7; i < 10; i++)
            {
                var publish = await raw.ExpectAsync<MqttPublishPacket>();
                Assert.StartsWith(i.ToString(System.Globalization.CultureInfo.InvariantCulture), Raw.Text(publish));
                await raw.SendAsync(new MqttPubAckPacket { PacketIdentifier = publish.PacketIdentifier });
            }

            await raw.SendAsync(new MqttPingReqPacket());
            await raw.ExpectAsync<MqttPingRespPacket>(); // and nothing older came back
        }
    }

    [Fact]
    public async Task OlderThanTheTtl_IsDroppedAndCounted_NewerIsDelivered()
    {
        // Broker:OfflineQueue:Ttl counts from the publish; the clock is the broker's (a fake one here).
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:OfflineQueue:Ttl"] = "01:00:00", fakeClock: true);
        await SubscribeThenLeaveAsync(broker);
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"))
        {
            await Expect.PublishAcceptedAsync(alice, Inbox, "old 1");
            await Expect.PublishAcceptedAsync(alice, Inbox, "old 2");
            broker.Clock!.Advance(TimeSpan.FromMinutes(61));
            await Expect.PublishAcceptedAsync(alice, Inbox, "fresh");
        }

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 86400);
        await back.ExpectOnlyAsync(Inbox, "fresh");
        Assert.Equal(0, broker.Engine.FindSession(Bob)!.QueuedCount);
        await using var again = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 86400);
        Assert.Equal("2", Expect.UserProperty(again.ConnectResult.UserProperties, "ims-dropped"));
    }

    [Fact]
    public async Task CleanSession_QueueIsBoundedInBytes_OldestDropped()
    {
        // A clean session has only its in-memory queue: Broker:MaxQueuedBytes bounds it as MaxQueuedMessages does.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:MaxQueuedBytes"] = "1024");
        var v5 = MqttProtocolVersion.V500;
        await using var slow = await Raw.ConnectAsync(broker.MqttPort, "slow", v5, receiveMaximum: 1); // one in flight at a time
        await slow.SubscribeAsync("q/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        var dropped = broker.Counters.Dropped;
        for (var i = 0; i < 10; i++)
        {
            await pub.PublishAsync("q/t", i + new string('.', 299));
        }

        // The first went out at once; of the nine queued behind it, 3 × 300 bytes fit in 1,024.
        Assert.Equal(dropped + 6, broker.Counters.Dropped);
        foreach (var expected in new[] { 0, 7, 8, 9 })
        {
            var publish = await slow.ExpectAsync<MqttPublishPacket>();
            Assert.StartsWith(expected.ToString(System.Globalization.CultureInfo.InvariantCulture), Raw.Text(publish));
            await slow.SendAsync(new MqttPubAckPacket { PacketIdentifier = publish.PacketIdentifier });
        }
    }

    static async Task SubscribeThenLeaveAsync(TestBroker broker, MqttProtocolVersion version = MqttProtocolVersion.V500)
    {
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", version, cleanStart: false, sessionExpiry: 86400))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await broker.WaitOfflineAsync(Bob);
    }

    static MqttConnectPacket BobConnect()
    {
        var connect = Raw.Connect(Bob, cleanSession: false, sessionExpiry: 86400);
        connect.Username = "bob";
        connect.Password = Encoding.UTF8.GetBytes("bob-pass");
        return connect;
    }
}
