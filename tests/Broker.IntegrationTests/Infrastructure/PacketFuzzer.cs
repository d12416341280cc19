using System.Buffers;
using System.Text;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>One MQTT packet as sent: the fixed header's first byte and the body after the Remaining Length.</summary>
internal sealed record Frame(byte Header, byte[] Body)
{
    /// <summary>The wire bytes, with a Remaining Length that matches the body: the broker always reads the next packet where it begins.</summary>
    public byte[] ToBytes()
    {
        var bytes = new List<byte>(Body.Length + 5) { Header };
        var length = Body.Length;
        do
        {
            var b = (byte)(length % 128);
            length /= 128;
            bytes.Add(length > 0 ? (byte)(b | 0x80) : b);
        }
        while (length > 0);

        bytes.AddRange(Body);
        return [.. bytes];
    }

    public string Hex => $"{Header:X2} {Convert.ToHexString(Body)}";

    public static Frame FromBytes(byte[] bytes)
    {
        var i = 1;
        while ((bytes[i] & 0x80) != 0)
        {
            i++;
        }

        return new Frame(bytes[0], bytes[(i + 1)..]);
    }

    public static Frame FromHex(string hex) => FromBytes(Convert.FromHexString(hex.Replace(" ", "", StringComparison.Ordinal)));
}

/// <summary>
/// Seeded mutation of valid packets: bit flips, byte insert and delete, length fields changed, bodies cut or
/// extended, v5 properties duplicated or given out-of-range values, strings corrupted with ill-formed UTF-8, U+0000
/// or wildcards. Every mutation keeps the frame's Remaining Length equal to its body, so a PINGREQ sent after it is
/// read as the next packet. It knows nothing of the broker's validator: it only makes packets.
/// </summary>
internal sealed class PacketFuzzer(Random random)
{
    static readonly byte[] Interesting = [0x00, 0xFF, 0x80, 0xC0, 0xC3, 0xED, 0xF4, 0xF8, (byte)'+', (byte)'#', (byte)'/', 0x7F, 0x01, 0x02, 0x03];

    // In place of one byte of a string: each keeps the string's length, each breaks a rule of MQTT 1.5.3 or 3.3.2-2.
    static readonly byte[] StringPoison = [0x00, 0xFF, 0xFE, 0x80, 0xC3, 0xED, (byte)'+', (byte)'#'];

    public Frame Mutate(Frame seed, bool v5)
    {
        var frame = seed;
        var rounds = random.Next(10) < 8 ? 1 : 2;
        for (var i = 0; i < rounds; i++)
        {
            frame = MutateOnce(frame, v5);
        }

        return frame;
    }

    Frame MutateOnce(Frame frame, bool v5)
    {
        var body = frame.Body.ToList();
        var header = frame.Header;
        switch (random.Next(v5 ? 11 : 9))
        {
            case 0: // a bit of the fixed header (type or flags)
                header ^= (byte)(1 << random.Next(8));
                break;
            case 1: // 1-3 bits of the body
            case 2:
                for (var n = random.Next(1, 4); n > 0 && body.Count > 0; n--)
                {
                    body[random.Next(body.Count)] ^= (byte)(1 << random.Next(8));
                }

                break;
            case 3: // a byte inserted
                body.Insert(random.Next(body.Count + 1), Pick());
                break;
            case 4: // a byte deleted
                if (body.Count > 0)
                {
                    body.RemoveAt(random.Next(body.Count));
                }

                break;
            case 5: // a two-byte length field somewhere changed by a little
                if (body.Count >= 2)
                {
                    var at = random.Next(body.Count - 1);
                    var value = (body[at] << 8 | body[at + 1]) + random.Next(-3, 4);
                    body[at] = (byte)(value >> 8);
                    body[at + 1] = (byte)value;
                }

                break;
            case 6: // the body cut short, or bytes after the last field
                if (random.Next(2) == 0 && body.Count > 0)
                {
                    var cut = random.Next(body.Count);
                    body.RemoveRange(cut, body.Count - cut);
                }
                else
                {
                    for (var n = random.Next(1, 4); n > 0; n--)
                    {
                        body.Add(Pick());
                    }
                }

                break;
            case 7: // a string corrupted
            case 8:
                CorruptString(body);
                break;
            case 9: // v5: a property duplicated
                DuplicateProperty(header, body);
                break;
            default: // v5: a property given an edge value
                EdgeProperty(header, body);
                break;
        }

        return new Frame(header, [.. body]);
    }

    byte Pick() => random.Next(3) == 0 ? (byte)random.Next(256) : Interesting[random.Next(Interesting.Length)];

    /// <summary>Finds a length-prefixed run of printable ASCII (a string field) and poisons one of its bytes; or empties it.</summary>
    void CorruptString(List<byte> body)
    {
        var strings = new List<(int Start, int Length)>();
        for (var i = 0; i + 2 < body.Count; i++)
        {
            var length = body[i] << 8 | body[i + 1];
            if (length > 0 && i + 2 + length <= body.Count && body.Skip(i + 2).Take(length).All(b => b is >= 0x20 and < 0x7F))
            {
                strings.Add((i, length));
            }
        }

        if (strings.Count == 0)
        {
            body.Insert(random.Next(body.Count + 1), StringPoison[random.Next(StringPoison.Length)]);
            return;
        }

        var (start, len) = strings[random.Next(strings.Count)];
        if (random.Next(6) == 0)
        {
            // Emptied: an empty topic name or filter.
            body.RemoveRange(start + 2, len);
            body[start] = 0;
            body[start + 1] = 0;
            return;
        }

        body[start + 2 + random.Next(len)] = StringPoison[random.Next(StringPoison.Length)];
    }

    // ---- v5 properties: located by the packet layout, split with a small table of their sizes ----------

    void DuplicateProperty(byte header, List<byte> body)
    {
        if (!TryFindProperties(header, body, out var lengthAt, out var lengthSize, out var properties) || properties.Count == 0)
        {
            return;
        }

        var (start, size) = properties[random.Next(properties.Count)];
        var copy = body.GetRange(start, size);
        body.InsertRange(start + size, copy);
        Relength(body, lengthAt, lengthSize, properties.Sum(p => p.Size) + size);
    }

    void EdgeProperty(byte header, List<byte> body)
    {
        if (!TryFindProperties(header, body, out var lengthAt, out var lengthSize, out var properties))
        {
            return;
        }

        if (properties.Count == 0 || random.Next(3) == 0)
        {
            // Add one with an edge value: 0 or out of range, or not allowed in this packet.
            byte[][] extra =
            [
                [0x01, 0x02], [0x17, 0x02], [0x19, 0xFF], [0x24, 0x01], [0x23, 0x00, 0x00], [0x21, 0x00, 0x00],
                [0x27, 0, 0, 0, 0], [0x0B, 0x00], [0x0B, 0x05], [0x13, 0x00, 0x05], [0x2A, 0x01], [0x7F],
                [0x26, 0x00, 0x01, 0x00, 0x00, 0x01, 0x61], [0x03, 0x00, 0x02, 0xC0, 0x80],
            ];
            var add = extra[random.Next(extra.Length)];
            var at = properties.Count == 0 ? lengthAt + lengthSize : properties[^1].Start + properties[^1].Size;
            body.InsertRange(at, add);
            Relength(body, lengthAt, lengthSize, properties.Sum(p => p.Size) + add.Length);
            return;
        }

        // Or change the value of one it has: first value byte to 0, 2 or 0xFF.
        var (start, size) = properties[random.Next(properties.Count)];
        if (size > 1)
        {
            body[start + 1 + random.Next(size - 1)] = (byte)(random.Next(3) switch { 0 => 0x00, 1 => 0x02, _ => 0xFF });
        }
    }

    static void Relength(List<byte> body, int lengthAt, int lengthSize, int newLength)
    {
        body.RemoveRange(lengthAt, lengthSize);
        body.InsertRange(lengthAt, Vbi(newLength));
    }

    static byte[] Vbi(int value)
    {
        var bytes = new List<byte>();
        do
        {
            var b = (byte)(value % 128);
            value /= 128;
            bytes.Add(value > 0 ? (byte)(b | 0x80) : b);
        }
        while (value > 0);

        return [.. bytes];
    }

    /// <summary>Where a v5 packet's Property Length is, and its properties (offset and size of each); false when the layout does not parse.</summary>
    static bool TryFindProperties(byte header, List<byte> body, out int lengthAt, out int lengthSize, out List<(int Start, int Size)> properties)
    {
        properties = [];
        lengthSize = 0;
        lengthAt = (header >> 4) switch
        {
            1 => 10, // CONNECT: "MQTT", level, flags, keep alive
            3 when body.Count >= 2 => 2 + (body[0] << 8 | body[1]) + (((header >> 1) & 3) > 0 ? 2 : 0), // PUBLISH: topic, packet id
            4 or 5 or 6 or 7 => 3, // acks: packet id, reason code
            8 or 10 => 2, // SUBSCRIBE, UNSUBSCRIBE: packet id
            14 or 15 => 1, // DISCONNECT, AUTH: reason code
            _ => -1,
        };
        if (lengthAt < 0 || lengthAt >= body.Count)
        {
            return false;
        }

        var length = 0;
        var multiplier = 1;
        for (var i = lengthAt; ; i++)
        {
            if (i >= body.Count || i - lengthAt == 4)
            {
                return false;
            }

            length += (body[i] & 0x7F) * multiplier;
            multiplier *= 128;
            if ((body[i] & 0x80) == 0)
            {
                lengthSize = i - lengthAt + 1;
                break;
            }
        }

        var at = lengthAt + lengthSize;
        var end = at + length;
        if (end > body.Count)
        {
            return false;
        }

        while (at < end)
        {
            var size = body[at] switch
            {
                0x01 or 0x17 or 0x19 or 0x24 or 0x25 or 0x28 or 0x29 or 0x2A => 2,
                0x13 or 0x21 or 0x22 or 0x23 => 3,
                0x02 or 0x11 or 0x18 or 0x27 => 5,
                0x03 or 0x08 or 0x09 or 0x12 or 0x15 or 0x16 or 0x1A or 0x1C or 0x1F when at + 2 < end => 3 + (body[at + 1] << 8 | body[at + 2]),
                0x26 when at + 2 < end && at + 4 + (body[at + 1] << 8 | body[at + 2]) < end =>
                    5 + (body[at + 1] << 8 | body[at + 2]) + (body[at + 3 + (body[at + 1] << 8 | body[at + 2])] << 8 | body[at + 4 + (body[at + 1] << 8 | body[at + 2])]),
                0x0B => 1 + Enumerable.Range(at + 1, Math.Min(4, end - at - 1)).TakeWhile(i => (body[i] & 0x80) != 0).Count() + 1,
                _ => -1,
            };
            if (size < 0 || at + size > end)
            {
                return false;
            }

            properties.Add((at, size));
            at += size;
        }

        return true;
    }

    // ---- seeds: valid packets of every type a client sends, as MQTTnet writes them -----------------

    public static List<Frame> Seeds(MqttProtocolVersion version, IEnumerable<string> corpus)
    {
        var v5 = version == MqttProtocolVersion.V500;
        var formatter = new MqttPacketFormatterAdapter(version, new MqttBufferWriter(4096, 65536));
        Frame Encode(MqttPacket packet) => Frame.FromBytes(formatter.Encode(packet).Join().ToArray());
        List<MqttUserProperty>? Props(string name) => v5 ? [new MqttUserProperty(name, Encoding.UTF8.GetBytes("v"))] : null;

        var seeds = new List<Frame>();
        foreach (var qos in new[] { MqttQualityOfServiceLevel.AtMostOnce, MqttQualityOfServiceLevel.AtLeastOnce, MqttQualityOfServiceLevel.ExactlyOnce })
        {
            seeds.Add(Encode(new MqttPublishPacket
            {
                Topic = "fuzz/t/ü",
                QualityOfServiceLevel = qos,
                PacketIdentifier = qos > 0 ? (ushort)(10 + (int)qos) : (ushort)0,
                Retain = qos == MqttQualityOfServiceLevel.AtLeastOnce,
                Payload = new ReadOnlySequence<byte>("payload"u8.ToArray()),
                ContentType = v5 ? "text/plain" : null,
                ResponseTopic = v5 ? "fuzz/reply" : null,
                CorrelationData = v5 ? [1, 2, 3] : null,
                MessageExpiryInterval = v5 ? 60u : 0u,
                PayloadFormatIndicator = v5 ? MqttPayloadFormatIndicator.CharacterData : MqttPayloadFormatIndicator.Unspecified,
                TopicAlias = v5 ? (ushort)1 : (ushort)0,
                UserProperties = Props("p"),
            }));
        }

        seeds.Add(Encode(new MqttPubAckPacket { PacketIdentifier = 1, ReasonString = v5 ? "ok" : null }));
        seeds.Add(Encode(new MqttPubRecPacket { PacketIdentifier = 2, UserProperties = Props("r") }));
        seeds.Add(Encode(new MqttPubRelPacket { PacketIdentifier = 3, ReasonString = v5 ? "rel" : null }));
        seeds.Add(Encode(new MqttPubCompPacket { PacketIdentifier = 4 }));
        seeds.Add(Encode(new MqttSubscribePacket
        {
            PacketIdentifier = 5,
            SubscriptionIdentifier = v5 ? 42u : 0u,
            UserProperties = Props("s"),
            TopicFilters =
            [
                new MqttTopicFilter { Topic = "fuzz/+/x", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtMostOnce },
                new MqttTopicFilter { Topic = "fuzz/s/#", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtMostOnce, RetainHandling = v5 ? MqttRetainHandling.DoNotSendOnSubscribe : 0 },
                new MqttTopicFilter { Topic = "$share/g/fuzz/q", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtMostOnce },
            ],
        }));
        seeds.Add(Encode(new MqttUnsubscribePacket { PacketIdentifier = 6, TopicFilters = ["fuzz/+/x", "fuzz/s/#"], UserProperties = Props("u") }));
        seeds.Add(Encode(MqttPingReqPacket.Instance));
        seeds.Add(Encode(new MqttDisconnectPacket { ReasonCode = v5 ? MqttDisconnectReasonCode.DisconnectWithWillMessage : 0, SessionExpiryInterval = 0, ReasonString = v5 ? "bye" : null }));
        if (v5)
        {
            seeds.Add(Encode(new MqttAuthPacket { ReasonCode = MqttAuthenticateReasonCode.ContinueAuthentication, AuthenticationMethod = "M", AuthenticationData = [1] }));
        }

        seeds.Add(Encode(ConnectSeed(version, "fuzz-second")));
        seeds.AddRange(corpus.Select(Frame.FromHex));
        return seeds;
    }

    /// <summary>A CONNECT with a will, user name and (v5) properties: the seed of the CONNECT mutations.</summary>
    public static MqttConnectPacket ConnectSeed(MqttProtocolVersion version, string clientId)
    {
        var v5 = version == MqttProtocolVersion.V500;
        return new MqttConnectPacket
        {
            ClientId = clientId,
            CleanSession = true,
            KeepAlivePeriod = 60,
            WillFlag = true,
            WillTopic = "fuzz/will",
            WillMessage = [1],
            WillQoS = MqttQualityOfServiceLevel.AtLeastOnce,
            SessionExpiryInterval = 0,
            ReceiveMaximum = v5 ? (ushort)20 : (ushort)0,
            TopicAliasMaximum = v5 ? (ushort)4 : (ushort)0,
            RequestProblemInformation = true,
            UserProperties = v5 ? [new MqttUserProperty("c", Encoding.UTF8.GetBytes("v"))] : null,
            WillContentType = v5 ? "text/plain" : null,
            WillDelayInterval = 0,
        };
    }
}
