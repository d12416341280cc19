using System.Buffers;
using System.Buffers.Binary;
using System.Text;
using Broker.Engine.Routing;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>
/// Writes a PUBLISH for one recipient straight into its output, from bytes its message keeps: a message to
/// 100 members is encoded once, not 100 times (issue #15). What is the same for every recipient is encoded on
/// first use and kept on the <see cref="BrokerMessage"/> (<see cref="EncodedPublish"/>): the topic name and,
/// for MQTT 5, the properties the sender set, which pass through unchanged [MQTT-3.3.2-15..20]. Per recipient
/// and send only these are written: the fixed header's DUP, QoS and RETAIN [MQTT-3.3.1-1..3], the packet
/// identifier, and the MQTT 5 properties that differ per recipient or per send: Message Expiry Interval
/// counting down [MQTT-3.3.2-6], Subscription Identifiers [MQTT-3.3.4-3], Topic Alias [MQTT-3.3.2-7..12].
/// MQTT 3.1 and 3.1.1 PUBLISH packets are the same bytes. Nothing is allocated per recipient.
/// </summary>
internal static class PublishEncoder
{
    const byte MessageExpiryInterval = 0x02;
    const byte SubscriptionIdentifier = 0x0B;
    const byte TopicAlias = 0x23;

    /// <summary>
    /// Writes the PUBLISH, or nothing when it would be larger than <paramref name="maxPacketSize"/> (the client's
    /// Maximum Packet Size [MQTT-3.1.2-24]); returns whether it was written. <paramref name="sendTopic"/> false:
    /// the topic name is empty and the alias stands for it (v5 3.3.2.3.4).
    /// </summary>
    public static bool Write(IBufferWriter<byte> output, in Delivery d, ushort packetId, bool dup, bool v5, long nowUnixMs, ushort alias, bool sendTopic, uint maxPacketSize)
    {
        var message = d.Message;
        var parts = message.Encoded ?? EncodedPublish.Of(message);
        var topicLength = sendTopic ? parts.Topic.Length : 2;
        var idLength = d.Qos == MqttQualityOfServiceLevel.AtMostOnce ? 0 : 2;

        uint expiry = 0;
        var propertiesLength = 0;
        if (v5)
        {
            expiry = message.RemainingExpirySeconds(nowUnixMs);
            propertiesLength = parts.Properties.Length + (expiry > 0 ? 5 : 0) + (alias > 0 ? 3 : 0);
            if (d.SubscriptionIds is { } ids)
            {
                foreach (var id in ids)
                {
                    propertiesLength += 1 + VariableByteIntegerSize(id);
                }
            }
        }

        var remaining = topicLength + idLength + (v5 ? VariableByteIntegerSize((uint)propertiesLength) + propertiesLength : 0) + message.Payload.Length;
        var headerLength = 1 + VariableByteIntegerSize((uint)remaining) + remaining - message.Payload.Length;
        if ((uint)(headerLength + message.Payload.Length) > maxPacketSize)
        {
            return false;
        }

        var span = output.GetSpan(headerLength);
        span[0] = (byte)(0x30 | (dup ? 0x08 : 0) | ((int)d.Qos << 1) | (d.Retain ? 0x01 : 0));
        var at = 1 + WriteVariableByteInteger(span[1..], (uint)remaining);
        if (sendTopic)
        {
            parts.Topic.CopyTo(span[at..]);
        }
        else
        {
            span[at] = 0;
            span[at + 1] = 0;
        }

        at += topicLength;
        if (idLength > 0)
        {
            BinaryPrimitives.WriteUInt16BigEndian(span[at..], packetId);
            at += 2;
        }

        if (v5)
        {
            at += WriteVariableByteInteger(span[at..], (uint)propertiesLength);
            parts.Properties.CopyTo(span[at..]);
            at += parts.Properties.Length;
            if (expiry > 0)
            {
                span[at] = MessageExpiryInterval;
                BinaryPrimitives.WriteUInt32BigEndian(span[(at + 1)..], expiry);
                at += 5;
            }

            if (d.SubscriptionIds is { } ids)
            {
                foreach (var id in ids)
                {
                    span[at] = SubscriptionIdentifier;
                    at += 1 + WriteVariableByteInteger(span[(at + 1)..], id);
                }
            }

            if (alias > 0)
            {
                span[at] = TopicAlias;
                BinaryPrimitives.WriteUInt16BigEndian(span[(at + 1)..], alias);
                at += 3;
            }
        }

        output.Advance(at);
        output.Write(message.Payload.Span);
        return true;
    }

    /// <summary>Bytes of a Variable Byte Integer (MQTT 1.5.5): 7 bits each.</summary>
    public static int VariableByteIntegerSize(uint value) => value < 128 ? 1 : value < 16_384 ? 2 : value < 2_097_152 ? 3 : 4;

    public static int WriteVariableByteInteger(Span<byte> span, uint value)
    {
        var i = 0;
        do
        {
            var digit = (byte)(value & 0x7F);
            value >>= 7;
            span[i++] = value > 0 ? (byte)(digit | 0x80) : digit;
        }
        while (value > 0);

        return i;
    }
}

/// <summary>
/// The parts of a PUBLISH that are the same for every recipient of a message, encoded once (see
/// <see cref="PublishEncoder"/>): the topic name with its length prefix, and the MQTT 5 properties the sender
/// set (Payload Format Indicator, Content Type, Response Topic, Correlation Data, User Properties).
/// </summary>
internal sealed class EncodedPublish
{
    const byte PayloadFormatIndicator = 0x01;
    const byte ContentType = 0x03;
    const byte ResponseTopic = 0x08;
    const byte CorrelationData = 0x09;
    const byte UserProperty = 0x26;

    EncodedPublish(byte[] topic, byte[] properties)
    {
        Topic = topic;
        Properties = properties;
    }

    /// <summary>UTF-8 Encoded String: two bytes of length, then the bytes (MQTT 1.5.4).</summary>
    public byte[] Topic { get; }

    /// <summary>The sender's MQTT 5 properties, without their length (the recipient's own are added after them).</summary>
    public byte[] Properties { get; }

    /// <summary>Encodes and keeps them on the message; two threads encoding at once keep one (they are equal).</summary>
    public static EncodedPublish Of(BrokerMessage message)
    {
        var parts = new EncodedPublish(Utf8String(message.Topic), SenderProperties(message));
        return Interlocked.CompareExchange(ref message.Encoded, parts, null) ?? parts;
    }

    static byte[] SenderProperties(BrokerMessage m)
    {
        var writer = new ArrayBufferWriter<byte>(64);
        if (m.PayloadFormat != MqttPayloadFormatIndicator.Unspecified)
        {
            writer.Write([PayloadFormatIndicator, (byte)m.PayloadFormat]);
        }

        WriteString(writer, ContentType, m.ContentType);
        WriteString(writer, ResponseTopic, m.ResponseTopic);
        if (m.CorrelationData is { } correlation)
        {
            writer.Write([CorrelationData]);
            WriteBinary(writer, correlation);
        }

        if (m.UserProperties is { } properties)
        {
            foreach (var p in properties)
            {
                writer.Write([UserProperty]);
                writer.Write(Utf8String(p.Name));
                WriteBinary(writer, p.ValueBuffer.Span); // the value's UTF-8 bytes as received
            }
        }

        return writer.WrittenSpan.ToArray();
    }

    static void WriteString(ArrayBufferWriter<byte> writer, byte id, string? value)
    {
        if (value is not null)
        {
            writer.Write([id]);
            writer.Write(Utf8String(value));
        }
    }

    static void WriteBinary(ArrayBufferWriter<byte> writer, ReadOnlySpan<byte> value)
    {
        var length = writer.GetSpan(2);
        BinaryPrimitives.WriteUInt16BigEndian(length, (ushort)value.Length);
        writer.Advance(2);
        writer.Write(value);
    }

    static byte[] Utf8String(string value)
    {
        var bytes = new byte[2 + Encoding.UTF8.GetByteCount(value)];
        BinaryPrimitives.WriteUInt16BigEndian(bytes, (ushort)(bytes.Length - 2));
        Encoding.UTF8.GetBytes(value, bytes.AsSpan(2));
        return bytes;
    }
}
