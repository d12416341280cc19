using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Protocol;

namespace Broker.Cluster.Redis;

/// <summary>
/// Binary forms of what the Redis store keeps as values: a row (its delivery fields and the whole
/// message) and a session record. A row starts with its payload length as a little-endian int32 so the
/// scripts can keep the queued-bytes counter right without decoding the rest.
/// </summary>
static class RowCodec
{
    const byte V1 = 1;

    public static byte[] EncodeRow(MqttQualityOfServiceLevel qos, bool retain, IReadOnlyList<uint>? subscriptionIds, BrokerMessage message, byte[] encodedMessage)
    {
        using var stream = new MemoryStream(16 + encodedMessage.Length);
        using var w = new BinaryWriter(stream);
        w.Write(message.Payload.Length);
        w.Write(V1);
        w.Write((byte)qos);
        w.Write(retain);
        var ids = MessageCodec.EncodeIds(subscriptionIds);
        w.Write(ids?.Length ?? -1);
        if (ids is not null)
        {
            w.Write(ids);
        }

        w.Write(encodedMessage);
        w.Flush();
        return stream.ToArray();
    }

    public static QueuedMessage DecodeRow(string clientId, byte[] blob, ushort packetId = 0, DeliveryState state = DeliveryState.Queued)
    {
        using var r = new BinaryReader(new MemoryStream(blob));
        r.ReadInt32(); // payload length, for the scripts
        if (r.ReadByte() != V1)
        {
            throw new InvalidDataException("unknown row format");
        }

        var qos = (MqttQualityOfServiceLevel)r.ReadByte();
        var retain = r.ReadBoolean();
        var idsLength = r.ReadInt32();
        var ids = idsLength < 0 ? null : MessageCodec.DecodeIds(r.ReadBytes(idsLength));
        var message = MessageCodec.ReadMessage(r);
        return new QueuedMessage(new StoredDelivery(clientId, message.Id, qos, retain, ids, packetId, state), message);
    }

    public static byte[] EncodeSession(SessionRecord session)
    {
        using var stream = new MemoryStream();
        using var w = new BinaryWriter(stream);
        w.Write(V1);
        w.Write(session.UserId);
        w.Write(session.Role);
        w.Write(session.ExpirySeconds);
        w.Write(session.DisconnectedAtUnixMs);
        var subscriptions = MessageCodec.EncodeSubscriptions(session.Subscriptions);
        w.Write(subscriptions.Length);
        w.Write(subscriptions);
        w.Flush();
        return stream.ToArray();
    }

    public static SessionRecord DecodeSession(string clientId, byte[] blob)
    {
        using var r = new BinaryReader(new MemoryStream(blob));
        if (r.ReadByte() != V1)
        {
            throw new InvalidDataException("unknown session format");
        }

        var user = r.ReadString();
        var role = r.ReadString();
        var expiry = r.ReadUInt32();
        var disconnectedAt = r.ReadInt64();
        var subscriptions = MessageCodec.DecodeSubscriptions(r.ReadBytes(r.ReadInt32()));
        return new SessionRecord(clientId, user, role, expiry, disconnectedAt, subscriptions);
    }

    /// <summary>A policy record's value, or (a leading 0) its deletion, which must survive like a value.</summary>
    public static byte[] EncodeRecord(byte[]? value) => value is null ? [0] : [1, .. value];

    public static byte[]? DecodeRecord(byte[] stored) => stored.Length == 0 || stored[0] == 0 ? null : stored[1..];
}
