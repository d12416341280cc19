using System.Buffers;
using System.Text;
using Broker.Engine.Connections;
using Broker.Engine.Routing;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Tests;

/// <summary>
/// The writer encodes PUBLISH packets itself, from bytes kept per message (issue #15). Every packet it writes
/// must be what MQTTnet's own decoder (the client side of a stock client) reads back field by field, for
/// MQTT 3.1.1 and 5, whatever the recipient's QoS, flags, packet id, subscription ids, alias and expiry.
/// </summary>
public sealed class PublishEncoderTests
{
    static readonly long Now = 1_800_000_000_000;

    static BrokerMessage Message(string topic = "IMS/bob/Inbox/alice", int payload = 64, bool properties = false, long expiresAt = 0) => new()
    {
        Topic = topic,
        Payload = Enumerable.Range(0, payload).Select(i => (byte)i).ToArray(),
        Qos = MqttQualityOfServiceLevel.ExactlyOnce,
        ContentType = properties ? "text/plain; charset=utf-8" : null,
        ResponseTopic = properties ? "IMS/alice/Inbox/réponse" : null,
        CorrelationData = properties ? [1, 2, 3, 0, 255] : null,
        PayloadFormat = properties ? MqttPayloadFormatIndicator.CharacterData : MqttPayloadFormatIndicator.Unspecified,
        UserProperties = properties ? [new("ims-sender", Encoding.UTF8.GetBytes("alice").AsMemory()), new("emoji", Encoding.UTF8.GetBytes("✓ ok").AsMemory())] : null,
        ExpiresAtUnixMs = expiresAt,
        Id = 7,
    };

    [Theory]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.AtMostOnce, false, false)]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.AtLeastOnce, true, false)]
    [InlineData(MqttProtocolVersion.V311, MqttQualityOfServiceLevel.ExactlyOnce, false, true)]
    [InlineData(MqttProtocolVersion.V310, MqttQualityOfServiceLevel.AtLeastOnce, true, true)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.AtMostOnce, false, false)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.AtLeastOnce, true, true)]
    [InlineData(MqttProtocolVersion.V500, MqttQualityOfServiceLevel.ExactlyOnce, false, true)]
    public void Flags_PacketId_Topic_Payload_DecodeAsSent(MqttProtocolVersion version, MqttQualityOfServiceLevel qos, bool dup, bool retain)
    {
        // [MQTT-3.3.1-1] DUP, [MQTT-3.3.1-3] RETAIN, QoS bits; the packet identifier only for QoS > 0 (3.3.2.2).
        var message = Message();
        var packetId = qos == MqttQualityOfServiceLevel.AtMostOnce ? (ushort)0 : (ushort)4242;
        var packet = RoundTrip(version, new Delivery(message, qos, retain, null), packetId, dup && qos > 0);

        Assert.Equal(message.Topic, packet.Topic);
        Assert.Equal(qos, packet.QualityOfServiceLevel);
        Assert.Equal(dup && qos > 0, packet.Dup);
        Assert.Equal(retain, packet.Retain);
        Assert.Equal(packetId, packet.PacketIdentifier);
        Assert.Equal(message.Payload.ToArray(), packet.Payload.ToArray());
    }

    [Fact]
    public void V5_SenderProperties_PassThroughUnchanged()
    {
        // [MQTT-3.3.2-15..20]: the broker forwards the sender's properties as they came.
        var message = Message(properties: true);
        var packet = RoundTrip(MqttProtocolVersion.V500, new Delivery(message, MqttQualityOfServiceLevel.AtLeastOnce, false, null), 1);

        Assert.Equal(message.ContentType, packet.ContentType);
        Assert.Equal(message.ResponseTopic, packet.ResponseTopic);
        Assert.Equal(message.CorrelationData, packet.CorrelationData);
        Assert.Equal(MqttPayloadFormatIndicator.CharacterData, packet.PayloadFormatIndicator);
        Assert.Equal(["ims-sender=alice", "emoji=✓ ok"], packet.UserProperties!.Select(p => p.Name + "=" + p.ReadValueAsString()));
        Assert.Equal(0u, packet.MessageExpiryInterval);
        Assert.Equal(0, packet.TopicAlias);
    }

    [Fact]
    public void V311_CarriesNoProperties_EvenWhenTheMessageHasThem()
    {
        var packet = RoundTrip(MqttProtocolVersion.V311, new Delivery(Message(properties: true), MqttQualityOfServiceLevel.AtLeastOnce, false, null), 9);

        Assert.Null(packet.ContentType);
        Assert.Null(packet.UserProperties);
        Assert.Equal("IMS/bob/Inbox/alice", packet.Topic);
    }

    [Fact]
    public void V5_PerRecipientProperties_SubscriptionIdsExpiryAlias()
    {
        // [MQTT-3.3.4-3] one Subscription Identifier per matching subscription; [MQTT-3.3.2-6] the expiry counts down.
        var message = Message(properties: true, expiresAt: Now + 90_500);
        List<uint> ids = [1, 200, 268_435_455];
        var packet = RoundTrip(MqttProtocolVersion.V500, new Delivery(message, MqttQualityOfServiceLevel.AtLeastOnce, false, ids), 3, alias: 5);

        Assert.Equal(ids, packet.SubscriptionIdentifiers);
        Assert.Equal(91u, packet.MessageExpiryInterval);
        Assert.Equal(5, packet.TopicAlias);
        Assert.Equal(message.Topic, packet.Topic);
        Assert.Equal(message.ContentType, packet.ContentType);
    }

    [Fact]
    public void V5_KnownAlias_EmptyTopic()
    {
        // v5 3.3.2.3.4: with an alias the client knows, the topic name is zero length.
        var packet = RoundTrip(MqttProtocolVersion.V500, new Delivery(Message(), MqttQualityOfServiceLevel.AtMostOnce, false, null), 0, alias: 2, sendTopic: false);

        Assert.Equal("", packet.Topic);
        Assert.Equal(2, packet.TopicAlias);
    }

    [Theory]
    [InlineData(0)]
    [InlineData(127)]
    [InlineData(128)]
    [InlineData(20_000)]
    [InlineData(3_000_000)]
    public void RemainingLength_EveryVariableByteIntegerSize(int payload)
    {
        // MQTT 1.5.5 / 2.2.3: one to four bytes of Remaining Length.
        var message = Message(topic: "IMS/grp/主题/" + new string('x', 100), payload: payload);
        var packet = RoundTrip(MqttProtocolVersion.V500, new Delivery(message, MqttQualityOfServiceLevel.AtLeastOnce, false, null), 77);

        Assert.Equal(message.Topic, packet.Topic);
        Assert.Equal(payload, (int)packet.Payload.Length);
    }

    [Fact]
    public void LargerThanTheClientsMaximumPacketSize_NothingWritten()
    {
        // [MQTT-3.1.2-24]: the server does not send a packet beyond the client's Maximum Packet Size.
        var delivery = new Delivery(Message(payload: 1000), MqttQualityOfServiceLevel.AtLeastOnce, false, null);
        var output = new ArrayBufferWriter<byte>();
        var size = Encode(MqttProtocolVersion.V500, delivery, 1).Length;

        Assert.False(PublishEncoder.Write(output, delivery, 1, dup: false, v5: true, Now, alias: 0, sendTopic: true, (uint)size - 1));
        Assert.Equal(0, output.WrittenCount);
        Assert.True(PublishEncoder.Write(output, delivery, 1, dup: false, v5: true, Now, alias: 0, sendTopic: true, (uint)size));
        Assert.Equal(size, output.WrittenCount);
    }

    [Fact]
    public void OneMessage_ManyRecipients_SharesItsEncodedParts()
    {
        var message = Message(properties: true);
        Encode(MqttProtocolVersion.V500, new Delivery(message, MqttQualityOfServiceLevel.AtLeastOnce, false, null), 1);
        var parts = message.Encoded;
        Encode(MqttProtocolVersion.V311, new Delivery(message, MqttQualityOfServiceLevel.AtMostOnce, true, null), 0);

        Assert.NotNull(parts);
        Assert.Same(parts, message.Encoded);
        Assert.Null(message.With(topic: "IMS/other").Encoded); // a changed copy encodes its own
    }

    static byte[] Encode(MqttProtocolVersion version, in Delivery d, ushort packetId, bool dup = false, ushort alias = 0, bool sendTopic = true)
    {
        var output = new ArrayBufferWriter<byte>();
        Assert.True(PublishEncoder.Write(output, d, packetId, dup, version == MqttProtocolVersion.V500, Now, alias, sendTopic, uint.MaxValue));
        return output.WrittenSpan.ToArray();
    }

    static MqttPublishPacket RoundTrip(MqttProtocolVersion version, in Delivery d, ushort packetId, bool dup = false, ushort alias = 0, bool sendTopic = true)
    {
        var wire = Encode(version, d, packetId, dup, alias, sendTopic);

        // Fixed header, then the Remaining Length, which must match what follows exactly.
        var at = 1;
        var remaining = 0;
        for (var shift = 0; ; shift += 7)
        {
            var b = wire[at++];
            remaining |= (b & 0x7F) << shift;
            if ((b & 0x80) == 0)
            {
                break;
            }
        }

        Assert.Equal(wire.Length - at, remaining);
        var received = new ReceivedMqttPacket(wire[0], new ArraySegment<byte>(wire, at, remaining), wire.Length);
        return Assert.IsType<MqttPublishPacket>(new MqttPacketFormatterAdapter(version, new MqttBufferWriter(256, 65536)).Decode(received));
    }
}
