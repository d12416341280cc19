using System.Buffers;
using System.Buffers.Binary;
using System.Text.Unicode;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>Why a packet closes the connection: the v5 DISCONNECT reason (v3.1.1 just closes) and a short text citing the rule.</summary>
internal readonly record struct PacketViolation(MqttDisconnectReasonCode Reason, string Text);

/// <summary>
/// The wire grammar of every packet a client may send, checked on the bytes of one complete frame before
/// MQTTnet decodes it. MQTTnet's decoder is lenient (it replaces ill-formed UTF-8, keeps the last of duplicate
/// properties, ignores reserved bits), so what the specifications call a Malformed Packet or a Protocol Error
/// would otherwise be answered. Only the grammar is checked here: what a value means for this broker (client id
/// format, topic alias maximum, ACL, limits) is decided after decoding.
/// <para>
/// Reason codes follow MQTT 5 §4.13 and the statement of each rule: a packet that cannot be parsed as the
/// specification describes (reserved flags, truncated or trailing bytes, ill-formed strings, unknown or
/// misplaced properties) is 0x81 Malformed Packet; one that parses but breaks a rule on its values (duplicate
/// properties, out-of-range values, packet identifier 0) is 0x82 Protocol Error. v3.1.1 closes either way
/// [MQTT-4.8.0-1]; v3.1 (protocol level 3) is checked as v3.1.1.
/// </para>
/// Allocation-free on the accept path: the body is read as one span (a frame split over segments is copied
/// once, to the stack when small); texts are constants except where a failure names a value.
/// </summary>
internal static class PacketValidator
{
    const MqttDisconnectReasonCode Malformed = MqttDisconnectReasonCode.MalformedPacket;
    const MqttDisconnectReasonCode Protocol = MqttDisconnectReasonCode.ProtocolError;

    public static bool TryValidate(byte fixedHeader, in ReadOnlySequence<byte> body, MqttProtocolVersion version, out PacketViolation violation)
    {
        if (body.IsSingleSegment)
        {
            return TryValidate(fixedHeader, body.FirstSpan, version, out violation);
        }

        var length = (int)body.Length;
        if (length <= 512)
        {
            Span<byte> copy = stackalloc byte[length];
            body.CopyTo(copy);
            return TryValidate(fixedHeader, copy, version, out violation);
        }

        var rented = ArrayPool<byte>.Shared.Rent(length);
        try
        {
            body.CopyTo(rented);
            return TryValidate(fixedHeader, rented.AsSpan(0, length), version, out violation);
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>The same check on a body that is one span: the fixed header's first byte, and the bytes after the Remaining Length.</summary>
    public static bool TryValidate(byte fixedHeader, ReadOnlySpan<byte> body, MqttProtocolVersion version, out PacketViolation violation)
    {
        var v5 = version == MqttProtocolVersion.V500;
        var flags = fixedHeader & 0x0F;
        var reader = new Reader(body);
        switch ((MqttControlPacketType)(fixedHeader >> 4))
        {
            case MqttControlPacketType.Publish:
                return Publish(flags, ref reader, v5, out violation);
            case MqttControlPacketType.PubAck:
            case MqttControlPacketType.PubRec:
            case MqttControlPacketType.PubComp:
                // PUBACK, PUBREC, PUBCOMP: flags 0000 [MQTT-2.2.2-1, -2].
                return Flags(flags, 0b0000, out violation) && Ack(fixedHeader >> 4, ref reader, v5, out violation);
            case MqttControlPacketType.PubRel:
                // PUBREL: flags 0010 [MQTT-3.6.1-1].
                return Flags(flags, 0b0010, out violation) && Ack(fixedHeader >> 4, ref reader, v5, out violation);
            case MqttControlPacketType.Subscribe:
                // SUBSCRIBE: flags 0010 [MQTT-3.8.1-1].
                return Flags(flags, 0b0010, out violation) && Subscribe(ref reader, v5, out violation);
            case MqttControlPacketType.Unsubscribe:
                // UNSUBSCRIBE: flags 0010 [MQTT-3.10.1-1].
                return Flags(flags, 0b0010, out violation) && Unsubscribe(ref reader, v5, out violation);
            case MqttControlPacketType.PingReq:
                // PINGREQ: flags 0000 and nothing after the fixed header (v5 §3.12).
                return Flags(flags, 0b0000, out violation) && End(ref reader, "PINGREQ", out violation);
            case MqttControlPacketType.Disconnect:
                return Flags(flags, 0b0000, out violation) && Disconnect(ref reader, v5, out violation);
            case MqttControlPacketType.Connect:
                // CONNECT: flags 0000 [MQTT-2.2.2-1, -2]; a second one is the connection's business [MQTT-3.1.0-2].
                return Flags(flags, 0b0000, out violation) && Connect(ref reader, v5, out violation);
            case MqttControlPacketType.Auth when v5:
                return Flags(flags, 0b0000, out violation) && Auth(ref reader, out violation);
            case MqttControlPacketType.ConnAck:
            case MqttControlPacketType.SubAck:
            case MqttControlPacketType.UnsubAck:
            case MqttControlPacketType.PingResp:
                // Server-to-client packets: well-formed perhaps, but not a client's to send (v5 §2.1.2, §4.13.2).
                return Fail(Protocol, "a server-to-client packet type from a client [MQTT-4.8.0-1]", out violation);
            default:
                // 0 is reserved, and so is 15 before v5 (v3.1.1 §2.2.1, v5 §2.1.2).
                return Fail(Malformed, "reserved packet type [MQTT-2.2.1]", out violation);
        }
    }

    // ---- one method per packet type ----------------------------------------------------------------

    /// <summary>CONNECT [MQTT-3.1]: the version was detected from the protocol name and level before this runs.</summary>
    static bool Connect(ref Reader r, bool v5, out PacketViolation violation)
    {
        // Protocol Name and Level were read by the version detection [MQTT-3.1.2-1, -2]; step over them.
        if (!r.TryString(out _) || !r.TrySkip(1) || !r.TryByte(out var connectFlags) || !r.TrySkip(2))
        {
            return Truncated("CONNECT variable header", out violation);
        }

        // The reserved flag must be 0 [MQTT-3.1.2-3].
        if ((connectFlags & 0x01) != 0)
        {
            return Fail(Malformed, "CONNECT reserved flag set [MQTT-3.1.2-3]", out violation);
        }

        var will = (connectFlags & 0x04) != 0;
        var willQos = (connectFlags >> 3) & 0x03;
        var willRetain = (connectFlags & 0x20) != 0;
        var password = (connectFlags & 0x40) != 0;
        var userName = (connectFlags & 0x80) != 0;
        // Will Flag 0: Will QoS and Will Retain are 0 [MQTT-3.1.2-11, -13, -15] (v5 [MQTT-3.1.2-11, -13]).
        if (!will && willQos != 0)
        {
            return Fail(Malformed, "CONNECT Will QoS without Will Flag [MQTT-3.1.2-13]", out violation);
        }

        if (!will && willRetain)
        {
            return Fail(Malformed, "CONNECT Will Retain without Will Flag [MQTT-3.1.2-15]", out violation);
        }

        if (willQos == 3)
        {
            // Will QoS is 0, 1 or 2 [MQTT-3.1.2-14] (v5 [MQTT-3.1.2-12]).
            return Fail(Malformed, "CONNECT Will QoS 3 [MQTT-3.1.2-14]", out violation);
        }

        if (!v5 && password && !userName)
        {
            // v3.1.1 only: no password without a user name [MQTT-3.1.2-22]; v5 allows it (§3.1.2.9).
            return Fail(Malformed, "CONNECT Password Flag without User Name Flag [MQTT-3.1.2-22]", out violation);
        }

        if (v5 && !Properties(ref r, PropertyContext.Connect, out violation))
        {
            return false;
        }

        // Client Identifier: a UTF-8 string [MQTT-3.1.3-4]; its content (empty, format) is decided later [MQTT-3.1.3-7].
        if (!String(ref r, "CONNECT Client Identifier", out violation))
        {
            return false;
        }

        if (will)
        {
            // Will Properties (v5), Will Topic (UTF-8 [MQTT-3.1.3-11]) and Will Payload (binary) [MQTT-3.1.2-9].
            if (v5 && !Properties(ref r, PropertyContext.Will, out violation))
            {
                return false;
            }

            if (!String(ref r, "CONNECT Will Topic", out violation))
            {
                return false;
            }

            if (!r.TryBinary(out _))
            {
                return Truncated("CONNECT Will Payload", out violation);
            }
        }

        // User Name: UTF-8 [MQTT-3.1.3-11 v3.1.1 / -12 v5], present iff its flag [MQTT-3.1.2-18, -19].
        if (userName && !String(ref r, "CONNECT User Name", out violation))
        {
            return false;
        }

        // Password: binary, present iff its flag [MQTT-3.1.2-20, -21].
        if (password && !r.TryBinary(out _))
        {
            return Truncated("CONNECT Password", out violation);
        }

        return End(ref r, "CONNECT", out violation);
    }

    /// <summary>PUBLISH [MQTT-3.3]: the hot path, so the topic is checked with vectorised searches.</summary>
    static bool Publish(int flags, ref Reader r, bool v5, out PacketViolation violation)
    {
        var qos = (flags >> 1) & 0x03;
        if (qos == 3)
        {
            // Both QoS bits set [MQTT-3.3.1-4].
            return Fail(Malformed, "PUBLISH with both QoS bits set [MQTT-3.3.1-4]", out violation);
        }

        if (qos == 0 && (flags & 0x08) != 0)
        {
            // DUP must be 0 for QoS 0 [MQTT-3.3.1-2].
            return Fail(Malformed, "PUBLISH QoS 0 with DUP set [MQTT-3.3.1-2]", out violation);
        }

        if (!r.TryString(out var topic))
        {
            return Truncated("PUBLISH Topic Name", out violation);
        }

        // U+0000 [MQTT-1.5.3-2] and wildcards [MQTT-3.3.2-2] in one search; then well-formed UTF-8 [MQTT-1.5.3-1].
        var bad = topic.IndexOfAny((byte)0, (byte)'+', (byte)'#');
        if (bad >= 0)
        {
            return topic[bad] == 0
                ? Fail(Malformed, "PUBLISH Topic Name with U+0000 [MQTT-1.5.3-2]", out violation)
                : Fail(Protocol, "PUBLISH Topic Name with a wildcard [MQTT-3.3.2-2]", out violation);
        }

        if (!Utf8.IsValid(topic))
        {
            return Fail(Malformed, "PUBLISH Topic Name is ill-formed UTF-8 [MQTT-1.5.3-1]", out violation);
        }

        if (qos > 0)
        {
            if (!r.TryUInt16(out var id))
            {
                return Truncated("PUBLISH Packet Identifier", out violation);
            }

            if (id == 0)
            {
                return Fail(Protocol, "PUBLISH QoS > 0 with Packet Identifier 0 [MQTT-2.3.1-1]", out violation);
            }
        }

        var hasAlias = false;
        if (v5)
        {
            if (!Properties(ref r, PropertyContext.Publish, out violation, out var seen))
            {
                return false;
            }

            hasAlias = (seen & (1UL << TopicAlias)) != 0;
        }

        if (topic.Length == 0 && !hasAlias)
        {
            // A topic name has at least one character [MQTT-4.7.3-1]; v5 allows none only with a Topic Alias (§3.3.2.3.4).
            return Fail(Protocol, "PUBLISH with an empty Topic Name and no Topic Alias [MQTT-4.7.3-1]", out violation);
        }

        // The payload is the rest, any bytes (a Payload Format Indicator of 1 is checked by the receiver, if at all).
        violation = default;
        return true;
    }

    /// <summary>PUBACK, PUBREC, PUBREL, PUBCOMP [MQTT-3.4 – 3.7]: packet identifier, then (v5) reason code and properties.</summary>
    static bool Ack(int type, ref Reader r, bool v5, out PacketViolation violation)
    {
        var name = AckName(type);
        if (!r.TryUInt16(out var id))
        {
            return Truncated(name, out violation);
        }

        if (id == 0)
        {
            return Fail(Protocol, $"{name} with Packet Identifier 0 [MQTT-2.3.1-1]", out violation);
        }

        if (!v5)
        {
            // v3.1.1: the Remaining Length is exactly 2 (§3.4.1 – 3.7.1).
            return End(ref r, name, out violation);
        }

        // v5: a Remaining Length of 2 means reason 0x00 and no properties (§3.4.2.1).
        if (r.Remaining == 0)
        {
            violation = default;
            return true;
        }

        r.TryByte(out var reason);
        var known = type is (int)MqttControlPacketType.PubRel or (int)MqttControlPacketType.PubComp
            ? reason is 0x00 or 0x92 // Success, Packet Identifier not found (§3.6.2.1, §3.7.2.1)
            : reason is 0x00 or 0x10 or 0x80 or 0x83 or 0x87 or 0x90 or 0x91 or 0x97 or 0x99; // §3.4.2.1, §3.5.2.1
        if (!known)
        {
            // The sender uses one of that packet's reason codes [MQTT-3.4.2-1, 3.5.2-1, 3.6.2-1, 3.7.2-1].
            return Fail(Protocol, $"{name} with reason code 0x{reason:X2}, not one of its reason codes [MQTT-3.{type}.2-1]", out violation);
        }

        // A Remaining Length of 3 means no properties.
        if (r.Remaining > 0 && !Properties(ref r, PropertyContext.Ack, out violation))
        {
            return false;
        }

        return End(ref r, name, out violation);
    }

    /// <summary>SUBSCRIBE [MQTT-3.8]: packet identifier, (v5) properties, then at least one filter with its options.</summary>
    static bool Subscribe(ref Reader r, bool v5, out PacketViolation violation)
    {
        if (!PacketId(ref r, "SUBSCRIBE", out violation))
        {
            return false;
        }

        if (v5 && !Properties(ref r, PropertyContext.Subscribe, out violation))
        {
            return false;
        }

        if (r.Remaining == 0)
        {
            // At least one topic filter [MQTT-3.8.3-3] (v5 [MQTT-3.8.3-2]: a Protocol Error).
            return Fail(v5 ? Protocol : Malformed, "SUBSCRIBE without a topic filter [MQTT-3.8.3-3]", out violation);
        }

        while (r.Remaining > 0)
        {
            if (!r.TryString(out var filter))
            {
                return Truncated("SUBSCRIBE Topic Filter", out violation);
            }

            if (!Filter(filter, "SUBSCRIBE", out violation))
            {
                return false;
            }

            if (!r.TryByte(out var options))
            {
                return Truncated("SUBSCRIBE options", out violation);
            }

            if (!v5)
            {
                // v3.1.1: bits 7-2 reserved, QoS 0-2 [MQTT-3.8.3-4].
                if ((options & 0xFC) != 0 || (options & 0x03) == 3)
                {
                    return Fail(Malformed, "SUBSCRIBE options with reserved bits or QoS 3 [MQTT-3.8.3-4]", out violation);
                }

                continue;
            }

            // v5: bits 7-6 reserved [MQTT-3.8.3-5]; QoS 3 and Retain Handling 3 are Protocol Errors (§3.8.3.1).
            if ((options & 0xC0) != 0)
            {
                return Fail(Malformed, "SUBSCRIBE options with reserved bits set [MQTT-3.8.3-5]", out violation);
            }

            if ((options & 0x03) == 3)
            {
                return Fail(Protocol, "SUBSCRIBE Maximum QoS 3 (v5 3.8.3.1)", out violation);
            }

            if ((options & 0x30) == 0x30)
            {
                return Fail(Protocol, "SUBSCRIBE Retain Handling 3 (v5 3.8.3.1)", out violation);
            }

            // No Local on a shared subscription [MQTT-3.8.3-4 v5].
            if ((options & 0x04) != 0 && filter.StartsWith("$share/"u8))
            {
                return Fail(Protocol, "SUBSCRIBE No Local on a shared subscription [MQTT-3.8.3-4]", out violation);
            }
        }

        violation = default;
        return true;
    }

    /// <summary>UNSUBSCRIBE [MQTT-3.10]: packet identifier, (v5) properties, then at least one filter.</summary>
    static bool Unsubscribe(ref Reader r, bool v5, out PacketViolation violation)
    {
        if (!PacketId(ref r, "UNSUBSCRIBE", out violation))
        {
            return false;
        }

        if (v5 && !Properties(ref r, PropertyContext.Unsubscribe, out violation))
        {
            return false;
        }

        if (r.Remaining == 0)
        {
            // At least one topic filter [MQTT-3.10.3-2] (a Protocol Error in v5).
            return Fail(v5 ? Protocol : Malformed, "UNSUBSCRIBE without a topic filter [MQTT-3.10.3-2]", out violation);
        }

        while (r.Remaining > 0)
        {
            // UTF-8 strings [MQTT-3.10.3-1] with the filter grammar of §4.7.
            if (!r.TryString(out var filter))
            {
                return Truncated("UNSUBSCRIBE Topic Filter", out violation);
            }

            if (!Filter(filter, "UNSUBSCRIBE", out violation))
            {
                return false;
            }
        }

        violation = default;
        return true;
    }

    /// <summary>DISCONNECT [MQTT-3.14]: v3.1.1 has nothing after the fixed header; v5 a reason code and properties, both optional.</summary>
    static bool Disconnect(ref Reader r, bool v5, out PacketViolation violation)
    {
        if (!v5 || r.Remaining == 0)
        {
            return End(ref r, "DISCONNECT", out violation);
        }

        r.TryByte(out var reason);
        // One of the DISCONNECT reason codes [MQTT-3.14.2-1] (v5 §3.14.2.1).
        if (!(reason is 0x00 or 0x04 || (reason >= 0x80 && reason <= 0xA2 && reason is not (0x84 or 0x85 or 0x86 or 0x88 or 0x8A or 0x8C or 0x91 or 0x92))))
        {
            return Fail(Protocol, $"DISCONNECT reason code 0x{reason:X2} is not a DISCONNECT reason code [MQTT-3.14.2-1]", out violation);
        }

        if (r.Remaining > 0 && !Properties(ref r, PropertyContext.Disconnect, out violation))
        {
            return false;
        }

        return End(ref r, "DISCONNECT", out violation);
    }

    /// <summary>AUTH (v5 only) [MQTT-3.15]: reason code 0x00, 0x18 or 0x19, then properties with an Authentication Method.</summary>
    static bool Auth(ref Reader r, out PacketViolation violation)
    {
        if (r.Remaining == 0)
        {
            violation = default; // reason 0x00, no properties (§3.15.2.1)
            return true;
        }

        r.TryByte(out var reason);
        if (reason is not (0x00 or 0x18 or 0x19))
        {
            return Fail(Protocol, $"AUTH reason code 0x{reason:X2} [MQTT-3.15.2-1]", out violation);
        }

        if (!Properties(ref r, PropertyContext.Auth, out violation, out var seen))
        {
            return false;
        }

        if ((seen & (1UL << AuthenticationMethod)) == 0)
        {
            // "It is a Protocol Error to omit the Authentication Method" (v5 §3.15.2.2.2).
            return Fail(Protocol, "AUTH without Authentication Method (v5 3.15.2.2.2)", out violation);
        }

        return End(ref r, "AUTH", out violation);
    }

    // ---- shared pieces ---------------------------------------------------------------------------

    /// <summary>The fixed header flags a packet type must carry [MQTT-2.2.2-1, -2]; anything else is malformed.</summary>
    static bool Flags(int flags, int expected, out PacketViolation violation)
    {
        if (flags == expected)
        {
            violation = default;
            return true;
        }

        return Fail(Malformed, "reserved fixed header flags [MQTT-2.2.2-1, -2]", out violation);
    }

    /// <summary>A Packet Identifier that must be there and non-zero [MQTT-2.3.1-1].</summary>
    static bool PacketId(ref Reader r, string packet, out PacketViolation violation)
    {
        if (!r.TryUInt16(out var id))
        {
            return Truncated(packet + " Packet Identifier", out violation);
        }

        if (id == 0)
        {
            return Fail(Protocol, $"{packet} with Packet Identifier 0 [MQTT-2.3.1-1]", out violation);
        }

        violation = default;
        return true;
    }

    /// <summary>Nothing may follow the last field (v5 §2.1.4: the Remaining Length covers exactly the fields).</summary>
    static bool End(ref Reader r, string packet, out PacketViolation violation)
    {
        if (r.Remaining == 0)
        {
            violation = default;
            return true;
        }

        return Fail(Malformed, $"{packet} with bytes after its last field (Remaining Length, v5 2.1.4)", out violation);
    }

    /// <summary>A length-prefixed UTF-8 string field.</summary>
    static bool String(ref Reader r, string what, out PacketViolation violation)
    {
        if (!r.TryString(out var value))
        {
            return Truncated(what, out violation);
        }

        return Utf8Text(value, what, out violation);
    }

    /// <summary>
    /// A UTF-8 Encoded String [MQTT-1.5.3-1, -2] (v5 §1.5.4): well-formed UTF-8 (no overlong forms, no
    /// surrogates U+D800..U+DFFF, nothing above U+10FFFF) and no U+0000. Both are Malformed Packets in v5.
    /// </summary>
    static bool Utf8Text(ReadOnlySpan<byte> value, string what, out PacketViolation violation)
    {
        if (value.IndexOf((byte)0) >= 0)
        {
            return Fail(Malformed, what + " with U+0000 [MQTT-1.5.3-2]", out violation);
        }

        if (!Utf8.IsValid(value))
        {
            return Fail(Malformed, what + " is ill-formed UTF-8 [MQTT-1.5.3-1]", out violation);
        }

        violation = default;
        return true;
    }

    /// <summary>
    /// A topic filter [MQTT-4.7]: UTF-8 [MQTT-1.5.3-1, -2], at least one character [MQTT-4.7.3-1], '#' alone in
    /// the last level [MQTT-4.7.1-2], '+' alone in its level [MQTT-4.7.1-3].
    /// </summary>
    static bool Filter(ReadOnlySpan<byte> filter, string packet, out PacketViolation violation)
    {
        if (!Utf8Text(filter, packet + " Topic Filter", out violation))
        {
            return false;
        }

        if (filter.Length == 0)
        {
            return Fail(Malformed, packet + " with an empty Topic Filter [MQTT-4.7.3-1]", out violation);
        }

        var i = filter.IndexOfAny((byte)'+', (byte)'#');
        while (i >= 0)
        {
            var c = filter[i];
            var alone = (i == 0 || filter[i - 1] == '/') && (i == filter.Length - 1 || filter[i + 1] == '/');
            if (!alone)
            {
                return Fail(Malformed, $"{packet} Topic Filter with '{(char)c}' not alone in its level [MQTT-4.7.1-{(c == '#' ? 2 : 3)}]", out violation);
            }

            if (c == '#' && i != filter.Length - 1)
            {
                return Fail(Malformed, packet + " Topic Filter with '#' not last [MQTT-4.7.1-2]", out violation);
            }

            var next = filter[(i + 1)..].IndexOfAny((byte)'+', (byte)'#');
            i = next < 0 ? -1 : i + 1 + next;
        }

        violation = default;
        return true;
    }

    static string AckName(int type) => type switch
    {
        (int)MqttControlPacketType.PubAck => "PUBACK",
        (int)MqttControlPacketType.PubRec => "PUBREC",
        (int)MqttControlPacketType.PubRel => "PUBREL",
        _ => "PUBCOMP",
    };

    static bool Truncated(string what, out PacketViolation violation) =>
        Fail(Malformed, what + " runs past the end of the packet (Remaining Length, v5 2.1.4)", out violation);

    static bool Fail(MqttDisconnectReasonCode reason, string text, out PacketViolation violation)
    {
        violation = new PacketViolation(reason, text);
        return false;
    }

    // ---- v5 properties (§2.2.2) ----------------------------------------------------------------------

    enum PropertyContext
    {
        Connect,
        Will,
        Publish,
        Ack,
        Subscribe,
        Unsubscribe,
        Disconnect,
        Auth,
    }

    const int PayloadFormatIndicator = 0x01;
    const int MessageExpiryInterval = 0x02;
    const int ContentType = 0x03;
    const int ResponseTopic = 0x08;
    const int CorrelationData = 0x09;
    const int SubscriptionIdentifier = 0x0B;
    const int SessionExpiryInterval = 0x11;
    const int AuthenticationMethod = 0x15;
    const int AuthenticationData = 0x16;
    const int RequestProblemInformation = 0x17;
    const int WillDelayInterval = 0x18;
    const int RequestResponseInformation = 0x19;
    const int ServerReference = 0x1C;
    const int ReasonString = 0x1F;
    const int ReceiveMaximum = 0x21;
    const int TopicAliasMaximum = 0x22;
    const int TopicAlias = 0x23;
    const int MaximumPacketSize = 0x27;
    const int UserProperty = 0x26;

    static ulong Bits(params ReadOnlySpan<int> ids)
    {
        ulong mask = 0;
        foreach (var id in ids)
        {
            mask |= 1UL << id;
        }

        return mask;
    }

    // Which properties each packet a client sends may carry (v5 §2.2.2.2, table "Properties"). Server-only ones
    // (Maximum QoS, Assigned Client Identifier, Server Keep Alive, Response Information, ...) are not in any of them.
    static readonly ulong ConnectProperties = Bits(SessionExpiryInterval, ReceiveMaximum, MaximumPacketSize, TopicAliasMaximum,
        RequestResponseInformation, RequestProblemInformation, UserProperty, AuthenticationMethod, AuthenticationData);

    static readonly ulong WillProperties = Bits(WillDelayInterval, PayloadFormatIndicator, MessageExpiryInterval, ContentType,
        ResponseTopic, CorrelationData, UserProperty);

    static readonly ulong PublishProperties = Bits(PayloadFormatIndicator, MessageExpiryInterval, TopicAlias, ResponseTopic,
        CorrelationData, UserProperty, SubscriptionIdentifier, ContentType);

    static readonly ulong AckProperties = Bits(ReasonString, UserProperty);
    static readonly ulong SubscribeProperties = Bits(SubscriptionIdentifier, UserProperty);
    static readonly ulong UnsubscribeProperties = Bits(UserProperty);
    static readonly ulong DisconnectProperties = Bits(SessionExpiryInterval, ReasonString, UserProperty, ServerReference);
    static readonly ulong AuthProperties = Bits(AuthenticationMethod, AuthenticationData, ReasonString, UserProperty);

    static ulong Allowed(PropertyContext context) => context switch
    {
        PropertyContext.Connect => ConnectProperties,
        PropertyContext.Will => WillProperties,
        PropertyContext.Publish => PublishProperties,
        PropertyContext.Ack => AckProperties,
        PropertyContext.Subscribe => SubscribeProperties,
        PropertyContext.Unsubscribe => UnsubscribeProperties,
        PropertyContext.Disconnect => DisconnectProperties,
        _ => AuthProperties,
    };

    static string ContextName(PropertyContext context) => context switch
    {
        PropertyContext.Connect => "CONNECT",
        PropertyContext.Will => "CONNECT Will",
        PropertyContext.Publish => "PUBLISH",
        PropertyContext.Ack => "acknowledgement",
        PropertyContext.Subscribe => "SUBSCRIBE",
        PropertyContext.Unsubscribe => "UNSUBSCRIBE",
        PropertyContext.Disconnect => "DISCONNECT",
        _ => "AUTH",
    };

    static bool Properties(ref Reader r, PropertyContext context, out PacketViolation violation) =>
        Properties(ref r, context, out violation, out _);

    /// <summary>
    /// A property block: Property Length (a Variable Byte Integer) then identifier/value pairs that fill it
    /// exactly. <paramref name="seen"/> has a bit per identifier found.
    /// </summary>
    static bool Properties(ref Reader r, PropertyContext context, out PacketViolation violation, out ulong seen)
    {
        seen = 0;
        var status = r.TryVariableByteInteger(out var length);
        if (status != VbiStatus.Ok)
        {
            return VbiFailure(status, ContextName(context) + " Property Length", out violation);
        }

        if (length > r.Remaining)
        {
            return Truncated(ContextName(context) + " properties", out violation);
        }

        var p = new Reader(r.Take(length));
        var allowed = Allowed(context);
        while (p.Remaining > 0)
        {
            p.TryByte(out var id);

            // An identifier not valid for the packet type is a Malformed Packet (v5 §2.2.2.2). Every identifier is below 0x80,
            // so a byte with the continuation bit is an unknown (multi-byte) identifier as well.
            if (id >= 64 || (allowed & (1UL << id)) == 0)
            {
                return Fail(Malformed, $"{ContextName(context)} with property 0x{id:X2}, not valid there (v5 2.2.2.2)", out violation);
            }

            // Each property at most once, except User Property (v5 §3.x.2.x: "It is a Protocol Error to include ... more than once").
            var bit = 1UL << id;
            if ((seen & bit) != 0 && id != UserProperty)
            {
                return Fail(Protocol, $"{ContextName(context)} with property 0x{id:X2} more than once (v5 2.2.2.2)", out violation);
            }

            seen |= bit;
            if (!Property(ref p, id, context, out violation))
            {
                return false;
            }
        }

        if ((seen & (1UL << AuthenticationData)) != 0 && (seen & (1UL << AuthenticationMethod)) == 0)
        {
            // Authentication Data without Authentication Method (v5 §3.1.2.11.10, §3.15.2.2.3).
            return Fail(Protocol, $"{ContextName(context)} with Authentication Data but no Authentication Method (v5 3.1.2.11.10)", out violation);
        }

        violation = default;
        return true;
    }

    /// <summary>One property value: its data type (v5 §2.2.2.2) and range.</summary>
    static bool Property(ref Reader p, byte id, PropertyContext context, out PacketViolation violation)
    {
        violation = default;
        switch (id)
        {
            case PayloadFormatIndicator:
            case RequestProblemInformation:
            case RequestResponseInformation:
                if (!p.TryByte(out var flag))
                {
                    return Truncated(PropertyName(id), out violation);
                }

                // A byte that is 0 or 1 (v5 §3.3.2.3.2, "Protocol Error to have a value other than 0 or 1" §3.1.2.11.6, .7).
                return flag <= 1 || Fail(Protocol, $"{PropertyName(id)} {flag}, not 0 or 1 (v5 3.1.2.11.6)", out violation);

            case MessageExpiryInterval:
            case SessionExpiryInterval:
            case WillDelayInterval:
                return p.TrySkip(4) || Truncated(PropertyName(id), out violation);

            case MaximumPacketSize:
                if (!p.TryUInt32(out var size))
                {
                    return Truncated(PropertyName(id), out violation);
                }

                // "It is a Protocol Error ... for it to have the value 0" (v5 §3.1.2.11.4).
                return size != 0 || Fail(Protocol, "Maximum Packet Size 0 (v5 3.1.2.11.4)", out violation);

            case ReceiveMaximum:
            case TopicAlias:
                if (!p.TryUInt16(out var value))
                {
                    return Truncated(PropertyName(id), out violation);
                }

                // Receive Maximum 0 (v5 §3.1.2.11.3): a Protocol Error. Topic Alias 0 [MQTT-3.3.2-8]: also a Protocol Error, for
                // which v5 §3.3.4 names the reason: "A Topic Alias value of 0 or greater than the Maximum Topic Alias is a
                // Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94 (Topic Alias invalid)".
                return value != 0 || (id == TopicAlias
                    ? Fail(MqttDisconnectReasonCode.TopicAliasInvalid, "Topic Alias 0 [MQTT-3.3.2-8]", out violation)
                    : Fail(Protocol, "Receive Maximum 0 (v5 3.1.2.11.3)", out violation));

            case TopicAliasMaximum:
                return p.TrySkip(2) || Truncated(PropertyName(id), out violation);

            case ContentType:
            case AuthenticationMethod:
            case ReasonString:
            case ServerReference:
                return String(ref p, PropertyName(id), out violation);

            case ResponseTopic:
                if (!p.TryString(out var topic))
                {
                    return Truncated(PropertyName(id), out violation);
                }

                if (!Utf8Text(topic, PropertyName(id), out violation))
                {
                    return false;
                }

                // A topic name: no wildcards [MQTT-3.3.2-14] (will: [MQTT-3.1.3-12 v5 §3.1.3.2.5]).
                return topic.IndexOfAny((byte)'+', (byte)'#') < 0 || Fail(Protocol, "Response Topic with a wildcard [MQTT-3.3.2-14]", out violation);

            case CorrelationData:
            case AuthenticationData:
                return p.TryBinary(out _) || Truncated(PropertyName(id), out violation);

            case UserProperty:
                // A UTF-8 string pair (v5 §1.5.7): both strings follow the rules of §1.5.4.
                return String(ref p, "User Property name", out violation) && String(ref p, "User Property value", out violation);

            case SubscriptionIdentifier:
                var status = p.TryVariableByteInteger(out var subscriptionId);
                if (status != VbiStatus.Ok)
                {
                    return VbiFailure(status, PropertyName(id), out violation);
                }

                if (context == PropertyContext.Publish)
                {
                    // "A PUBLISH packet sent from a Client to a Server MUST NOT contain a Subscription Identifier" [MQTT-3.3.4-6].
                    return Fail(Protocol, "PUBLISH from a client with a Subscription Identifier [MQTT-3.3.4-6]", out violation);
                }

                // 1 to 268,435,455; "It is a Protocol Error if the Subscription Identifier has a value of 0" (v5 §3.8.2.1.2).
                return subscriptionId != 0 || Fail(Protocol, "Subscription Identifier 0 (v5 3.8.2.1.2)", out violation);

            default:
                return Fail(Malformed, $"property 0x{id:X2} not valid here (v5 2.2.2.2)", out violation);
        }
    }

    static string PropertyName(int id) => id switch
    {
        PayloadFormatIndicator => "Payload Format Indicator",
        MessageExpiryInterval => "Message Expiry Interval",
        ContentType => "Content Type",
        ResponseTopic => "Response Topic",
        CorrelationData => "Correlation Data",
        SubscriptionIdentifier => "Subscription Identifier",
        SessionExpiryInterval => "Session Expiry Interval",
        AuthenticationMethod => "Authentication Method",
        AuthenticationData => "Authentication Data",
        RequestProblemInformation => "Request Problem Information",
        WillDelayInterval => "Will Delay Interval",
        RequestResponseInformation => "Request Response Information",
        ServerReference => "Server Reference",
        ReasonString => "Reason String",
        ReceiveMaximum => "Receive Maximum",
        TopicAliasMaximum => "Topic Alias Maximum",
        TopicAlias => "Topic Alias",
        MaximumPacketSize => "Maximum Packet Size",
        _ => "property",
    };

    static bool VbiFailure(VbiStatus status, string what, out PacketViolation violation) => status switch
    {
        VbiStatus.TooLong => Fail(Malformed, what + ": Variable Byte Integer longer than four bytes [MQTT-1.5.5-1]", out violation),
        VbiStatus.NotMinimal => Fail(Malformed, what + ": Variable Byte Integer not in its shortest form [MQTT-1.5.5-1]", out violation),
        _ => Truncated(what, out violation),
    };

    enum VbiStatus
    {
        Ok,
        Truncated,
        TooLong,
        NotMinimal,
    }

    /// <summary>A cursor over the body; every read is bounds-checked and reports a short read instead of throwing.</summary>
    ref struct Reader(ReadOnlySpan<byte> span)
    {
        ReadOnlySpan<byte> _span = span;

        public readonly int Remaining => _span.Length;

        public bool TryByte(out byte value)
        {
            if (_span.IsEmpty)
            {
                value = 0;
                return false;
            }

            value = _span[0];
            _span = _span[1..];
            return true;
        }

        public bool TryUInt16(out ushort value)
        {
            if (!BinaryPrimitives.TryReadUInt16BigEndian(_span, out value))
            {
                return false;
            }

            _span = _span[2..];
            return true;
        }

        public bool TryUInt32(out uint value)
        {
            if (!BinaryPrimitives.TryReadUInt32BigEndian(_span, out value))
            {
                return false;
            }

            _span = _span[4..];
            return true;
        }

        public bool TrySkip(int count)
        {
            if (_span.Length < count)
            {
                return false;
            }

            _span = _span[count..];
            return true;
        }

        public ReadOnlySpan<byte> Take(int count)
        {
            var taken = _span[..count];
            _span = _span[count..];
            return taken;
        }

        /// <summary>Two-byte length, then that many bytes (§1.5.4 strings, §1.5.6 binary data).</summary>
        public bool TryString(out ReadOnlySpan<byte> value)
        {
            if (!BinaryPrimitives.TryReadUInt16BigEndian(_span, out var length) || _span.Length - 2 < length)
            {
                value = default;
                return false;
            }

            value = _span.Slice(2, length);
            _span = _span[(2 + length)..];
            return true;
        }

        public bool TryBinary(out ReadOnlySpan<byte> value) => TryString(out value);

        /// <summary>A Variable Byte Integer [MQTT-1.5.5-1]: at most four bytes, in the fewest bytes that hold the value.</summary>
        public VbiStatus TryVariableByteInteger(out int value)
        {
            value = 0;
            var multiplier = 1;
            for (var i = 0; i < 4; i++)
            {
                if (i >= _span.Length)
                {
                    return VbiStatus.Truncated;
                }

                var b = _span[i];
                value += (b & 0x7F) * multiplier;
                if ((b & 0x80) == 0)
                {
                    _span = _span[(i + 1)..];
                    return i > 0 && b == 0 ? VbiStatus.NotMinimal : VbiStatus.Ok;
                }

                multiplier *= 128;
            }

            return VbiStatus.TooLong;
        }
    }
}
