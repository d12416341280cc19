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

    /// <summary>
    /// Read check at delivery, for every recipient and message: live, retained, queued in a session or in
    /// the mailbox, read back from the store. The message carries its topic and its sender
    /// (<see cref="BrokerMessage.SenderUserId"/>), so rules may depend on who sent it (block lists).
    /// </summary>
    bool CanRead(ClientPrincipal recipient, BrokerMessage message);

    /// <summary>
    /// Moves whenever <see cref="CanRead"/> may answer differently for a message already queued (e.g. a
    /// block list changed): a session checks the messages of its in-memory queue again before sending
    /// them. A constant when the rules only change with the configuration.
    /// </summary>
    long ReadRulesVersion => 0;

    /// <summary>
    /// A publish to a command space the policy owns (a <c>$</c> topic such as <c>$IMS/...</c>, never matched by
    /// wildcards [MQTT-4.7.2-1]): the policy handles it instead of the router. False: not a command, route it.
    /// True: <paramref name="result"/> says whether it was taken (the v5 reason code otherwise) and, when taken,
    /// what the acknowledgement of a QoS 1/2 publish waits for (the change being durable). Never routed, never retained.
    /// </summary>
    bool TryHandleCommand(ClientPrincipal sender, string topic, ReadOnlyMemory<byte> payload, out CommandResult result)
    {
        result = default;
        return false;
    }

    /// <summary>
    /// The limits of one connection of <paramref name="principal"/> (publish rate, quotas), asked once after
    /// authentication; buckets may be shared by all connections of a user. <see cref="OpenedLimits.Limits"/>
    /// null: no limits. <see cref="OpenedLimits.QuotaExceeded"/>: refused (CONNACK v5 0x97, v3.1.1 0x03).
    /// The engine calls <see cref="ClientLimits.Close"/> when the connection ends. May ask a cluster's
    /// shared store (the user's devices on every node), so it may throw when that is out of reach.
    /// </summary>
    ValueTask<OpenedLimits> OpenLimitsAsync(ClientPrincipal principal) => ValueTask.FromResult(default(OpenedLimits));

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

    /// <summary>Over a quota (v5 0x97; v3.1.1: SUBACK 0x80, a publish acknowledged and dropped).</summary>
    QuotaExceeded,
}

/// <summary>What the policy made of a command publish (<see cref="IBrokerPolicy.TryHandleCommand"/>).</summary>
public readonly struct CommandResult(PolicyDecision decision, ValueTask durable = default)
{
    public PolicyDecision Decision { get; } = decision;

    /// <summary>Completes when the command's change is durable: a QoS 1/2 acknowledgement waits for it.</summary>
    public ValueTask Durable { get; } = durable;
}

/// <summary>Who is on the other end of a connection, decided once at CONNECT.</summary>
public sealed class ClientPrincipal(string clientId, string userId, string role)
{
    public string ClientId { get; } = clientId;

    public string UserId { get; } = userId;

    public string Role { get; } = role;

    /// <summary>Whatever the policy keeps about this connection to answer later questions quickly (set by the policy, at connect or later).</summary>
    public object? PolicyState { get; set; }

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
