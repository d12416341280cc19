using MQTTnet.Protocol;

namespace Broker.Engine.Routing;

/// <summary>
/// What the subscriptions of one session that match a message give it: one delivery with the highest QoS
/// granted (never above the message's), the retain flag only where Retain As Published keeps it (live
/// messages carry retain 0 otherwise) [MQTT-3.3.1-9, -12], and every subscription identifier
/// [MQTT-3.3.4-2, -3]; the publisher's own No Local subscriptions give nothing [MQTT-3.8.3-3]. The router
/// applies it to this node's sessions, the cluster link to durable readers on other nodes.
/// </summary>
public readonly record struct DeliveryGrant(MqttQualityOfServiceLevel Qos, bool Retain, List<uint>? SubscriptionIds)
{
    /// <summary>Null when the subscription gives this message nothing (No Local and the session published it).</summary>
    public static DeliveryGrant? Of(BrokerMessage message, string clientId, MqttQualityOfServiceLevel qos, bool noLocal, bool retainAsPublished, uint identifier) =>
        noLocal && clientId == message.SenderClientId
            ? null
            : new DeliveryGrant(message.Qos < qos ? message.Qos : qos, retainAsPublished && message.Retain, identifier != 0 ? [identifier] : null);

    /// <summary>Another matching subscription of the same session; this grant's identifier list is extended in place.</summary>
    public DeliveryGrant Merge(DeliveryGrant other)
    {
        var ids = SubscriptionIds;
        if (other.SubscriptionIds is { } more)
        {
            if (ids is null)
            {
                ids = more;
            }
            else
            {
                ids.AddRange(more);
            }
        }

        return new DeliveryGrant(Qos > other.Qos ? Qos : other.Qos, Retain || other.Retain, ids);
    }
}
