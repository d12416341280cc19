using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>QoS 0/1/2 flows in both directions, resumption after reconnect, flow control [MQTT-4.3, 4.4, 4.9].</summary>
public class QosTests : BrokerTestBase
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Publish_EveryQosPair_DeliveredWithMinimumQos(MqttProtocolVersion version)
    {
        // [MQTT-3.8.4-8] / [MQTT-3.3.5-1 v3.1.1 §3.8.4]: delivered QoS = min(published QoS, granted QoS).
        await using var broker = await StartPlainAsync();
        var subscribers = new List<TestClient>();
        try
        {
            for (var subQos = 0; subQos <= 2; subQos++)
            {
                var sub = await TestClient.ConnectAsync(broker.MqttPort, $"sub{subQos}", version: version);
                subscribers.Add(sub);
                await sub.SubscribeOkAsync("q/#", (MqttQualityOfServiceLevel)subQos);
            }

            await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
            for (var pubQos = 0; pubQos <= 2; pubQos++)
            {
                await publisher.PublishAsync($"q/{pubQos}", $"m{pubQos}", (MqttQualityOfServiceLevel)pubQos);
            }

            for (var subQos = 0; subQos <= 2; subQos++)
            {
                for (var pubQos = 0; pubQos <= 2; pubQos++)
                {
                    var received = await subscribers[subQos].NextAsync();
                    Assert.Equal($"q/{pubQos}", received.ApplicationMessage.Topic);
                    Assert.Equal(Math.Min(pubQos, subQos), (int)received.ApplicationMessage.QualityOfServiceLevel);
                }
            }
        }
        finally
        {
            foreach (var s in subscribers)
            {
                await s.DisposeAsync();
            }
        }
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task InboundQos2_DuplicateBeforePubRel_RoutedOnceAndAcknowledgedTwice(MqttProtocolVersion version)
    {
        // [MQTT-4.3.3-9] (v3.1.1 [MQTT-4.3.3-2]): until PUBREL the receiver must not deliver a re-sent PUBLISH again,
        // but answers it with PUBREC again; PUBREL is answered with PUBCOMP [MQTT-4.3.3-11].
        await using var broker = await StartPlainAsync();
        await using var subscriber = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await subscriber.SubscribeOkAsync("dup/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "pub", version);

        await raw.SendAsync(Raw.Publish("dup/x", "once", MqttQualityOfServiceLevel.ExactlyOnce, 7));
        Assert.Equal(7, (await raw.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);
        await raw.SendAsync(Raw.Publish("dup/x", "once", MqttQualityOfServiceLevel.ExactlyOnce, 7, dup: true));
        Assert.Equal(7, (await raw.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);
        await raw.SendAsync(new MqttPubRelPacket { PacketIdentifier = 7 });
        var comp = await raw.ExpectAsync<MqttPubCompPacket>();
        Assert.Equal(7, comp.PacketIdentifier);
        Assert.Equal(MqttPubCompReasonCode.Success, comp.ReasonCode);
        await raw.SendAsync(Raw.Publish("dup/marker", "end"));

        await subscriber.ExpectOnlyAsync("dup/x", "once");
        await subscriber.ExpectOnlyAsync("dup/marker", "end");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task InboundQos2_SamePacketIdAfterPubComp_RoutedAgain(MqttProtocolVersion version)
    {
        // [MQTT-4.3.3-9]: after PUBREL the packet id is free; a PUBLISH reusing it is a new message.
        await using var broker = await StartPlainAsync();
        await using var subscriber = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await subscriber.SubscribeOkAsync("reuse/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "pub", version);

        foreach (var payload in new[] { "first", "second" })
        {
            await raw.SendAsync(Raw.Publish("reuse/x", payload, MqttQualityOfServiceLevel.ExactlyOnce, 9));
            await raw.ExpectAsync<MqttPubRecPacket>();
            await raw.SendAsync(new MqttPubRelPacket { PacketIdentifier = 9 });
            await raw.ExpectAsync<MqttPubCompPacket>();
        }

        await subscriber.ExpectOnlyAsync("reuse/x", "first");
        await subscriber.ExpectOnlyAsync("reuse/x", "second");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task OutboundQos2_ReconnectAfterPubRec_ResumesWithPubRelNotPublish(MqttProtocolVersion version)
    {
        // [MQTT-4.4.0-1]: on reconnect with a session, resend unacknowledged PUBLISH and PUBREL; after PUBREC
        // the message must not be sent again (exactly once).
        await using var broker = await StartPlainAsync();
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        ushort id;
        await using (var raw = await Raw.ConnectAsync(broker.MqttPort, "sub2", version, cleanSession: false, sessionExpiry: 300))
        {
            await raw.SubscribeAsync("o2/#", MqttQualityOfServiceLevel.ExactlyOnce);
            await publisher.PublishAsync("o2/x", "exactly once", MqttQualityOfServiceLevel.ExactlyOnce);
            var publish = await raw.ExpectAsync<MqttPublishPacket>();
            Assert.Equal(MqttQualityOfServiceLevel.ExactlyOnce, publish.QualityOfServiceLevel);
            id = publish.PacketIdentifier;
            await raw.SendAsync(new MqttPubRecPacket { PacketIdentifier = id });
            Assert.Equal(id, (await raw.ExpectAsync<MqttPubRelPacket>()).PacketIdentifier);
        }

        // Dropped without PUBCOMP: the session owes a PUBREL, not the PUBLISH.
        await using var again = await Raw.ConnectAsync(broker.MqttPort, "sub2", version, cleanSession: false, sessionExpiry: 300, sessionPresent: true);
        Assert.Equal(id, (await again.ExpectAsync<MqttPubRelPacket>()).PacketIdentifier);
        await again.SendAsync(new MqttPubCompPacket { PacketIdentifier = id });
        await publisher.PublishAsync("o2/marker", "next", MqttQualityOfServiceLevel.AtMostOnce);
        var next = await again.ExpectAsync<MqttPublishPacket>();
        Assert.Equal(("o2/marker", "next"), (next.Topic, Raw.Text(next)));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task OutboundQos1_NotAcknowledgedBeforeReconnect_ResentWithDup(MqttProtocolVersion version)
    {
        // [MQTT-4.4.0-1]: unacknowledged PUBLISH packets are resent on reconnect, with DUP = 1 [MQTT-3.3.1-1]
        // and the same packet identifier.
        await using var broker = await StartPlainAsync();
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        MqttPublishPacket first;
        await using (var raw = await Raw.ConnectAsync(broker.MqttPort, "sub1", version, cleanSession: false, sessionExpiry: 300))
        {
            await raw.SubscribeAsync("o1/#", MqttQualityOfServiceLevel.AtLeastOnce);
            await publisher.PublishAsync("o1/x", "unacked");
            first = await raw.ExpectAsync<MqttPublishPacket>();
            Assert.False(first.Dup);
        }

        await using var again = await Raw.ConnectAsync(broker.MqttPort, "sub1", version, cleanSession: false, sessionExpiry: 300, sessionPresent: true);
        var resent = await again.ExpectAsync<MqttPublishPacket>();
        Assert.True(resent.Dup);
        Assert.Equal(first.PacketIdentifier, resent.PacketIdentifier);
        Assert.Equal(("o1/x", "unacked"), (resent.Topic, Raw.Text(resent)));
        Assert.Equal(MqttQualityOfServiceLevel.AtLeastOnce, resent.QualityOfServiceLevel);

        // Acknowledged now: it is not sent a third time.
        await again.SendAsync(new MqttPubAckPacket { PacketIdentifier = resent.PacketIdentifier });
        await publisher.PublishAsync("o1/marker", "next", MqttQualityOfServiceLevel.AtMostOnce);
        var next = await again.ExpectAsync<MqttPublishPacket>();
        Assert.Equal("o1/marker", next.Topic);
    }

    [Fact]
    public async Task ReceiveMaximum_ClientWindowFull_HoldsFurtherQos1UntilAck()
    {
        // [MQTT-4.9.0-2]: the server sends no more QoS 1/2 PUBLISH than the client's Receive Maximum unacknowledged.
        await using var broker = await StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "narrow", MqttProtocolVersion.V500, receiveMaximum: 2);
        await raw.SubscribeAsync("rm/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        for (var i = 1; i <= 3; i++)
        {
            // Awaiting the PUBACK means the broker has queued it for the subscriber.
            await publisher.PublishAsync($"rm/{i}", $"m{i}");
        }

        var m1 = await raw.ExpectAsync<MqttPublishPacket>();
        var m2 = await raw.ExpectAsync<MqttPublishPacket>();
        Assert.Equal(("rm/1", "rm/2"), (m1.Topic, m2.Topic));

        // A PINGRESP is written in the same pass as anything the session may send, so two round trips
        // that see only PINGRESP prove the third PUBLISH is held back.
        await raw.SendAsync(MqttPingReqPacket.Instance);
        await raw.ExpectAsync<MqttPingRespPacket>();
        await raw.SendAsync(MqttPingReqPacket.Instance);
        await raw.ExpectAsync<MqttPingRespPacket>();

        await raw.SendAsync(new MqttPubAckPacket { PacketIdentifier = m1.PacketIdentifier });
        var m3 = await raw.ExpectAsync<MqttPublishPacket>();
        Assert.Equal("rm/3", m3.Topic);
    }

    [Fact]
    public virtual async Task InboundReceiveMaximum_TooManyUnreleasedQos2_DisconnectedWith0x93()
    {
        // [MQTT-3.3.4-9]: a client sending more QoS 2 PUBLISH than our Receive Maximum gets DISCONNECT 0x93.
        await using var broker = await StartPlainAsync(s => s["Broker:Mqtt:ReceiveMaximum"] = "2");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "greedy", MqttProtocolVersion.V500);
        for (ushort id = 1; id <= 3; id++)
        {
            await raw.SendAsync(Raw.Publish("rx/x", "m", MqttQualityOfServiceLevel.ExactlyOnce, id));
        }

        var packets = await raw.ReadUntilClosedAsync();
        Assert.Equal(2, packets.OfType<MqttPubRecPacket>().Count());
        var disconnect = Assert.IsType<MqttDisconnectPacket>(packets[^1]);
        Assert.Equal(MqttDisconnectReasonCode.ReceiveMaximumExceeded, disconnect.ReasonCode);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task InboundQos2_ResentAfterReconnectBeforePubRel_NotRoutedAgain(MqttProtocolVersion version)
    {
        // [MQTT-4.4.0-1] with [MQTT-4.3.3-9]: the inbound QoS 2 state is part of the session, so a PUBLISH re-sent
        // on a new connection (DUP 1, same id) before PUBREL is acknowledged but not delivered a second time.
        await using var broker = await StartPlainAsync();
        await using var subscriber = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await subscriber.SubscribeOkAsync("rq2/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using (var raw = await Raw.ConnectAsync(broker.MqttPort, "pub", version, cleanSession: false, sessionExpiry: 300))
        {
            await raw.SendAsync(Raw.Publish("rq2/x", "once", MqttQualityOfServiceLevel.ExactlyOnce, 5));
            await raw.ExpectAsync<MqttPubRecPacket>();
        }

        await using var again = await Raw.ConnectAsync(broker.MqttPort, "pub", version, cleanSession: false, sessionExpiry: 300, sessionPresent: true);
        await again.SendAsync(Raw.Publish("rq2/x", "once", MqttQualityOfServiceLevel.ExactlyOnce, 5, dup: true));
        Assert.Equal(5, (await again.ExpectAsync<MqttPubRecPacket>()).PacketIdentifier);
        await again.SendAsync(new MqttPubRelPacket { PacketIdentifier = 5 });
        Assert.Equal(MqttPubCompReasonCode.Success, (await again.ExpectAsync<MqttPubCompPacket>()).ReasonCode);
        await again.SendAsync(Raw.Publish("rq2/marker", "end"));

        await subscriber.ExpectOnlyAsync("rq2/x", "once");
        await subscriber.ExpectOnlyAsync("rq2/marker", "end");
    }
}
