using System.Buffers;
using System.Text;
using Broker.Engine.Connections;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Tests;

/// <summary>
/// The wire grammar check that runs before MQTTnet decodes a packet: what MQTTnet's own encoder writes passes, and
/// each rule has a packet that breaks it, built by hand or by editing encoded bytes, with the statement it breaks.
/// </summary>
public sealed class PacketValidatorTests
{
    const MqttProtocolVersion V3 = MqttProtocolVersion.V311;
    const MqttProtocolVersion V5 = MqttProtocolVersion.V500;
    const MqttDisconnectReasonCode Malformed = MqttDisconnectReasonCode.MalformedPacket;
    const MqttDisconnectReasonCode Protocol = MqttDisconnectReasonCode.ProtocolError;

    // ---- helpers ---------------------------------------------------------------------------------

    /// <summary>MQTTnet's encoding of a packet, split into fixed header byte and body.</summary>
    static (byte Header, byte[] Body) Encode(MqttPacket packet, MqttProtocolVersion version)
    {
        var bytes = new MqttPacketFormatterAdapter(version, new MqttBufferWriter(4096, 65536)).Encode(packet).Join().ToArray();
        var i = 1;
        while ((bytes[i] & 0x80) != 0)
        {
            i++;
        }

        return (bytes[0], bytes[(i + 1)..]);
    }

    static bool Validate(byte header, byte[] body, MqttProtocolVersion version, out PacketViolation violation) =>
        PacketValidator.TryValidate(header, new ReadOnlySequence<byte>(body), version, out violation);

    static void Valid(byte header, byte[] body, MqttProtocolVersion version)
    {
        var ok = Validate(header, body, version, out var violation);
        Assert.True(ok, $"rejected: {violation.Text} ({Convert.ToHexString(body)})");
    }

    static void Valid(MqttPacket packet, MqttProtocolVersion version)
    {
        var (header, body) = Encode(packet, version);
        Valid(header, body, version);
    }

    /// <summary>Rejected with this reason, and the text cites <paramref name="statement"/>.</summary>
    static void Invalid(byte header, byte[] body, MqttProtocolVersion version, MqttDisconnectReasonCode reason, string statement)
    {
        Assert.False(Validate(header, body, version, out var violation), $"accepted {header:X2} {Convert.ToHexString(body)}");
        Assert.Equal(reason, violation.Reason);
        Assert.Contains(statement, violation.Text, StringComparison.Ordinal);
    }

    /// <summary>Concatenates bytes, byte arrays and strings (written as MQTT UTF-8 strings with a two-byte length).</summary>
    static byte[] B(params object[] parts)
    {
        var all = new List<byte>();
        foreach (var part in parts)
        {
            switch (part)
            {
                case byte b:
                    all.Add(b);
                    break;
                case int i:
                    all.Add(checked((byte)i));
                    break;
                case byte[] bytes:
                    all.AddRange(bytes);
                    break;
                case string s:
                    all.AddRange(S(Encoding.UTF8.GetBytes(s)));
                    break;
                default:
                    throw new ArgumentException(part.GetType().Name);
            }
        }

        return [.. all];
    }

    /// <summary>A length-prefixed string of raw bytes (for ill-formed UTF-8).</summary>
    static byte[] S(params byte[] raw) => [(byte)(raw.Length >> 8), (byte)raw.Length, .. raw];

    /// <summary>A v5 property block: its length (one byte here) then the properties.</summary>
    static byte[] P(params object[] properties)
    {
        var body = B(properties);
        return [(byte)body.Length, .. body];
    }

    static readonly byte[] NoProperties = [0x00];

    static MqttUserProperty Prop(string name, string value) => new(name, Encoding.UTF8.GetBytes(value));

    /// <summary>A v3.1.1 or v5 CONNECT body with the given flags, properties (v5) and payload.</summary>
    static byte[] ConnectBody(MqttProtocolVersion version, int flags, byte[]? properties, params object[] payload) =>
        version == V5
            ? B("MQTT", 5, flags, 0, 60, properties ?? NoProperties, B(payload))
            : B("MQTT", 4, flags, 0, 60, B(payload));

    // ---- what MQTTnet writes passes --------------------------------------------------------------

    public static TheoryData<MqttProtocolVersion> Versions => new() { V3, V5 };

    [Theory]
    [MemberData(nameof(Versions))]
    public void ValidPackets_OfEveryType_Pass(MqttProtocolVersion version)
    {
        var v5 = version == V5;
        Valid(new MqttConnectPacket
        {
            ClientId = "client-ü-1",
            CleanSession = true,
            KeepAlivePeriod = 30,
            Username = "user",
            Password = [1, 2, 3],
            WillFlag = true,
            WillTopic = "will/topic",
            WillMessage = [9, 9],
            WillQoS = MqttQualityOfServiceLevel.AtLeastOnce,
            WillRetain = true,
            SessionExpiryInterval = v5 ? 300u : 0u,
            ReceiveMaximum = v5 ? (ushort)10 : (ushort)0,
            MaximumPacketSize = v5 ? 4096u : 0u,
            TopicAliasMaximum = v5 ? (ushort)5 : (ushort)0,
            RequestProblemInformation = true,
            RequestResponseInformation = v5,
            UserProperties = v5 ? [Prop("k", "v"), Prop("k", "v2")] : null,
            WillDelayInterval = v5 ? 10u : 0u,
            WillContentType = v5 ? "text/plain" : null,
            WillResponseTopic = v5 ? "reply/here" : null,
            WillCorrelationData = v5 ? [7] : null,
            WillPayloadFormatIndicator = v5 ? MqttPayloadFormatIndicator.CharacterData : MqttPayloadFormatIndicator.Unspecified,
            WillMessageExpiryInterval = v5 ? 60u : 0u,
        }, version);

        foreach (var qos in new[] { MqttQualityOfServiceLevel.AtMostOnce, MqttQualityOfServiceLevel.AtLeastOnce, MqttQualityOfServiceLevel.ExactlyOnce })
        {
            Valid(new MqttPublishPacket
            {
                Topic = "a/b/ü/€/𝄞",
                QualityOfServiceLevel = qos,
                PacketIdentifier = qos == MqttQualityOfServiceLevel.AtMostOnce ? (ushort)0 : (ushort)7,
                Dup = qos != MqttQualityOfServiceLevel.AtMostOnce,
                Retain = true,
                Payload = new ReadOnlySequence<byte>([0, 0xFF, 0xC0, 0x80]), // any bytes in a payload
                ContentType = v5 ? "application/json" : null,
                ResponseTopic = v5 ? "reply/to" : null,
                CorrelationData = v5 ? [1, 2] : null,
                MessageExpiryInterval = v5 ? 10u : 0u,
                PayloadFormatIndicator = MqttPayloadFormatIndicator.Unspecified,
                TopicAlias = v5 ? (ushort)3 : (ushort)0,
                UserProperties = v5 ? [Prop("a", "1"), Prop("a", "2")] : null,
            }, version);
        }

        Valid(new MqttPubAckPacket { PacketIdentifier = 1, ReasonCode = v5 ? MqttPubAckReasonCode.NoMatchingSubscribers : 0 }, version);
        Valid(new MqttPubRecPacket { PacketIdentifier = 2, ReasonCode = v5 ? MqttPubRecReasonCode.QuotaExceeded : 0, ReasonString = v5 ? "full" : null }, version);
        Valid(new MqttPubRelPacket { PacketIdentifier = 3, ReasonCode = v5 ? MqttPubRelReasonCode.PacketIdentifierNotFound : 0 }, version);
        Valid(new MqttPubCompPacket { PacketIdentifier = 4, UserProperties = v5 ? [Prop("x", "y")] : null }, version);
        Valid(new MqttSubscribePacket
        {
            PacketIdentifier = 5,
            SubscriptionIdentifier = v5 ? 268_435_455u : 0u,
            UserProperties = v5 ? [Prop("x", "y")] : null,
            TopicFilters =
            [
                new MqttTopicFilter { Topic = "a/+/b", QualityOfServiceLevel = MqttQualityOfServiceLevel.ExactlyOnce },
                new MqttTopicFilter { Topic = "#", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtMostOnce },
                new MqttTopicFilter { Topic = "+", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce },
                new MqttTopicFilter { Topic = "a//#" },
                new MqttTopicFilter
                {
                    Topic = "$share/g/s/#",
                    RetainAsPublished = v5,
                    RetainHandling = v5 ? MqttRetainHandling.DoNotSendOnSubscribe : 0,
                },
            ],
        }, version);
        Valid(new MqttUnsubscribePacket { PacketIdentifier = 6, TopicFilters = ["a/+/b", "#", "$share/g/s/#"] }, version);
        Valid(MqttPingReqPacket.Instance, version);
        Valid(new MqttDisconnectPacket(), version);
        if (v5)
        {
            Valid(new MqttDisconnectPacket { ReasonCode = MqttDisconnectReasonCode.DisconnectWithWillMessage, SessionExpiryInterval = 5, ReasonString = "bye" }, version);
            Valid(new MqttAuthPacket { ReasonCode = MqttAuthenticateReasonCode.ContinueAuthentication, AuthenticationMethod = "SCRAM", AuthenticationData = [1] }, version);
            Valid(new MqttConnectPacket { ClientId = "c", AuthenticationMethod = "SCRAM", AuthenticationData = [1, 2] }, version);
        }
    }

    [Fact]
    public void ValidV5_ShortForms_Pass()
    {
        Valid(0x40, [0x00, 0x01], V5); // PUBACK with Remaining Length 2: reason 0x00, no properties (v5 3.4.2.1)
        Valid(0x40, [0x00, 0x01, 0x10], V5); // reason, no properties
        Valid(0x62, [0x00, 0x01, 0x92, 0x00], V5); // PUBREL 0x92, empty properties
        Valid(0xE0, [], V5); // DISCONNECT 0x00
        Valid(0xE0, [0x04], V5); // DISCONNECT with will
        Valid(0xF0, [], V5); // AUTH 0x00
        Valid(0x30, B("", P(0x23, 0, 1), (byte)'x'), V5); // empty topic with a Topic Alias (v5 3.3.2.3.4)
    }

    [Fact]
    public void ConnectV311_EmptyClientIdCleanSession0_LeftToTheConnectHandler()
    {
        // [MQTT-3.1.3-7] is answered with CONNACK 0x02, not a close: the grammar is fine, the value is refused later.
        Valid(0x10, ConnectBody(V3, 0x00, null, ""), V3);
        Valid(0x10, B("MQIsdp", 3, 0x02, 0, 60, "c"), MqttProtocolVersion.V310); // v3.1
    }

    [Fact]
    public void MultiSegmentBody_SameAnswer()
    {
        var body = B("a/b", 0, 1, (byte)'x');
        var first = new Segment(body.AsMemory(0, 2));
        var last = first.Append(body.AsMemory(2));
        var split = new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);
        Assert.True(PacketValidator.TryValidate(0x32, split, V3, out _));
        Assert.False(PacketValidator.TryValidate(0x32, split.Slice(0, 4), V3, out var violation));
        Assert.Equal(Malformed, violation.Reason);

        var big = B("a/b", 0, 1, new byte[2000]);
        var bigFirst = new Segment(big.AsMemory(0, 3));
        var bigLast = bigFirst.Append(big.AsMemory(3));
        Assert.True(PacketValidator.TryValidate(0x32, new ReadOnlySequence<byte>(bigFirst, 0, bigLast, bigLast.Memory.Length), V3, out _));
    }

    sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory) => Memory = memory;

        public Segment Append(ReadOnlyMemory<byte> memory)
        {
            var next = new Segment(memory) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }

    // ---- fixed header --------------------------------------------------------------------------

    [Theory]
    [InlineData(0x11)] // CONNECT flags must be 0000
    [InlineData(0x41)] // PUBACK
    [InlineData(0x58)] // PUBREC
    [InlineData(0x60)] // PUBREL must be 0010 [MQTT-3.6.1-1]
    [InlineData(0x72)] // PUBCOMP
    [InlineData(0x80)] // SUBSCRIBE must be 0010 [MQTT-3.8.1-1]
    [InlineData(0x83)]
    [InlineData(0xA0)] // UNSUBSCRIBE must be 0010 [MQTT-3.10.1-1]
    [InlineData(0xC1)] // PINGREQ
    [InlineData(0xE2)] // DISCONNECT
    public void ReservedFlags_Malformed(byte header)
    {
        // [MQTT-2.2.2-1, -2]: flags other than the ones listed for the packet type are malformed.
        var body = (header >> 4) switch
        {
            1 => ConnectBody(V3, 0x02, null, "c"),
            8 => B(0, 1, "a", 0),
            10 => B(0, 1, "a"),
            12 or 14 => [],
            _ => B(0, 1),
        };
        Invalid(header, body, V3, Malformed, "MQTT-2.2.2-1");
        Invalid(header, (header >> 4) == 1 ? ConnectBody(V5, 0x02, null, "c") : body, V5, Malformed, "MQTT-2.2.2-1");
    }

    [Fact]
    public void ReservedAndServerPacketTypes_Rejected()
    {
        Invalid(0x00, [], V3, Malformed, "MQTT-2.2.1"); // type 0 is reserved
        Invalid(0xF0, [], V3, Malformed, "MQTT-2.2.1"); // 15 is reserved in v3.1.1 (AUTH is v5 only)
        Invalid(0x20, [0, 0], V3, Protocol, "MQTT-4.8.0-1"); // CONNACK from a client
        Invalid(0x90, [0, 1, 0], V5, Protocol, "MQTT-4.8.0-1"); // SUBACK
        Invalid(0xD0, [], V5, Protocol, "MQTT-4.8.0-1"); // PINGRESP
    }

    // ---- CONNECT ---------------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public void Connect_FlagRules(MqttProtocolVersion version)
    {
        Invalid(0x10, ConnectBody(version, 0x03, null, "c"), version, Malformed, "MQTT-3.1.2-3"); // reserved flag
        Invalid(0x10, ConnectBody(version, 0x0A, null, "c"), version, Malformed, "MQTT-3.1.2-13"); // Will QoS 1, no Will Flag
        Invalid(0x10, ConnectBody(version, 0x22, null, "c"), version, Malformed, "MQTT-3.1.2-15"); // Will Retain, no Will Flag
        var willProperties = version == V5 ? NoProperties : [];
        Invalid(0x10, ConnectBody(version, 0x1E, null, "c", willProperties, "w", "m"), version, Malformed, "MQTT-3.1.2-14"); // Will QoS 3
        Valid(0x10, ConnectBody(version, 0x16, null, "c", willProperties, "w", "m"), version); // Will QoS 2 is fine
    }

    [Fact]
    public void Connect_PasswordWithoutUserName_V311Only()
    {
        // [MQTT-3.1.2-22]: v3.1.1 needs the User Name Flag for a password; v5 does not (3.1.2.9).
        Invalid(0x10, ConnectBody(V3, 0x42, null, "c", "pw"), V3, Malformed, "MQTT-3.1.2-22");
        Valid(0x10, ConnectBody(V5, 0x42, null, "c", "pw"), V5);
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void Connect_FieldsAndStrings(MqttProtocolVersion version)
    {
        Invalid(0x10, ConnectBody(version, 0x02, null, "c", (byte)0), version, Malformed, "after its last field"); // trailing byte
        Invalid(0x10, ConnectBody(version, 0x02, null, B(0, 5, (byte)'c')), version, Malformed, "runs past"); // truncated client id
        Invalid(0x10, ConnectBody(version, 0x82, null, "c"), version, Malformed, "runs past"); // User Name Flag, no user name
        Invalid(0x10, ConnectBody(version, 0x02, null, S(0x63, 0xFF)), version, Malformed, "MQTT-1.5.3-1"); // client id ill-formed
        Invalid(0x10, ConnectBody(version, 0x02, null, S(0x63, 0x00)), version, Malformed, "MQTT-1.5.3-2"); // client id U+0000
        Invalid(0x10, ConnectBody(version, 0x82, null, "c", S(0xED, 0xA0, 0x80)), version, Malformed, "MQTT-1.5.3-1"); // user name: a surrogate
        var willProperties = version == V5 ? NoProperties : [];
        Invalid(0x10, ConnectBody(version, 0x06, null, "c", willProperties, S(0xC0, 0xAF), "m"), version, Malformed, "MQTT-1.5.3-1"); // overlong '/'
    }

    [Fact]
    public void ConnectV5_Properties()
    {
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x21, 0, 0), "c"), V5, Protocol, "Receive Maximum 0");
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x27, 0, 0, 0, 0), "c"), V5, Protocol, "Maximum Packet Size 0");
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x17, 2), "c"), V5, Protocol, "not 0 or 1");
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x19, 7), "c"), V5, Protocol, "not 0 or 1");
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 2), "c"), V5, Protocol, "more than once");
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x16, 0, 1, 9), "c"), V5, Protocol, "no Authentication Method");
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x24, 1), "c"), V5, Malformed, "not valid there"); // Maximum QoS: CONNACK only
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x01, 1), "c"), V5, Malformed, "not valid there"); // a will property outside the will
        Invalid(0x10, ConnectBody(V5, 0x02, P(0x26, "k", S(0x76, 0x00)), "c"), V5, Malformed, "MQTT-1.5.3-2"); // user property value
        Invalid(0x10, ConnectBody(V5, 0x02, [0x20, 0x11, 0, 0], "c"), V5, Malformed, "runs past"); // Property Length beyond the packet
        Invalid(0x10, ConnectBody(V5, 0x06, null, "c", P(0x23, 0, 1), "w", "m"), V5, Malformed, "not valid there"); // Topic Alias in the will
        Invalid(0x10, ConnectBody(V5, 0x06, null, "c", P(0x01, 2), "w", "m"), V5, Protocol, "not 0 or 1"); // will Payload Format Indicator
        Invalid(0x10, ConnectBody(V5, 0x06, null, "c", P(0x08, "r/#"), "w", "m"), V5, Protocol, "MQTT-3.3.2-14");
        Invalid(0x10, ConnectBody(V5, 0x02, [0x80, 0x00], "c"), V5, Malformed, "MQTT-1.5.5-1"); // Property Length 0 in two bytes
        Invalid(0x10, ConnectBody(V5, 0x02, [0xFF, 0xFF, 0xFF, 0xFF, 0x7F], "c"), V5, Malformed, "MQTT-1.5.5-1"); // five bytes
    }

    // ---- PUBLISH ---------------------------------------------------------------------------------

    [Theory]
    [MemberData(nameof(Versions))]
    public void Publish_TopicName(MqttProtocolVersion version)
    {
        var props = version == V5 ? NoProperties : [];
        Invalid(0x30, B("a/+", props), version, Protocol, "MQTT-3.3.2-2");
        Invalid(0x30, B("a/#", props), version, Protocol, "MQTT-3.3.2-2");
        Invalid(0x30, B("+", props), version, Protocol, "MQTT-3.3.2-2");
        Invalid(0x30, B(S(0x61, 0x00, 0x62), props), version, Malformed, "MQTT-1.5.3-2");
        Invalid(0x30, B(S(0x61, 0xC3, 0x28), props), version, Malformed, "MQTT-1.5.3-1"); // bad continuation byte
        Invalid(0x30, B(S(0xED, 0xBF, 0xBF), props), version, Malformed, "MQTT-1.5.3-1"); // U+DFFF, a surrogate
        Invalid(0x30, B(S(0xF4, 0x90, 0x80, 0x80), props), version, Malformed, "MQTT-1.5.3-1"); // above U+10FFFF
        Invalid(0x30, B(S(0xE2, 0x82), props), version, Malformed, "MQTT-1.5.3-1"); // cut in the middle of a character
        Invalid(0x30, B("", props), version, Protocol, "MQTT-4.7.3-1"); // empty, and no Topic Alias
        Invalid(0x30, B(0, 9, (byte)'a'), version, Malformed, "runs past"); // topic length beyond the packet
        Invalid(0x30, [0x00], version, Malformed, "runs past");
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void Publish_FlagsAndPacketIdentifier(MqttProtocolVersion version)
    {
        var props = version == V5 ? NoProperties : [];
        Invalid(0x36, B("a", 0, 1, props), version, Malformed, "MQTT-3.3.1-4"); // QoS 3
        Invalid(0x38, B("a", props), version, Malformed, "MQTT-3.3.1-2"); // DUP on QoS 0
        Invalid(0x32, B("a", 0, 0, props), version, Protocol, "MQTT-2.3.1-1"); // QoS 1, id 0
        Invalid(0x34, B("a", 0, 0, props), version, Protocol, "MQTT-2.3.1-1"); // QoS 2, id 0
        Invalid(0x32, B("a", 0), version, Malformed, "runs past"); // half a packet identifier
        Valid(0x3D, B("a", 0, 1, props), version); // QoS 2, DUP, retain
    }

    [Fact]
    public void Publish_CrashRepro_V311PacketIdentifier0()
    {
        // The fuzz finding: 33 0c 00 07 "repro/t" 00 00 'x' is PUBLISH QoS 1 retain with packet id 0 [MQTT-2.3.1-1].
        Invalid(0x33, Convert.FromHexString("0007726570726F2F74000078"), V3, Protocol, "MQTT-2.3.1-1");
    }

    [Fact]
    public void PublishV5_Properties()
    {
        Invalid(0x30, B("a", P(0x01, 2)), V5, Protocol, "not 0 or 1"); // Payload Format Indicator 2
        Invalid(0x30, B("a", P(0x01, 1, 0x01, 1)), V5, Protocol, "more than once");
        Invalid(0x30, B("a", P(0x02, 0, 0, 0, 1, 0x02, 0, 0, 0, 1)), V5, Protocol, "more than once");
        Invalid(0x30, B("a", P(0x03, "x", 0x03, "y")), V5, Protocol, "more than once");
        Invalid(0x30, B("a", P(0x23, 0, 0)), V5, MqttDisconnectReasonCode.TopicAliasInvalid, "MQTT-3.3.2-8"); // Topic Alias 0: 0x94 (v5 3.3.4)
        Invalid(0x30, B("a", P(0x0B, 1)), V5, Protocol, "MQTT-3.3.4-6"); // Subscription Identifier from a client
        Invalid(0x30, B("a", P(0x24, 1)), V5, Malformed, "not valid there"); // Maximum QoS
        Invalid(0x30, B("a", P(0x11, 0, 0, 0, 1)), V5, Malformed, "not valid there"); // Session Expiry Interval
        Invalid(0x30, B("a", P(0x7F)), V5, Malformed, "not valid there"); // unknown identifier
        Invalid(0x30, B("a", P(0x03, S(0xFF))), V5, Malformed, "MQTT-1.5.3-1"); // Content Type
        Invalid(0x30, B("a", P(0x08, "r/+")), V5, Protocol, "MQTT-3.3.2-14"); // Response Topic with a wildcard
        Invalid(0x30, B("a", P(0x26, S(0xC0, 0x80), "v")), V5, Malformed, "MQTT-1.5.3-1"); // user property name: overlong U+0000
        Invalid(0x30, B("a", P(0x26, "k")), V5, Malformed, "runs past"); // user property without its value
        Invalid(0x30, B("a", P(0x02, 0, 0)), V5, Malformed, "runs past"); // a four-byte integer cut short
        Invalid(0x30, B("a", new byte[] { 0x09, 0x01, 0x01 }), V5, Malformed, "runs past"); // Property Length beyond the packet
        Invalid(0x30, B("a"), V5, Malformed, "runs past"); // no Property Length at all
        Valid(0x30, B("a", P(0x26, "k", "v", 0x26, "k", "v")), V5); // User Property may repeat
    }

    // ---- acknowledgements ------------------------------------------------------------------------

    [Theory]
    [InlineData(0x40)]
    [InlineData(0x50)]
    [InlineData(0x62)]
    [InlineData(0x70)]
    public void Acks(byte header)
    {
        Invalid(header, [0, 0], V3, Protocol, "MQTT-2.3.1-1");
        Invalid(header, [0, 0], V5, Protocol, "MQTT-2.3.1-1");
        Invalid(header, [0], V3, Malformed, "runs past");
        Invalid(header, [0, 1, 0], V3, Malformed, "after its last field"); // v3.1.1: Remaining Length is 2
        Invalid(header, [0, 1, 0x05], V5, Protocol, ".2-1]"); // not a reason code of this packet
        Invalid(header, [0, 1, 0x00, 0x02, 0x24, 0x01], V5, Malformed, "not valid there");
        Invalid(header, [0, 1, 0x00, 0x08, 0x1F, 0, 1, 0x61, 0x1F, 0, 1, 0x62], V5, Protocol, "more than once"); // Reason String twice
        Invalid(header, [0, 1, 0x00, 0x00, 0x00], V5, Malformed, "after its last field");
        Invalid(header, [0, 1, 0x00, 0x04, 0x1F, 0, 1, 0xFE], V5, Malformed, "MQTT-1.5.3-1");
    }

    // ---- SUBSCRIBE and UNSUBSCRIBE ---------------------------------------------------------------

    [Theory]
    [InlineData("", "MQTT-4.7.3-1")]
    [InlineData("a/#/b", "MQTT-4.7.1-2")]
    [InlineData("a/b#", "MQTT-4.7.1-2")]
    [InlineData("#/", "MQTT-4.7.1-2")]
    [InlineData("a+/b", "MQTT-4.7.1-3")]
    [InlineData("a/+b", "MQTT-4.7.1-3")]
    [InlineData("++", "MQTT-4.7.1-3")]
    public void Subscribe_And_Unsubscribe_FilterGrammar(string filter, string statement)
    {
        foreach (var version in new[] { V3, V5 })
        {
            var props = version == V5 ? NoProperties : [];
            Invalid(0x82, B(0, 1, props, "ok/#", 0, filter, 1), version, Malformed, statement);
            Invalid(0xA2, B(0, 1, props, "ok/#", filter), version, Malformed, statement);
        }
    }

    [Theory]
    [MemberData(nameof(Versions))]
    public void Subscribe_Structure(MqttProtocolVersion version)
    {
        var v5 = version == V5;
        var props = v5 ? NoProperties : [];
        Invalid(0x82, B(0, 0, props, "a", 0), version, Protocol, "MQTT-2.3.1-1");
        Invalid(0x82, B(0, 1, props), version, v5 ? Protocol : Malformed, "MQTT-3.8.3-3");
        Invalid(0x82, B(0, 1, props, "a"), version, Malformed, "runs past"); // no options byte
        Invalid(0x82, B(0, 1, props, "a", 0, 0), version, Malformed, "runs past"); // a trailing byte is a cut filter
        Invalid(0x82, B(0, 1, props, S(0x61, 0x00), 0), version, Malformed, "MQTT-1.5.3-2");
        Invalid(0x82, B(0, 1, props, S(0xF8, 0x88, 0x80, 0x80, 0x80), 0), version, Malformed, "MQTT-1.5.3-1"); // five-byte form
        Invalid(0x82, B(0, 1, props, "a", 0xC0), version, Malformed, v5 ? "MQTT-3.8.3-5" : "MQTT-3.8.3-4");
        Invalid(0x82, B(0, 1, props, "a", 3), version, v5 ? Protocol : Malformed, v5 ? "3.8.3.1" : "MQTT-3.8.3-4");
        Invalid(0xA2, B(0, 0, props, "a"), version, Protocol, "MQTT-2.3.1-1");
        Invalid(0xA2, B(0, 1, props), version, v5 ? Protocol : Malformed, "MQTT-3.10.3-2");
        Invalid(0xA2, B(0, 1, props, S(0xE0, 0x80, 0xAF)), version, Malformed, "MQTT-1.5.3-1"); // overlong
        if (!v5)
        {
            Invalid(0x82, B(0, 1, "a", 0x04), version, Malformed, "MQTT-3.8.3-4"); // No Local is a reserved bit in v3.1.1
        }
    }

    [Fact]
    public void SubscribeV5_OptionsAndProperties()
    {
        Invalid(0x82, B(0, 1, NoProperties, "a", 0x30), V5, Protocol, "Retain Handling 3");
        Invalid(0x82, B(0, 1, NoProperties, "$share/g/a", 0x04), V5, Protocol, "MQTT-3.8.3-4"); // No Local on a shared subscription
        Valid(0x82, B(0, 1, NoProperties, "a", 0x2E), V5); // No Local, Retain As Published, Retain Handling 2, QoS 2
        Invalid(0x82, B(0, 1, P(0x0B, 0), "a", 0), V5, Protocol, "Subscription Identifier 0");
        Invalid(0x82, B(0, 1, P(0x0B, 1, 0x0B, 2), "a", 0), V5, Protocol, "more than once");
        Invalid(0x82, B(0, 1, P(0x0B, 0xFF, 0xFF, 0xFF, 0xFF, 0x7F), "a", 0), V5, Malformed, "MQTT-1.5.5-1");
        Invalid(0x82, B(0, 1, P(0x0B, 0x81, 0x00), "a", 0), V5, Malformed, "MQTT-1.5.5-1"); // not the shortest form
        Invalid(0x82, B(0, 1, P(0x0B, 0x81), "a", 0), V5, Malformed, "runs past");
        Invalid(0x82, B(0, 1, P(0x1F, "r"), "a", 0), V5, Malformed, "not valid there"); // Reason String is not a SUBSCRIBE property
        Invalid(0xA2, B(0, 1, P(0x0B, 1), "a"), V5, Malformed, "not valid there"); // nor Subscription Identifier in UNSUBSCRIBE
    }

    // ---- PINGREQ, DISCONNECT, AUTH ----------------------------------------------------------------

    [Fact]
    public void PingReqAndDisconnect_NoBody()
    {
        Invalid(0xC0, [0], V3, Malformed, "after its last field");
        Invalid(0xC0, [0], V5, Malformed, "after its last field");
        Invalid(0xE0, [0], V3, Malformed, "after its last field");
    }

    [Fact]
    public void DisconnectV5()
    {
        Invalid(0xE0, [0x84], V5, Protocol, "MQTT-3.14.2-1");
        Invalid(0xE0, [0x01], V5, Protocol, "MQTT-3.14.2-1");
        Invalid(0xE0, [0x00, 0x02, 0x24, 0x01], V5, Malformed, "not valid there");
        Invalid(0xE0, [0x00, 0x0A, 0x11, 0, 0, 0, 1, 0x11, 0, 0, 0, 1], V5, Protocol, "more than once");
        Invalid(0xE0, [0x00, 0x00, 0x00], V5, Malformed, "after its last field");
        Valid(0xE0, [0x98, 0x00], V5);
    }

    [Fact]
    public void AuthV5()
    {
        Invalid(0xF0, [0x01, 0x00], V5, Protocol, "MQTT-3.15.2-1");
        Invalid(0xF0, [0x18, 0x00], V5, Protocol, "Authentication Method");
        Invalid(0xF0, B(0x18, P(0x15, "M", 0x15, "M")), V5, Protocol, "more than once");
        Invalid(0xF1, [], V5, Malformed, "MQTT-2.2.2-1");
        Valid(0xF0, B(0x19, P(0x15, "M")), V5);
    }
}
