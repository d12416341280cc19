using Broker.Engine.Connections;
using Broker.Engine.Policy;
using Broker.Engine.Routing;

namespace Broker.Engine.Cluster;

/// <summary>This node's engine as the other nodes reach it (through the cluster link).</summary>
internal sealed class ClusterPeer(EngineContext engine) : IClusterPeer
{
    public void Deliver(BrokerMessage message, string? directClientId, IReadOnlyCollection<string> storedFor) =>
        engine.Router.DeliverFromCluster(message, directClientId, storedFor);

    public void DeliverShared(BrokerMessage message, string clientId, string subscriptionKey, bool stored) =>
        engine.Router.DeliverSharedFromCluster(message, clientId, subscriptionKey, stored);

    public void DirectNotKept(string clientId, BrokerMessage message) => engine.Mailbox.NotKept(clientId, message);

    public Task ReleaseAsync(string clientId) => engine.Sessions.ReleaseAsync(clientId);

    public bool Hosts(string clientId) => engine.Sessions.Get(clientId) is not null;

    public void RetainedChanged(BrokerMessage message)
    {
        if (message.Payload.IsEmpty)
        {
            engine.Retained.Remove(message.Topic);
        }
        else
        {
            // Kept whatever the local bounds: the node that took it checked them.
            engine.Retained.Set(message);
        }
    }

    public void PublishWill(BrokerMessage will, ClientPrincipal sender, uint expirySeconds) =>
        _ = engine.Router.PublishWillAsync(MqttConnection.WillAsPublished(will, expirySeconds, engine.NowUnixMs), sender);

    public void MayHaveMissedMessages()
    {
        foreach (var session in engine.Sessions.All)
        {
            if (session.IsPersistent)
            {
                session.RecheckStore();
            }
            else if (session.Connection is { } connection && session.HasQos1Or2Subscription)
            {
                connection.CloseFromOutside(MQTTnet.Protocol.MqttDisconnectReasonCode.UnspecifiedError, "messages may have been missed (the node's link to the cluster was cut)");
            }
        }
    }

    public void ResyncRetained(IReadOnlyList<BrokerMessage> all)
    {
        var kept = new HashSet<string>(StringComparer.Ordinal);
        foreach (var message in all)
        {
            kept.Add(message.Topic);
            engine.Retained.Set(message);
        }

        // "#" never matches $-topics [MQTT-4.7.2-1]: the node's own $SYS values stay.
        var local = new List<BrokerMessage>();
        engine.Retained.CollectMatching("#", local);
        foreach (var message in local)
        {
            if (!kept.Contains(message.Topic))
            {
                engine.Retained.Remove(message.Topic);
            }
        }
    }
}
