using System.Buffers;
using System.Text.Json;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Ims.Stamping;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Ims.Receipts;

/// <summary>
/// Contract §11: a QoS 1/2 publish with the user property <c>ims-receipt</c> = <c>delivered</c> gets, for
/// every recipient device that acknowledges it (PUBACK; PUBREC for QoS 2), a receipt published by the broker,
/// QoS 1, to <c>P/&lt;sender&gt;/Inbox/Receipt/Delivered/&lt;recipient user&gt;</c>:
/// <c>{"id":"&lt;ims-id&gt;","user":"&lt;recipient&gt;","client":"&lt;recipient client id&gt;","at":&lt;unix ms&gt;}</c>.
/// None for the sender's own devices, none for a retained copy replayed to a new subscriber (its engine id
/// is not the publish's <c>ims-id</c>). The request travels in the message's stored properties, so it
/// survives a restart; the engine reports an acknowledgement before it stores the delivery's removal, so a
/// crash can repeat a receipt, never lose one.
/// </summary>
internal sealed class DeliveryReceipts(BrokerVoice voice, TimeProvider time)
{
    public const string RequestProperty = "ims-receipt";
    public const string Delivered = "delivered";

    public static bool Observes(BrokerMessage message) =>
        message.Qos != MqttQualityOfServiceLevel.AtMostOnce
        && message.SenderUserId is not null
        && Requested(message.UserProperties)
        && SenderStamp.IdIn(message.UserProperties) == message.Id;

    static bool Requested(List<MqttUserProperty>? properties)
    {
        if (properties is null)
        {
            return false;
        }

        foreach (var p in properties)
        {
            if (p.Name == RequestProperty && p.ValueBuffer.Span.SequenceEqual("delivered"u8))
            {
                return true;
            }
        }

        return false;
    }

    public void Acknowledged(BrokerMessage message, ClientPrincipal recipient)
    {
        var sender = message.SenderUserId!;
        if (recipient.UserId == sender)
        {
            return; // the sender's own devices: no receipt
        }

        var slash = message.Topic.IndexOf('/', StringComparison.Ordinal);
        var parent = slash > 0 ? message.Topic[..slash] : message.Topic;
        voice.Publish($"{parent}/{sender}/Inbox/Receipt/Delivered/{recipient.UserId}",
            Encode(message.Id, recipient, time.GetUtcNow().ToUnixTimeMilliseconds()), MqttQualityOfServiceLevel.AtLeastOnce, retain: false);
    }

    public static byte[] Encode(long id, ClientPrincipal recipient, long atUnixMs)
    {
        var buffer = new ArrayBufferWriter<byte>(128);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("id", id.ToString(System.Globalization.CultureInfo.InvariantCulture));
            json.WriteString("user", recipient.UserId);
            json.WriteString("client", recipient.ClientId);
            json.WriteNumber("at", atUnixMs);
            json.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }
}
