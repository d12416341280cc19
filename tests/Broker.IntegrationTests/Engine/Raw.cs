using System.Text;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>Shortcuts for the raw client: packets the tests send by hand, and expectations on what comes back.</summary>
internal static class Raw
{
    public static MqttConnectPacket Connect(string clientId, bool cleanSession = true, ushort keepAlive = 0, uint sessionExpiry = 0, ushort receiveMaximum = 0) => new()
    {
        ClientId = clientId,
        CleanSession = cleanSession,
        KeepAlivePeriod = keepAlive,
        SessionExpiryInterval = sessionExpiry,
        ReceiveMaximum = receiveMaximum,
    };

    /// <summary>Connects a raw client, asserts the CONNACK accepted it and, when given, its session present flag.</summary>
    public static async Task<RawClient> ConnectAsync(
        int port,
        string clientId,
        MqttProtocolVersion version = MqttProtocolVersion.V311,
        bool cleanSession = true,
        uint sessionExpiry = 0,
        ushort receiveMaximum = 0,
        bool? sessionPresent = null,
        Action<MqttConnectPacket>? configure = null)
    {
        var connect = Connect(clientId, cleanSession, sessionExpiry: sessionExpiry, receiveMaximum: receiveMaximum);
        configure?.Invoke(connect);
        var (client, ack) = await RawClient.ConnectAsync(port, connect, version);
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttConnectReasonCode.Success, ack.ReasonCode);
        }
        else
        {
            Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, ack.ReturnCode);
        }

        if (sessionPresent is { } expected)
        {
            Assert.Equal(expected, ack.IsSessionPresent);
        }

        return client;
    }

    /// <summary>The next packet is a <typeparamref name="T"/>.</summary>
    public static async Task<T> ExpectAsync<T>(this RawClient raw)
        where T : MqttPacket
    {
        var packet = await raw.ReceiveAsync();
        Assert.NotNull(packet);
        return Assert.IsType<T>(packet);
    }

    public static async Task<MqttSubAckPacket> SubscribeAsync(this RawClient raw, string filter, MqttQualityOfServiceLevel qos, ushort packetId = 1)
    {
        await raw.SendAsync(new MqttSubscribePacket
        {
            PacketIdentifier = packetId,
            TopicFilters = [new MqttTopicFilter { Topic = filter, QualityOfServiceLevel = qos }],
        });
        var ack = await raw.ExpectAsync<MqttSubAckPacket>();
        Assert.Equal(packetId, ack.PacketIdentifier);
        return ack;
    }

    /// <summary>
    /// Sends DISCONNECT and waits for the broker to close the socket: the broker closes it only after it has
    /// detached the session, so what follows sees the client offline.
    /// </summary>
    public static async Task DisconnectAsync(this RawClient raw)
    {
        await raw.SendAsync(new MqttDisconnectPacket());
        Assert.Empty(await raw.ReadUntilClosedAsync());
        await raw.DisposeAsync();
    }

    public static MqttPublishPacket Publish(string topic, string payload, MqttQualityOfServiceLevel qos = MqttQualityOfServiceLevel.AtMostOnce, ushort packetId = 0, bool dup = false) => new()
    {
        Topic = topic,
        Payload = new System.Buffers.ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(payload)),
        QualityOfServiceLevel = qos,
        PacketIdentifier = packetId,
        Dup = dup,
    };

    public static string Text(MqttPublishPacket packet) => Encoding.UTF8.GetString(packet.Payload);

    /// <summary>
    /// A v3.1.x CONNECT written byte by byte [MQTT-3.1], for what MQTTnet's encoder will not write
    /// (an empty client id with clean session 0, an unknown protocol level).
    /// </summary>
    public static byte[] ConnectBytes(string clientId, bool cleanSession, byte protocolLevel = 4, ushort keepAlive = 0, string protocolName = "MQTT")
    {
        var body = new List<byte>();
        WriteString(body, protocolName);
        body.Add(protocolLevel);
        body.Add(cleanSession ? (byte)0x02 : (byte)0x00);
        body.Add((byte)(keepAlive >> 8));
        body.Add((byte)keepAlive);
        if (protocolLevel == 5)
        {
            body.Add(0); // no properties
        }

        WriteString(body, clientId);
        var packet = new List<byte> { 0x10 };
        var length = body.Count;
        do
        {
            var b = (byte)(length % 128);
            length /= 128;
            packet.Add(length > 0 ? (byte)(b | 0x80) : b);
        }
        while (length > 0);

        packet.AddRange(body);
        return [.. packet];
    }

    static void WriteString(List<byte> into, string value)
    {
        var bytes = Encoding.UTF8.GetBytes(value);
        into.Add((byte)(bytes.Length >> 8));
        into.Add((byte)bytes.Length);
        into.AddRange(bytes);
    }
}
