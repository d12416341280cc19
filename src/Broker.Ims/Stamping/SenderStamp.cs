using System.Buffers.Text;
using System.Text;
using MQTTnet.Packets;

namespace Broker.Ims.Stamping;

/// <summary>
/// Contract §4: every message carries <c>ims-sender</c> (user id) and <c>ims-client</c> (client id)
/// set by the broker; contract §11: and <c>ims-id</c>, the id of the publish (the engine's message id
/// in decimal, unique across restarts). Properties of those names sent by the client are removed first,
/// so they cannot be forged. A new list every time: the message's list is shared by all its recipients,
/// and it is stored with the message, so a queued, restored or retained copy shows the same id.
/// </summary>
public static class SenderStamp
{
    public const string SenderProperty = "ims-sender";
    public const string ClientProperty = "ims-client";
    public const string IdProperty = "ims-id";

    /// <summary>The two stamp properties of one connection, built once at CONNECT (they are immutable and shared).</summary>
    public static (MqttUserProperty Sender, MqttUserProperty Client) For(string userId, string clientId) =>
        (new MqttUserProperty(SenderProperty, Encoding.UTF8.GetBytes(userId).AsMemory()),
         new MqttUserProperty(ClientProperty, Encoding.UTF8.GetBytes(clientId).AsMemory()));

    public static List<MqttUserProperty> Apply(string userId, string clientId, List<MqttUserProperty>? properties, long messageId) =>
        Apply(For(userId, clientId), properties, messageId);

    public static List<MqttUserProperty> Apply((MqttUserProperty Sender, MqttUserProperty Client) stamp, List<MqttUserProperty>? properties, long messageId)
    {
        var stamped = new List<MqttUserProperty>((properties?.Count ?? 0) + 3);
        if (properties is not null)
        {
            foreach (var p in properties)
            {
                if (p.Name is not SenderProperty and not ClientProperty and not IdProperty)
                {
                    stamped.Add(p);
                }
            }
        }

        stamped.Add(stamp.Sender);
        stamped.Add(stamp.Client);
        stamped.Add(IdOf(messageId));
        return stamped;
    }

    /// <summary>The <c>ims-id</c> property of a message id.</summary>
    public static MqttUserProperty IdOf(long messageId)
    {
        Span<byte> digits = stackalloc byte[20];
        Utf8Formatter.TryFormat(messageId, digits, out var written);
        return new MqttUserProperty(IdProperty, digits[..written].ToArray().AsMemory());
    }

    /// <summary>The <c>ims-id</c> a message carries, or 0.</summary>
    public static long IdIn(List<MqttUserProperty>? properties)
    {
        if (properties is null)
        {
            return 0;
        }

        foreach (var p in properties)
        {
            if (p.Name == IdProperty)
            {
                return Utf8Parser.TryParse(p.ValueBuffer.Span, out long id, out var consumed) && consumed == p.ValueBuffer.Length ? id : 0;
            }
        }

        return 0;
    }
}
