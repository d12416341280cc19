using System.Text;
using MQTTnet.Packets;

namespace Broker.Ims.Stamping;

/// <summary>
/// Contract §4: every message carries <c>ims-sender</c> (user id) and <c>ims-client</c> (client id)
/// set by the broker; properties of those names sent by the client are removed first, so they
/// cannot be forged. A new list every time: the message's list is shared by all its recipients.
/// </summary>
public static class SenderStamp
{
    public const string SenderProperty = "ims-sender";
    public const string ClientProperty = "ims-client";

    /// <summary>The two stamp properties of one connection, built once at CONNECT (they are immutable and shared).</summary>
    public static (MqttUserProperty Sender, MqttUserProperty Client) For(string userId, string clientId) =>
        (new MqttUserProperty(SenderProperty, Encoding.UTF8.GetBytes(userId).AsMemory()),
         new MqttUserProperty(ClientProperty, Encoding.UTF8.GetBytes(clientId).AsMemory()));

    public static List<MqttUserProperty> Apply(string userId, string clientId, List<MqttUserProperty>? properties) =>
        Apply(For(userId, clientId), properties);

    public static List<MqttUserProperty> Apply((MqttUserProperty Sender, MqttUserProperty Client) stamp, List<MqttUserProperty>? properties)
    {
        var stamped = new List<MqttUserProperty>((properties?.Count ?? 0) + 2);
        if (properties is not null)
        {
            foreach (var p in properties)
            {
                if (p.Name is not SenderProperty and not ClientProperty)
                {
                    stamped.Add(p);
                }
            }
        }

        stamped.Add(stamp.Sender);
        stamped.Add(stamp.Client);
        return stamped;
    }
}
