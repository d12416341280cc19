using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Store;

/// <summary>
/// Compact binary forms for what has no column of its own: a message's MQTT 5 properties, a
/// session's subscriptions, a delivery's subscription identifiers. Each starts with a version byte.
/// Stores without columns (Redis) and the messages between cluster nodes use the whole-message form.
/// </summary>
public static class MessageCodec
{
    const byte V1 = 1;

    /// <summary>A whole message in one buffer (a store without columns, or a message between nodes).</summary>
    public static byte[] EncodeMessage(BrokerMessage m)
    {
        using var stream = new MemoryStream(64 + m.Topic.Length + m.Payload.Length);
        using var w = new BinaryWriter(stream);
        WriteMessage(w, m);
        w.Flush();
        return stream.ToArray();
    }

    public static void WriteMessage(BinaryWriter w, BrokerMessage m)
    {
        w.Write(V1);
        w.Write(m.Id);
        w.Write(m.Topic);
        w.Write((byte)m.Qos);
        w.Write(m.Retain);
        w.Write(m.ExpiresAtUnixMs);
        WriteNullable(w, m.SenderClientId);
        WriteNullable(w, m.SenderUserId);
        WriteBytes(w, EncodeProperties(m));
        w.Write(m.Payload.Length);
        w.Write(m.Payload.Span);
    }

    public static BrokerMessage DecodeMessage(byte[] data)
    {
        using var r = new BinaryReader(new MemoryStream(data));
        return ReadMessage(r);
    }

    public static BrokerMessage ReadMessage(BinaryReader r)
    {
        if (r.ReadByte() != V1)
        {
            throw new InvalidDataException("unknown message format");
        }

        var id = r.ReadInt64();
        var topic = r.ReadString();
        var qos = r.ReadByte();
        var retain = r.ReadBoolean();
        var expiresAt = r.ReadInt64();
        var senderClient = ReadNullable(r);
        var senderUser = ReadNullable(r);
        var properties = ReadBytes(r);
        var payload = r.ReadBytes(r.ReadInt32());
        return Decode(id, topic, payload, qos, retain, properties, expiresAt, senderClient, senderUser);
    }

    public static byte[]? EncodeProperties(BrokerMessage m)
    {
        if (m.ContentType is null && m.ResponseTopic is null && m.CorrelationData is null
            && m.PayloadFormat == MqttPayloadFormatIndicator.Unspecified && (m.UserProperties is null || m.UserProperties.Count == 0))
        {
            return null;
        }

        using var stream = new MemoryStream();
        using var w = new BinaryWriter(stream);
        w.Write(V1);
        WriteNullable(w, m.ContentType);
        WriteNullable(w, m.ResponseTopic);
        WriteBytes(w, m.CorrelationData);
        w.Write((byte)m.PayloadFormat);
        var props = m.UserProperties;
        w.Write(props?.Count ?? 0);
        if (props is not null)
        {
            foreach (var p in props)
            {
                w.Write(p.Name);
                WriteBytes(w, p.ValueBuffer.ToArray());
            }
        }

        w.Flush();
        return stream.ToArray();
    }

    public static BrokerMessage Decode(long id, string topic, byte[] payload, int qos, bool retain, byte[]? properties, long expiresAt, string? senderClient, string? senderUser)
    {
        string? contentType = null, responseTopic = null;
        byte[]? correlation = null;
        var format = MqttPayloadFormatIndicator.Unspecified;
        List<MqttUserProperty>? userProperties = null;
        if (properties is not null)
        {
            using var r = new BinaryReader(new MemoryStream(properties));
            if (r.ReadByte() != V1)
            {
                throw new InvalidDataException($"message {id}: unknown properties format");
            }

            contentType = ReadNullable(r);
            responseTopic = ReadNullable(r);
            correlation = ReadBytes(r);
            format = (MqttPayloadFormatIndicator)r.ReadByte();
            var count = r.ReadInt32();
            if (count > 0)
            {
                userProperties = new List<MqttUserProperty>(count);
                for (var i = 0; i < count; i++)
                {
                    var name = r.ReadString();
                    userProperties.Add(new MqttUserProperty(name, (ReadBytes(r) ?? []).AsMemory()));
                }
            }
        }

        return new BrokerMessage
        {
            Id = id,
            Topic = topic,
            Payload = payload,
            Qos = (MqttQualityOfServiceLevel)qos,
            Retain = retain,
            ContentType = contentType,
            ResponseTopic = responseTopic,
            CorrelationData = correlation,
            PayloadFormat = format,
            UserProperties = userProperties,
            ExpiresAtUnixMs = expiresAt,
            SenderClientId = senderClient,
            SenderUserId = senderUser,
        };
    }

    public static byte[] EncodeSubscriptions(IReadOnlyList<SubscriptionRecord> subscriptions)
    {
        using var stream = new MemoryStream();
        using var w = new BinaryWriter(stream);
        w.Write(V1);
        w.Write(subscriptions.Count);
        foreach (var s in subscriptions)
        {
            w.Write(s.Filter);
            w.Write((byte)s.Qos);
            w.Write(s.NoLocal);
            w.Write(s.RetainAsPublished);
            w.Write((byte)s.RetainHandling);
            w.Write(s.SubscriptionId);
        }

        w.Flush();
        return stream.ToArray();
    }

    public static List<SubscriptionRecord> DecodeSubscriptions(byte[]? data)
    {
        var list = new List<SubscriptionRecord>();
        if (data is null)
        {
            return list;
        }

        using var r = new BinaryReader(new MemoryStream(data));
        if (r.ReadByte() != V1)
        {
            throw new InvalidDataException("unknown subscriptions format");
        }

        var count = r.ReadInt32();
        for (var i = 0; i < count; i++)
        {
            list.Add(new SubscriptionRecord(r.ReadString(), (MqttQualityOfServiceLevel)r.ReadByte(), r.ReadBoolean(), r.ReadBoolean(), (MqttRetainHandling)r.ReadByte(), r.ReadUInt32()));
        }

        return list;
    }

    public static byte[]? EncodeIds(IReadOnlyList<uint>? ids)
    {
        if (ids is null || ids.Count == 0)
        {
            return null;
        }

        var bytes = new byte[ids.Count * 4];
        for (var i = 0; i < ids.Count; i++)
        {
            BitConverter.TryWriteBytes(bytes.AsSpan(i * 4), ids[i]);
        }

        return bytes;
    }

    public static List<uint>? DecodeIds(byte[]? bytes)
    {
        if (bytes is null || bytes.Length == 0)
        {
            return null;
        }

        var ids = new List<uint>(bytes.Length / 4);
        for (var i = 0; i + 4 <= bytes.Length; i += 4)
        {
            ids.Add(BitConverter.ToUInt32(bytes, i));
        }

        return ids;
    }

    static void WriteNullable(BinaryWriter w, string? value)
    {
        w.Write(value is not null);
        if (value is not null)
        {
            w.Write(value);
        }
    }

    static string? ReadNullable(BinaryReader r) => r.ReadBoolean() ? r.ReadString() : null;

    static void WriteBytes(BinaryWriter w, byte[]? value)
    {
        w.Write(value?.Length ?? -1);
        if (value is not null)
        {
            w.Write(value);
        }
    }

    static byte[]? ReadBytes(BinaryReader r)
    {
        var length = r.ReadInt32();
        return length < 0 ? null : r.ReadBytes(length);
    }
}
