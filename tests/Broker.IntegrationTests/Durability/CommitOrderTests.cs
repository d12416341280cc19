using System.Threading.Tasks.Sources;
using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>
/// QoS 2 is exactly once at every crash point only if each durable write happens before the packet
/// that reveals it (engine invariant 2). A crash is a moment when a commit has not finished, so these
/// tests hold the store's commit open (<see cref="GatedStore"/>) and check that nothing that depends on
/// it has left the broker: a PINGREQ's PINGRESP (which waits for no commit) comes first, and the held
/// packet only after the commit. Each test fails if its packet is sent before the commit.
/// </summary>
public sealed class CommitOrderTests
{
    const string Payload = "exactly once";

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task InboundQos2_ReachesNoSubscriberBeforeItsPacketIdIsDurable(MqttProtocolVersion version)
    {
        // v3.1.1 [MQTT-4.3.3-2] method B: store the packet id, then initiate onward delivery. Were the message
        // delivered first, a crash before the commit would route the publisher's DUP re-send a second time.
        var store = new GatedStore();
        await using var broker = await StartAsync(store);
        await using var bob = await PersistentSubscriberAsync(broker, version);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "alice", version, cleanSession: false, sessionExpiry: 3600);

        store.Hold = true;
        await alice.SendAsync(Raw.Publish("chat/1", Payload, MqttQualityOfServiceLevel.ExactlyOnce, packetId: 7));
        await store.CommitHeld;
        await PingAsync(alice); // the publish has been handled; its PUBREC waits for the commit
        await PingAsync(bob); // and nothing reached bob ahead of it

        store.Release();
        Assert.Equal(7, (await alice.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);
        Assert.Equal(Payload, Raw.Text(await bob.ExpectAsync<MqttPublishPacket>()));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PubComp_WaitsUntilThePacketIdsReleaseIsDurable(MqttProtocolVersion version)
    {
        // [MQTT-4.3.3-11 v3.1.1 / MQTT-4.3.3-13 v5]: PUBCOMP ends the exchange. Sent before the release is on disk,
        // a crash brings the id back as pending and the client's next PUBLISH with that id is never routed.
        var store = new GatedStore();
        await using var broker = await StartAsync(store);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "alice", version, cleanSession: false, sessionExpiry: 3600);
        await alice.SendAsync(Raw.Publish("chat/1", Payload, MqttQualityOfServiceLevel.ExactlyOnce, packetId: 9));
        await alice.ExpectAsync<MqttPubRecPacket>();

        store.Hold = true;
        await alice.SendAsync(new MqttPubRelPacket { PacketIdentifier = 9 });
        await store.CommitHeld;
        await PingAsync(alice);

        store.Release();
        Assert.Equal(9, (await alice.ExpectAsync<MqttPubCompPacket>()).PacketIdentifier);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PubRel_WaitsUntilReleasedPendingIsDurable(MqttProtocolVersion version)
    {
        // [MQTT-4.4.0-1]: a resumed session re-sends PUBREL, not PUBLISH, for a message the client has taken.
        // That needs "released pending" on disk before the PUBREL leaves.
        var store = new GatedStore();
        await using var broker = await StartAsync(store);
        await using var bob = await PersistentSubscriberAsync(broker, version);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "alice", version);
        await alice.SendAsync(Raw.Publish("chat/1", Payload, MqttQualityOfServiceLevel.ExactlyOnce, packetId: 1));
        var delivered = await bob.ExpectAsync<MqttPublishPacket>();

        store.Hold = true;
        await bob.SendAsync(new MqttPubRecPacket { PacketIdentifier = delivered.PacketIdentifier });
        await store.CommitHeld;
        await PingAsync(bob);

        store.Release();
        Assert.Equal(delivered.PacketIdentifier, (await bob.ExpectAsync<MqttPubRelPacket>()).PacketIdentifier);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task OutboundQos2_PublishWaitsUntilItsPacketIdIsDurable(MqttProtocolVersion version)
    {
        // [MQTT-4.3.3-1 / v5 MQTT-4.3.3-3]: the id is held by the client from PUBLISH to PUBREL. Sent before the id
        // is on disk, a crash would resend the message under a new id (a duplicate) and reuse the old one
        // while the client still holds it (a loss).
        var store = new GatedStore { FlushesOnly = true };
        await using var broker = await StartAsync(store);
        await using var bob = await PersistentSubscriberAsync(broker, version);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "alice", version);

        store.Hold = true;
        await alice.SendAsync(Raw.Publish("chat/1", Payload, MqttQualityOfServiceLevel.ExactlyOnce, packetId: 1));
        await alice.ExpectAsync<MqttPubRecPacket>(); // bob's row is stored (appends are not held here)
        await store.CommitHeld;
        await PingAsync(bob);

        store.Release();
        var delivered = await bob.ExpectAsync<MqttPublishPacket>();
        Assert.Equal(Payload, Raw.Text(delivered));
        Assert.Equal(MqttQualityOfServiceLevel.ExactlyOnce, delivered.QualityOfServiceLevel);
    }

    [Theory]
    [InlineData("IMS/bob/Inbox/Msg/alice")] // to a persistent subscriber: with the message's rows
    [InlineData("IMS/p2p/GID_IMS@@@bob-never")] // P2P to a client id with no session: with the mailbox entry
    public async Task InboundQos2_PacketIdIsStoredInTheSameWriteAsTheMessage(string topic)
    {
        // Written apart, a crash between the two writes loses the message (the id alone: the DUP re-send is
        // answered and never routed) or routes it twice (the message alone). Seen in the crash loop.
        var store = new RecordingStore();
        await using var broker = await TestBroker.StartAsync(
            settings => TestBroker.AddDemoUsers(settings),
            configureServices: services => services.AddSingleton<Broker.Engine.Store.IBrokerStore>(store));
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", cleanStart: false, sessionExpiry: 3600);

        await Expect.PublishAcceptedAsync(alice, topic, Payload, MqttQualityOfServiceLevel.ExactlyOnce);

        Assert.Empty(store.MarksAlone);
        var carried = Assert.Single(store.MarksWithMessage);
        Assert.Equal("GID_IMS@@@alice-phone", carried.ClientId);
    }

    [Fact]
    public async Task AHeldQos2Message_IsNotReadBackTwice_WhenItsSubscribersQueueIsPagedInMeanwhile()
    {
        // The router writes a row, then (QoS 2: after the commit) hands the message to the session. A page read
        // of the session's queue in between would read that row, and the session would then get it again: a
        // QoS 2 duplicate. Here the window is one message, bob (persistent) lets one message in flight at a
        // time, and his queue is paged in while alice's QoS 2 message waits for its commit.
        var store = new GatedStore();
        await using var broker = await TestBroker.StartAsync(
            settings =>
            {
                settings["Broker:Conventions:Enabled"] = "false";
                settings["Broker:AllowAnonymous"] = "true";
                settings["Broker:MaxQueuedMessages"] = "1";
            },
            configureServices: services => services.AddSingleton<Broker.Engine.Store.IBrokerStore>(store));
        var v5 = MqttProtocolVersion.V500;
        await using var bob = await Raw.ConnectAsync(broker.MqttPort, "bob", v5, cleanSession: false, sessionExpiry: 3600, receiveMaximum: 1);
        await bob.SubscribeAsync("chat/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "alice", v5);
        for (ushort i = 1; i <= 3; i++)
        {
            await alice.SendAsync(Raw.Publish("chat/1", $"m{i}", MqttQualityOfServiceLevel.AtLeastOnce, packetId: i));
            await alice.ExpectAsync<MqttPubAckPacket>();
        }

        var m1 = await bob.ExpectAsync<MqttPublishPacket>(); // m2 waits in the window, m3 in the store
        store.Hold = true;
        await alice.SendAsync(Raw.Publish("chat/1", "x", MqttQualityOfServiceLevel.ExactlyOnce, packetId: 4));
        await store.CommitHeld; // x's row is written, x itself waits for the commit
        await bob.SendAsync(new MqttPubAckPacket { PacketIdentifier = m1.PacketIdentifier });
        var m2 = await bob.ExpectAsync<MqttPublishPacket>(); // the window is empty now: a page read would start here
        await bob.SendAsync(new MqttPubAckPacket { PacketIdentifier = m2.PacketIdentifier });
        await PingAsync(bob);

        store.Release();
        await alice.ExpectAsync<MqttPubRecPacket>();
        var received = new List<string> { Raw.Text(m1), Raw.Text(m2) };
        while (received.Count < 4)
        {
            var publish = await bob.ExpectAsync<MqttPublishPacket>();
            received.Add(Raw.Text(publish));
            if (publish.QualityOfServiceLevel == MqttQualityOfServiceLevel.ExactlyOnce)
            {
                await bob.SendAsync(new MqttPubRecPacket { PacketIdentifier = publish.PacketIdentifier });
                await bob.ExpectAsync<MqttPubRelPacket>();
                await bob.SendAsync(new MqttPubCompPacket { PacketIdentifier = publish.PacketIdentifier });
            }
            else
            {
                await bob.SendAsync(new MqttPubAckPacket { PacketIdentifier = publish.PacketIdentifier });
            }
        }

        await alice.SendAsync(Raw.Publish("chat/1", "marker", MqttQualityOfServiceLevel.AtLeastOnce, packetId: 5));
        Assert.Equal("marker", Raw.Text(await bob.ExpectAsync<MqttPublishPacket>())); // not x a second time
        Assert.Equal(["m1", "m2", "m3", "x"], received);
    }

    [Fact]
    public async Task InboundQos2_CommitFinishingWhileItIsRouted_StillDelivered()
    {
        // The commit of a held QoS 2 route can finish on the store's thread (in a cluster, Redis's) between the
        // router's looks at it. Taken for a failure there, the message was acked (PUBREC) and delivered to nobody.
        var store = new LateCommitStore();
        await using var broker = await TestBroker.StartAsync(
            settings =>
            {
                settings["Broker:Conventions:Enabled"] = "false";
                settings["Broker:AllowAnonymous"] = "true";
            },
            configureServices: services => services.AddSingleton<Broker.Engine.Store.IBrokerStore>(store));
        await using var bob = await Raw.ConnectAsync(broker.MqttPort, "bob", MqttProtocolVersion.V500);
        await bob.SubscribeAsync("chat/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "alice", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 3600);

        store.Armed = true; // alice's packet id alone is stored (bob keeps nothing): the next flush is that commit
        await alice.SendAsync(Raw.Publish("chat/1", Payload, MqttQualityOfServiceLevel.ExactlyOnce, packetId: 3));
        Assert.Equal(3, (await alice.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);
        Assert.Equal(Payload, Raw.Text(await bob.ExpectAsync<MqttPublishPacket>()));
    }

    /// <summary>Once armed, its next flush is still pending at the first look and done at every later one.</summary>
    sealed class LateCommitStore : DelegatingStore, IValueTaskSource
    {
        int _looks;

        public bool Armed { get; set; }

        public override ValueTask FlushAsync()
        {
            if (!Armed)
            {
                return base.FlushAsync();
            }

            Armed = false;
            return new ValueTask(this, 0);
        }

        public ValueTaskSourceStatus GetStatus(short token) =>
            Interlocked.Increment(ref _looks) == 1 ? ValueTaskSourceStatus.Pending : ValueTaskSourceStatus.Succeeded;

        public void GetResult(short token)
        {
        }

        public void OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
            ThreadPool.QueueUserWorkItem(continuation, state, preferLocal: false);
    }

    /// <summary>Records where a QoS 2 packet id mark reaches the store: alone, or with its message.</summary>
    sealed class RecordingStore : DelegatingStore
    {
        public List<Broker.Engine.Store.InboundPacket> MarksAlone { get; } = [];

        public List<Broker.Engine.Store.InboundPacket> MarksWithMessage { get; } = [];

        public override ValueTask AppendAsync(Broker.Engine.Routing.BrokerMessage message, IReadOnlyList<Broker.Engine.Store.StoredDelivery> deliveries, Broker.Engine.Store.InboundPacket? inbound = null)
        {
            Note(inbound);
            return base.AppendAsync(message, deliveries, inbound);
        }

        public override ValueTask AddToMailboxAsync(string clientId, Broker.Engine.Routing.BrokerMessage message, long expiresAtUnixMs, Broker.Engine.Store.InboundPacket? inbound = null)
        {
            Note(inbound);
            return base.AddToMailboxAsync(clientId, message, expiresAtUnixMs, inbound);
        }

        public override void SetInboundQos2(string clientId, ushort packetId, bool pending)
        {
            if (pending)
            {
                lock (MarksAlone)
                {
                    MarksAlone.Add(new(clientId, packetId));
                }
            }

            base.SetInboundQos2(clientId, packetId, pending);
        }

        void Note(Broker.Engine.Store.InboundPacket? inbound)
        {
            if (inbound is { } packet)
            {
                lock (MarksWithMessage)
                {
                    MarksWithMessage.Add(packet);
                }
            }
        }
    }

    /// <summary>bob, with a persistent session, subscribed to chat/# at QoS 2.</summary>
    static async Task<RawClient> PersistentSubscriberAsync(TestBroker broker, MqttProtocolVersion version)
    {
        var bob = await Raw.ConnectAsync(broker.MqttPort, "bob", version, cleanSession: false, sessionExpiry: 3600);
        await bob.SubscribeAsync("chat/#", MqttQualityOfServiceLevel.ExactlyOnce);
        return bob;
    }

    /// <summary>PINGREQ → PINGRESP, which waits for no commit: the next packet must be that PINGRESP.</summary>
    static async Task PingAsync(RawClient client)
    {
        await client.SendAsync(new MqttPingReqPacket());
        await client.ExpectAsync<MqttPingRespPacket>();
    }

    static Task<TestBroker> StartAsync(GatedStore store) => TestBroker.StartAsync(
        settings =>
        {
            settings["Broker:Conventions:Enabled"] = "false";
            settings["Broker:AllowAnonymous"] = "true";
        },
        configureServices: services => services.AddSingleton<Broker.Engine.Store.IBrokerStore>(store));
}
