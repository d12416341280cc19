using Broker.Engine.Routing;
using MQTTnet.Protocol;

namespace Broker.Engine.Policy;

/// <summary>The broker publishing on its own (a policy's messages: state it keeps, notices it sends). Implemented by <see cref="BrokerEngine"/>.</summary>
public interface IBrokerPublisher
{
    /// <summary>
    /// Publishes as <paramref name="sender"/> without the publish rules; recipients are still read-checked.
    /// Routed (retained set, queues and store writes handed over) before it returns; completes when durable.
    /// </summary>
    ValueTask PublishAsync(ClientPrincipal sender, string topic, ReadOnlyMemory<byte> payload, MqttQualityOfServiceLevel qos, bool retain);

    /// <summary>The retained messages whose topics match <paramref name="filter"/>.</summary>
    IReadOnlyList<BrokerMessage> GetRetained(string filter);
}
