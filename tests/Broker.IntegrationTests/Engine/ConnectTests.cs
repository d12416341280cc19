using System.Diagnostics;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>CONNECT and CONNACK, client ids, protocol levels, timeouts, takeover and shutdown [MQTT-3.1, 3.2].</summary>
public sealed class ConnectTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Connect_CleanStart_AcceptedWithSessionPresent0(MqttProtocolVersion version)
    {
        // [MQTT-3.2.2-2] (v3.1.1) / [MQTT-3.2.2-2] (v5): clean start gives session present 0.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var client = await TestClient.ConnectAsync(broker.MqttPort, "c-" + version, version: version);

        Assert.Equal(MqttClientConnectResultCode.Success, client.ConnectResult.ResultCode);
        Assert.False(client.ConnectResult.IsSessionPresent);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Connect_ResumingPersistentSession_SessionPresent1(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartPlainAsync();
        var id = "persist-" + version;
        await using (var first = await TestClient.ConnectAsync(broker.MqttPort, id, version: version, cleanStart: false, sessionExpiry: 300))
        {
            // No session existed yet: session present 0 even with clean start 0 [MQTT-3.2.2-3].
            Assert.False(first.ConnectResult.IsSessionPresent);
            await first.SubscribeOkAsync("p/x");
        }

        await using (var second = await TestClient.ConnectAsync(broker.MqttPort, id, version: version, cleanStart: false, sessionExpiry: 300))
        {
            // [MQTT-3.2.2-3]: the server has the session, so session present is 1.
            Assert.True(second.ConnectResult.IsSessionPresent);
        }

        await using var third = await TestClient.ConnectAsync(broker.MqttPort, id, version: version, cleanStart: true);

        // [MQTT-3.2.2-2]: clean start discards it, session present 0.
        Assert.False(third.ConnectResult.IsSessionPresent);
    }

    [Fact]
    public async Task ConnectV311_EmptyClientIdCleanSession1_Accepted()
    {
        // [MQTT-3.1.3-6]: a v3.1.1 server may accept a zero-length client id with clean session 1.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);
        await raw.SendBytesAsync(Raw.ConnectBytes("", cleanSession: true));

        var ack = await raw.ExpectAsync<MqttConnAckPacket>();
        Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, ack.ReturnCode);
        Assert.False(ack.IsSessionPresent);

        await raw.SendAsync(MqttPingReqPacket.Instance);
        await raw.ExpectAsync<MqttPingRespPacket>();
    }

    [Fact]
    public async Task ConnectV311_EmptyClientIdCleanSession0_RefusedWithIdentifierRejected()
    {
        // [MQTT-3.1.3-8]: CONNACK return code 0x02 (identifier rejected), then the server closes the connection.
        // MQTTnet's encoder refuses to write this CONNECT, so it is written by hand.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);
        await raw.SendBytesAsync(Raw.ConnectBytes("", cleanSession: false));

        Assert.Equal(new byte[] { 0x20, 0x02, 0x00, 0x02 }, await raw.ReadAllBytesAsync());
    }

    [Fact]
    public async Task ConnectV5_EmptyClientId_GetsAssignedClientIdentifier()
    {
        // [MQTT-3.1.3-6], [MQTT-3.2.2-16]: the server assigns an id and returns it in Assigned Client Identifier.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var client = await TestClient.ConnectAsync(broker.MqttPort, "", version: MqttProtocolVersion.V500);

        Assert.False(string.IsNullOrEmpty(client.ConnectResult.AssignedClientIdentifier));

        // The assigned id is usable: the client can subscribe and receive.
        await client.SubscribeOkAsync("assigned/x");
        await client.PublishAsync("assigned/x", "hi");
        await client.ExpectOnlyAsync("assigned/x", "hi");
    }

    [Fact]
    public async Task Connect_UnsupportedProtocolLevel_ConnAck0x01AndClose()
    {
        // [MQTT-3.1.2-2]: unsupported level → CONNACK 0x01 (unacceptable protocol version), then close.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);
        await raw.SendBytesAsync(Raw.ConnectBytes("level6", cleanSession: true, protocolLevel: 6));

        Assert.Equal(new byte[] { 0x20, 0x02, 0x00, 0x01 }, await raw.ReadAllBytesAsync());
    }

    [Fact]
    public async Task Connect_FirstPacketNotConnect_ConnectionClosed()
    {
        // [MQTT-3.1.0-1]: the first packet from the client must be CONNECT; anything else closes the connection.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);
        await raw.SendAsync(Raw.Publish("not/connected", "x"));

        Assert.Empty(await raw.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task Connect_SecondConnect_ConnectionClosed()
    {
        // [MQTT-3.1.0-2]: a second CONNECT is a protocol violation; the server closes the connection.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "twice");
        await raw.SendAsync(Raw.Connect("twice"));

        Assert.Empty(await raw.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task Connect_NoConnectWithinConnectTimeout_SocketClosed()
    {
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ConnectTimeout"] = "00:00:01");
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);
        var clock = Stopwatch.StartNew();

        // Nothing is sent; the broker closes after about a second, well before the raw client's 10 s timeout.
        Assert.Empty(await raw.ReadUntilClosedAsync());
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.8), TimeSpan.FromSeconds(8));
    }

    [Fact]
    public async Task Connect_HalfAConnectWithinConnectTimeout_SocketClosed()
    {
        // A half-open CONNECT (slow loris) is held to the same Broker:Mqtt:ConnectTimeout as no CONNECT at all.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ConnectTimeout"] = "00:00:01");
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);
        var clock = Stopwatch.StartNew();

        // CONNECT, Remaining Length 32, then only "MQTT" and the level: the rest never comes.
        await raw.SendBytesAsync([0x10, 0x20, 0x00, 0x04, (byte)'M', (byte)'Q', (byte)'T', (byte)'T', 0x04]);

        Assert.Empty(await raw.ReadUntilClosedAsync());
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(0.8), TimeSpan.FromSeconds(8));
    }

    [Fact]
    public async Task KeepAlive_SilentClient_DisconnectedAfterOneAndAHalfTimes()
    {
        // [MQTT-3.1.2-24]: no packet within 1.5 × Keep Alive → the server disconnects. Real time: the keep-alive is 1 s.
        await using var broker = await TestBroker.StartPlainAsync();
        var clock = Stopwatch.StartNew();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "silent", configure: c => c.KeepAlivePeriod = 1);

        Assert.Empty(await raw.ReadUntilClosedAsync());
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.4), TimeSpan.FromSeconds(8));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Takeover_SameClientId_FirstConnectionClosed(MqttProtocolVersion version)
    {
        // [MQTT-3.1.4-3]: a second connection with the same client id closes the first; v5 hears 0x8E.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var first = await TestClient.ConnectAsync(broker.MqttPort, "twin", version: version);
        await using var second = await TestClient.ConnectAsync(broker.MqttPort, "twin", version: version);

        var disconnected = await first.Disconnected.WaitAsync(TestClient.Timeout);
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttClientDisconnectReason.SessionTakenOver, disconnected.Reason);
        }

        // The new connection owns the client id and works.
        await second.SubscribeOkAsync("twin/x");
        await second.PublishAsync("twin/x", "still here");
        await second.ExpectOnlyAsync("twin/x", "still here");
    }

    [Fact]
    public async Task Shutdown_BrokerStopped_V5ClientGetsServerShuttingDown()
    {
        // [MQTT-4.13.2-1] / reason 0x8B: the server tells a v5 client why it closes.
        var broker = await TestBroker.StartPlainAsync();
        await using var client = await TestClient.ConnectAsync(broker.MqttPort, "bye", version: MqttProtocolVersion.V500);

        await broker.DisposeAsync();

        var disconnected = await client.Disconnected.WaitAsync(TestClient.Timeout);
        Assert.Equal(MqttClientDisconnectReason.ServerShuttingDown, disconnected.Reason);
    }

    [Fact]
    public async Task ConnAckV5_MaxKeepAliveConfigured_ServerKeepAliveTellsClient()
    {
        // [MQTT-3.2.2-21]: when the server caps the keep-alive it sends Server Keep Alive, which the client must use.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:MaxKeepAliveSeconds"] = "30");
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("keeper", keepAlive: 600), MqttProtocolVersion.V500);
        await using var _ = raw;

        Assert.Equal(MqttConnectReasonCode.Success, ack.ReasonCode);
        Assert.Equal(30, ack.ServerKeepAlive);
    }

    [Fact]
    public async Task ConnAckV5_AnnouncesServerLimits()
    {
        // v5 §3.2.2.3: Receive Maximum, Maximum Packet Size and Topic Alias Maximum tell the client our limits.
        await using var broker = await TestBroker.StartPlainAsync(s =>
        {
            s["Broker:Mqtt:ReceiveMaximum"] = "7";
            s["Broker:Mqtt:MaxPacketSize"] = "2048";
            s["Broker:Mqtt:TopicAliasMaximum"] = "9";
        });
        await using var client = await TestClient.ConnectAsync(broker.MqttPort, "limits");

        Assert.Equal((ushort)7, client.ConnectResult.ReceiveMaximum);
        Assert.Equal(2048u, client.ConnectResult.MaximumPacketSize);
        Assert.Equal(9, client.ConnectResult.TopicAliasMaximum);
    }
}
