using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Routing;

/// <summary>
/// One published message, immutable once routed: every recipient's queue references the same
/// object, so a fan-out to a thousand members costs a thousand references, not a thousand copies.
/// Per-recipient parts (QoS, retain flag, subscription ids, packet id) live in <see cref="Delivery"/>.
/// </summary>
public sealed class BrokerMessage
{
    public required string Topic { get; init; }

    public ReadOnlyMemory<byte> Payload { get; init; }

    public MqttQualityOfServiceLevel Qos { get; init; }

    public bool Retain { get; init; }

    public string? ContentType { get; init; }

    public string? ResponseTopic { get; init; }

    public byte[]? CorrelationData { get; init; }

    public MqttPayloadFormatIndicator PayloadFormat { get; init; }

    /// <summary>Never mutated after routing; replaced as a whole by a policy's transform.</summary>
    public List<MqttUserProperty>? UserProperties { get; init; }

    /// <summary>Wall-clock expiry (Unix ms), 0 when the message does not expire (v5 Message Expiry Interval).</summary>
    public long ExpiresAtUnixMs { get; init; }

    public string? SenderClientId { get; init; }

    public string? SenderUserId { get; init; }

    /// <summary>Monotonic id given by the engine; the store keys queue rows by it.</summary>
    public long Id { get; init; }

    /// <summary>
    /// Whether a delivery observer wants this message's acknowledgements: 0 not asked yet, 1 no, 2 yes
    /// (<see cref="EngineContext.Acknowledged"/>). Not copied by <see cref="With"/>: a copy is asked again.
    /// </summary>
    internal int AckInterest;

    /// <summary>Its PUBLISH bytes that are the same for every recipient, encoded on first send (not copied by <see cref="With"/>).</summary>
    internal Connections.EncodedPublish? Encoded;

    public bool IsExpired(long nowUnixMs) => ExpiresAtUnixMs != 0 && nowUnixMs >= ExpiresAtUnixMs;

    /// <summary>Seconds left, for the Message Expiry Interval sent on to the receiver [MQTT-3.3.2-6].</summary>
    public uint RemainingExpirySeconds(long nowUnixMs) =>
        ExpiresAtUnixMs == 0 ? 0 : (uint)Math.Max(1, (ExpiresAtUnixMs - nowUnixMs + 999) / 1000);

    public BrokerMessage With(string? topic = null, bool? retain = null, List<MqttUserProperty>? userProperties = null, long? id = null, long? expiresAtUnixMs = null) => new()
    {
        Topic = topic ?? Topic,
        Payload = Payload,
        Qos = Qos,
        Retain = retain ?? Retain,
        ContentType = ContentType,
        ResponseTopic = ResponseTopic,
        CorrelationData = CorrelationData,
        PayloadFormat = PayloadFormat,
        UserProperties = userProperties ?? UserProperties,
        ExpiresAtUnixMs = expiresAtUnixMs ?? ExpiresAtUnixMs,
        SenderClientId = SenderClientId,
        SenderUserId = SenderUserId,
        Id = id ?? Id,
    };
}

/// <summary>
/// A message as one recipient gets it. <paramref name="Stored"/>: the store has a row of it for that
/// session (a persistent session's QoS 1/2 delivery), so it counts towards the offline queue and may be
/// read back from the store.
/// </summary>
public readonly record struct Delivery(BrokerMessage Message, MqttQualityOfServiceLevel Qos, bool Retain, List<uint>? SubscriptionIds, bool Stored = false);

/// <summary>
/// One packet a session hands its connection's writer: a control packet (PUBREL), or a PUBLISH of a delivery
/// under a packet identifier, which the writer encodes from the message's bytes (Connections.PublishEncoder).
/// </summary>
internal readonly record struct Outbound(MqttPacket? Control, Delivery Delivery, ushort PacketId, bool Dup)
{
    public static Outbound Publish(in Delivery delivery, ushort packetId, bool dup) => new(null, delivery, packetId, dup);

    public static Outbound Of(MqttPacket control) => new(control, default, 0, false);
}
