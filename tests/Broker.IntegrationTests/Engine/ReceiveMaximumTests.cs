using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>
/// The broker's own Receive Maximum, announced in CONNACK and enforced on QoS 1 and QoS 2 publishes from v5
/// clients [MQTT-3.3.4-9, MQTT-4.9.0-3]. A QoS 1/2 publish counts until its PUBACK (QoS 2: PUBCOMP, or a PUBREC
/// with an error) has been sent; an ack still waiting for its store commit has not been sent. The commits are
/// held open with <see cref="GatedStore"/> (a persistent subscriber makes every publish wait for one), so the
/// acks of the first publishes cannot leave before the next publish arrives.
/// </summary>
public class ReceiveMaximumTests : BrokerTestBase
{
    [Theory]
    [InlineData(MqttQualityOfServiceLevel.AtLeastOnce)]
    [InlineData(MqttQualityOfServiceLevel.ExactlyOnce)]
    public virtual async Task MorePublishesUnacknowledgedThanReceiveMaximum_Disconnected0x93(MqttQualityOfServiceLevel qos)
    {
        // [MQTT-3.3.4-9]: "The Server MUST NOT ... [receive] more than Receive Maximum QoS 1 and QoS 2 PUBLISH packets
        // where it has not sent a PUBACK or PUBCOMP in response"; one more is answered with DISCONNECT 0x93 (Receive
        // Maximum exceeded). Two publishes wait for their commit, so their acks are not sent: the third is one too many.
        var store = new GatedStore();
        await using var broker = await StartAsync(store, receiveMaximum: 2);
        await using var keeper = await PersistentSubscriberAsync(broker);
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("greedy"), MqttProtocolVersion.V500);
        await using var _ = raw;
        Assert.Equal((ushort)2, ack.ReceiveMaximum);

        store.Hold = true;
        try
        {
            for (ushort id = 1; id <= 3; id++)
            {
                await raw.SendAsync(Raw.Publish("rm/x", "m" + id, qos, id));
            }

            var packets = await raw.ReadUntilClosedAsync();

            // No ack: both were still waiting for the commit when the third arrived.
            var disconnect = Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets));
            Assert.Equal(MqttDisconnectReasonCode.ReceiveMaximumExceeded, disconnect.ReasonCode);
        }
        finally
        {
            store.Release();
        }
    }

    [Fact]
    public virtual async Task Qos1_AsManyUnacknowledgedAsReceiveMaximum_Accepted_AndQuotaComesBackWithThePubAck()
    {
        // [MQTT-4.9.0-3] seen from the receiver: the quota of a QoS 1 publish comes back with its PUBACK. Exactly
        // Receive Maximum unacknowledged publishes are allowed; once their PUBACKs are out, as many again are.
        var store = new GatedStore();
        await using var broker = await StartAsync(store, receiveMaximum: 2);
        await using var keeper = await PersistentSubscriberAsync(broker);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "fair", MqttProtocolVersion.V500);

        store.Hold = true;
        await raw.SendAsync(Raw.Publish("rm/x", "m1", MqttQualityOfServiceLevel.AtLeastOnce, 1));
        await raw.SendAsync(Raw.Publish("rm/x", "m2", MqttQualityOfServiceLevel.AtLeastOnce, 2));
        await store.CommitHeld;
        await raw.SendAsync(MqttPingReqPacket.Instance);
        await raw.ExpectAsync<MqttPingRespPacket>(); // still connected, the PUBACKs still waiting for the commit

        store.Release();
        Assert.Equal(1, (await raw.ExpectAsync<MqttPubAckPacket>()).PacketIdentifier);
        Assert.Equal(2, (await raw.ExpectAsync<MqttPubAckPacket>()).PacketIdentifier);

        store.Hold = true;
        try
        {
            await raw.SendAsync(Raw.Publish("rm/x", "m3", MqttQualityOfServiceLevel.AtLeastOnce, 3));
            await raw.SendAsync(Raw.Publish("rm/x", "m4", MqttQualityOfServiceLevel.AtLeastOnce, 4));
            await store.CommitHeld;
            await raw.SendAsync(MqttPingReqPacket.Instance);
            await raw.ExpectAsync<MqttPingRespPacket>();
        }
        finally
        {
            store.Release();
        }

        Assert.Equal(3, (await raw.ExpectAsync<MqttPubAckPacket>()).PacketIdentifier);
        Assert.Equal(4, (await raw.ExpectAsync<MqttPubAckPacket>()).PacketIdentifier);
    }

    [Fact]
    public async Task Qos2_QuotaComesBackAtPubComp_NotAtPubRec()
    {
        // [MQTT-4.9.0-3]: for QoS 2 the quota comes back with the PUBCOMP (or a PUBREC with an error), not with the
        // PUBREC. Two PUBRECs out, no PUBREL yet: still two counted. After one PUBCOMP, one more publish is allowed,
        // then the next is one too many [MQTT-3.3.4-9].
        await using var broker = await StartPlainAsync(s => s["Broker:Mqtt:ReceiveMaximum"] = "2");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "twice", MqttProtocolVersion.V500);
        for (ushort id = 1; id <= 2; id++)
        {
            await raw.SendAsync(Raw.Publish("rm/x", "m", MqttQualityOfServiceLevel.ExactlyOnce, id));
            Assert.Equal(id, (await raw.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);
        }

        await raw.SendAsync(new MqttPubRelPacket { PacketIdentifier = 1 });
        Assert.Equal(MqttPubCompReasonCode.Success, (await raw.ExpectAsync<MqttPubCompPacket>()).ReasonCode);
        await raw.SendAsync(Raw.Publish("rm/x", "m", MqttQualityOfServiceLevel.ExactlyOnce, 3));
        Assert.Equal(3, (await raw.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);

        await raw.SendAsync(Raw.Publish("rm/x", "m", MqttQualityOfServiceLevel.ExactlyOnce, 4));
        var disconnect = Assert.IsType<MqttDisconnectPacket>(Assert.Single(await raw.ReadUntilClosedAsync()));
        Assert.Equal(MqttDisconnectReasonCode.ReceiveMaximumExceeded, disconnect.ReasonCode);
    }

    [Fact]
    public async Task Qos2_RefusedWithAnErrorPubRec_GivesItsQuotaBack()
    {
        // [MQTT-4.9.0-3]: a PUBREC with a Reason Code of 0x80 or greater ends the exchange and returns the quota.
        // $SYS is read-only, so each publish there is refused (0x87); many more than Receive Maximum are fine.
        await using var broker = await StartPlainAsync(s => s["Broker:Mqtt:ReceiveMaximum"] = "2");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "refused", MqttProtocolVersion.V500);
        for (ushort id = 1; id <= 5; id++)
        {
            await raw.SendAsync(Raw.Publish("$SYS/x", "m", MqttQualityOfServiceLevel.ExactlyOnce, id));
            Assert.Equal(MqttPubRecReasonCode.NotAuthorized, (await raw.ExpectAsync<MqttPubRecPacket>()).ReasonCode);
        }
    }

    [Fact]
    public virtual async Task V311_NotToldAReceiveMaximum_OnlySlowedNeverDisconnected()
    {
        // v3.1.1 has no Receive Maximum, so no 0x93: a publisher with more acks waiting than the setting is only
        // read more slowly (the ack line's backpressure), and every publish is acknowledged once committed.
        var store = new GatedStore();
        await using var broker = await StartAsync(store, receiveMaximum: 2);
        await using var keeper = await PersistentSubscriberAsync(broker);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "old", MqttProtocolVersion.V311);

        store.Hold = true;
        try
        {
            for (ushort id = 1; id <= 4; id++)
            {
                await raw.SendAsync(Raw.Publish("rm/x", "m" + id, MqttQualityOfServiceLevel.AtLeastOnce, id));
            }

            await store.CommitHeld;
        }
        finally
        {
            store.Release();
        }

        for (ushort id = 1; id <= 4; id++)
        {
            Assert.Equal(id, (await raw.ExpectAsync<MqttPubAckPacket>()).PacketIdentifier);
        }
    }

    static Task<TestBroker> StartAsync(GatedStore store, int receiveMaximum) => TestBroker.StartAsync(
        settings =>
        {
            settings["Broker:Conventions:Enabled"] = "false";
            settings["Broker:AllowAnonymous"] = "true";
            settings["Broker:Mqtt:ReceiveMaximum"] = receiveMaximum.ToString(System.Globalization.CultureInfo.InvariantCulture);
        },
        configureServices: services => services.AddSingleton<Broker.Engine.Store.IBrokerStore>(store));

    /// <summary>A persistent QoS 2 subscriber on rm/#: every publish there has a store row, so its ack waits for a commit.</summary>
    static async Task<RawClient> PersistentSubscriberAsync(TestBroker broker)
    {
        var keeper = await Raw.ConnectAsync(broker.MqttPort, "keeper", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 3600);
        await keeper.SubscribeAsync("rm/#", MqttQualityOfServiceLevel.ExactlyOnce);
        return keeper;
    }
}
