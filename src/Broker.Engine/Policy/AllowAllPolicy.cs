using MQTTnet.Packets;

namespace Broker.Engine.Policy;

/// <summary>A standard broker with no rules: anyone may connect, publish and subscribe (tests, embedded use).</summary>
public sealed class AllowAllPolicy : IBrokerPolicy
{
    public ValueTask<AuthenticationResult> AuthenticateAsync(ConnectRequest request, CancellationToken cancellationToken) =>
        ValueTask.FromResult(AuthenticationResult.Success(new ClientPrincipal(request.ClientId, request.UserName ?? request.ClientId, "user")));

    public PolicyDecision AuthorizePublish(ClientPrincipal sender, string topic) => PolicyDecision.Allow;

    public PolicyDecision AuthorizeSubscribe(ClientPrincipal subscriber, string filter) => PolicyDecision.Allow;

    public bool CanRead(ClientPrincipal recipient, Routing.BrokerMessage message) => true;

    public string? ResolveDirectRoute(string topic) => null;

    public List<MqttUserProperty>? TransformUserProperties(ClientPrincipal sender, List<MqttUserProperty>? userProperties, long messageId) => userProperties;

}
