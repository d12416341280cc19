using Broker.Engine.Routing;

namespace Broker.Engine.Policy;

/// <summary>
/// Optional seam, implemented by a policy that wants to hear when a recipient acknowledges a message
/// (the engine looks for it on the <see cref="IBrokerPolicy"/> it is given). The engine asks
/// <see cref="ObservesAcknowledgements"/> once per message object, at its first acknowledgement, and
/// keeps the answer on the message: a message nobody observes costs one field read per acknowledgement.
/// </summary>
public interface IDeliveryObserver
{
    /// <summary>Should acknowledgements of <paramref name="message"/> be reported? Asked once per message object.</summary>
    bool ObservesAcknowledgements(BrokerMessage message);

    /// <summary>
    /// <paramref name="recipient"/> acknowledged its delivery of <paramref name="message"/>: PUBACK for QoS 1,
    /// the first PUBREC for QoS 2 (never a PUBREC that refuses it). Called on the recipient's connection,
    /// under no lock and before the delivery's removal is handed to the store; must not block.
    /// </summary>
    void Acknowledged(BrokerMessage message, ClientPrincipal recipient);
}
