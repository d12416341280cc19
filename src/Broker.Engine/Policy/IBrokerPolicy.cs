using System.Net;
using Broker.Engine.Routing;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Policy;

/// <summary>
/// The seams where rules plug into the engine. Nothing here sees a socket or a packet:
/// the engine asks, the policy answers with a decision, and the engine turns it into the right
/// reason code for the client's protocol version.
/// Pipeline: connection → <see cref="AuthenticateAsync"/> → <see cref="AuthorizePublish"/> /
/// <see cref="AuthorizeSubscribe"/> → <see cref="ResolveDirectRoute"/> or subscriptions →
/// <see cref="CanRead"/> per recipient → deliver. Optional seams a policy may also implement:
/// <see cref="IConnectionObserver"/> (who is connected) and <see cref="IDeliveryObserver"/> (acknowledgements).
/// </summary>
public interface IBrokerPolicy
{
    /// <summary>Checks identity and credentials of a CONNECT.</summary>
    ValueTask<AuthenticationResult> AuthenticateAsync(ConnectRequest request, CancellationToken cancellationToken);

    /// <summary>May <paramref name="sender"/> publish to <paramref name="topic"/> (also used for wills at CONNECT)?</summary>
    PolicyDecision AuthorizePublish(ClientPrincipal sender, string topic);

    /// <summary>May <paramref name="subscriber"/> subscribe to <paramref name="filter"/> (the part after <c>$share/name/</c>)?</summary>
    PolicyDecision AuthorizeSubscribe(ClientPrincipal subscriber, string filter);

    /// <summary>Read check at delivery, for every recipient and message, retained ones included.</summary>
    bool CanRead(ClientPrincipal recipient, string topic);

    /// <summary>A client id the topic is addressed to directly (point to point), or null to route by subscriptions.</summary>
    string? ResolveDirectRoute(string topic);

    /// <summary>
    /// Rewrites a message's user properties once at ingress (e.g. a sender stamp); returns the input when
    /// nothing changes. <paramref name="messageId"/> is the id the engine gave this publish (for a will: given
    /// at CONNECT); unique across restarts, it carries the time it was made.
    /// </summary>
    List<MqttUserProperty>? TransformUserProperties(ClientPrincipal sender, List<MqttUserProperty>? userProperties, long messageId);
}

public enum PolicyDecision : byte
{
    Allow,

    /// <summary>v5 0x87.</summary>
    NotAuthorized,

    /// <summary>Topic name / filter refused by the grammar (v5 0x90 for publish, 0x8F for subscribe).</summary>
    TopicInvalid,
}

/// <summary>Who is on the other end of a connection, decided once at CONNECT.</summary>
public sealed class ClientPrincipal(string clientId, string userId, string role)
{
    public string ClientId { get; } = clientId;

    public string UserId { get; } = userId;

    public string Role { get; } = role;

    /// <summary>Whatever the policy resolved at connect to answer later questions quickly.</summary>
    public object? PolicyState { get; init; }

    public override string ToString() => $"{UserId} ({ClientId})";
}

public sealed class ConnectRequest
{
    public required string ClientId { get; init; }

    /// <summary>True when the client sent an empty id and the engine assigned <see cref="ClientId"/>.</summary>
    public bool ClientIdAssigned { get; init; }

    public string? UserName { get; init; }

    public byte[]? Password { get; init; }

    public MqttProtocolVersion ProtocolVersion { get; init; }

    public EndPoint? RemoteEndPoint { get; init; }
}

public readonly struct AuthenticationResult
{
    AuthenticationResult(ClientPrincipal? principal, MqttConnectReasonCode reason, string? reasonText)
    {
        Principal = principal;
        ReasonCode = reason;
        ReasonText = reasonText;
    }

    public ClientPrincipal? Principal { get; }

    /// <summary>v5 code; the engine maps it to the v3.1.1 return code.</summary>
    public MqttConnectReasonCode ReasonCode { get; }

    /// <summary>For the operator's log line (and the v5 reason string); never a secret.</summary>
    public string? ReasonText { get; }

    public bool Succeeded => Principal is not null;

    public static AuthenticationResult Success(ClientPrincipal principal) => new(principal, MqttConnectReasonCode.Success, null);

    public static AuthenticationResult Fail(MqttConnectReasonCode reason, string reasonText) => new(null, reason, reasonText);
}
