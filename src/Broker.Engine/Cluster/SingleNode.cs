using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;

namespace Broker.Engine.Cluster;

/// <summary>One node alone: nothing to claim, nobody else to route to.</summary>
public sealed class SingleNode : IClusterLink
{
    public static SingleNode Instance { get; } = new();

    public string NodeId => Environment.MachineName;

    public bool IsReachable => true;

    public int NodeIndex => 0;

    public Task StartAsync(IClusterPeer peer, CancellationToken cancellationToken) => Task.CompletedTask;

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    public ValueTask<ClaimedSession?> ClaimAsync(ClientPrincipal principal, bool cleanStart, uint expirySeconds, CancellationToken cancellationToken) => ValueTask.FromResult<ClaimedSession?>(null);

    public void SessionHosted(Session session)
    {
    }

    public void SessionLeft(Session session, bool ended)
    {
    }

    public void SubscriptionChanged(Session session, Subscription subscription, bool added, bool ended = true)
    {
    }

    public ValueTask SettledAsync() => ValueTask.CompletedTask;

    public ValueTask RouteAsync(BrokerMessage message, InboundPacket? inbound) => ValueTask.CompletedTask;

    public bool TryRouteDirect(string clientId, BrokerMessage message, InboundPacket? inbound, out ValueTask durable)
    {
        durable = ValueTask.CompletedTask;
        return false;
    }

    public void RetainedChanged(BrokerMessage message)
    {
    }

    public Task<IReadOnlyList<RemoteSession>> RemoteSessionsAsync(CancellationToken cancellationToken) => Task.FromResult<IReadOnlyList<RemoteSession>>([]);

    public void WillArmed(ClientPrincipal sender, BrokerMessage will, uint delaySeconds, uint expirySeconds)
    {
    }

    public void WillDisarmed(string clientId)
    {
    }
}
