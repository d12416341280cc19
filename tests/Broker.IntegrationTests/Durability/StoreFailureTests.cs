using Broker.Engine.Routing;
using Broker.Engine.Store;
using Broker.IntegrationTests.Engine;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>
/// Invariant 1 of the engine design and issue #5: a publish that cannot be recorded (disk full, I/O
/// error) is refused, never acknowledged and lost: v5 hears 0x97 quota exceeded, v3.1.1 loses the
/// connection without an ack, so it sends again.
/// </summary>
public sealed class StoreFailureTests
{
    [Fact]
    public async Task V5Publish_WhenTheStoreCannotWrite_IsRefusedWithQuotaExceeded()
    {
        var store = new FailingStore();
        await using var broker = await StartAsync(store);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        store.Failing = true;
        var refused = await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "not on disk");
        store.Failing = false;

        Assert.Equal(MqttClientPublishReasonCode.QuotaExceeded, refused.ReasonCode);
        Assert.True(alice.Client.IsConnected); // the publisher stays; it may retry
        Assert.Equal(MqttClientPublishReasonCode.Success, (await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "on disk")).ReasonCode);
    }

    [Fact]
    public async Task V311Publish_WhenTheStoreCannotWrite_IsNotAcknowledged()
    {
        var store = new FailingStore();
        await using var broker = await StartAsync(store);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", MqttProtocolVersion.V311, cleanStart: false))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", MqttProtocolVersion.V311);
        store.Failing = true;

        await Assert.ThrowsAnyAsync<Exception>(() => alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "not on disk"));
        await alice.Disconnected; // closed without PUBACK: an MQTT 3.1.1 client re-sends after reconnecting
    }

    [Fact]
    public async Task V5Qos2Publish_WhenTheStoreCannotWrite_IsRefusedAndReachesNobody()
    {
        // Engine invariant 2: a QoS 2 message reaches no queue before its commit. Refused with 0x97, it must not
        // have reached an online subscriber either, or the publisher's retry would arrive twice.
        var store = new FailingStore();
        await using var broker = await StartAsync(store);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var alice = await Raw.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", MqttProtocolVersion.V500, configure: c =>
        {
            c.Username = "alice";
            c.Password = System.Text.Encoding.UTF8.GetBytes("alice-pass");
        });

        store.Failing = true;
        await alice.SendAsync(Raw.Publish("IMS/bob/Inbox/Msg/alice", "not on disk", MqttQualityOfServiceLevel.ExactlyOnce, packetId: 1));
        var refused = await alice.ExpectAsync<MQTTnet.Packets.MqttPubRecPacket>();
        Assert.Equal(MqttPubRecReasonCode.QuotaExceeded, refused.ReasonCode);
        store.Failing = false;

        await alice.SendAsync(Raw.Publish("IMS/bob/Inbox/Msg/alice", "on disk", MqttQualityOfServiceLevel.ExactlyOnce, packetId: 2));
        Assert.Equal(MqttPubRecReasonCode.Success, (await alice.ExpectAsync<MQTTnet.Packets.MqttPubRecPacket>()).ReasonCode);
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "on disk"); // the refused one never came
    }

    static Task<TestBroker> StartAsync(FailingStore store) =>
        TestBroker.StartAsync(s => TestBroker.AddDemoUsers(s), configureServices: services => services.AddSingleton<IBrokerStore>(store));

    /// <summary>The in-memory store, with writes that fail on demand, as a full disk would make them.</summary>
    sealed class FailingStore : DelegatingStore
    {
        public volatile bool Failing;

        public override ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null) =>
            Failing ? ValueTask.FromException(new IOException("No space left on device")) : Inner.AppendAsync(message, deliveries, inbound);
    }
}
