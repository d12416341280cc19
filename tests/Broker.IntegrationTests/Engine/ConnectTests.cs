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

    [Theory]
    [InlineData((ushort)600)]
    [InlineData((ushort)0)]
    public async Task ServerKeepAlive_V5ClientAskingForMoreOrNone_ToldTheCapInConnAck(ushort asked)
    {
        // [MQTT-3.2.2-21] / [MQTT-3.1.2-21]: when the server sends Server Keep Alive the client must use it instead
        // of its own. Broker:Mqtt:ServerKeepAlive (contract §9) caps the keep-alive, and "none" (0) is above any cap.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ServerKeepAlive"] = "30");
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("keeper", keepAlive: asked), MqttProtocolVersion.V500);
        await using var _ = raw;

        Assert.Equal(MqttConnectReasonCode.Success, ack.ReasonCode);
        Assert.Equal(30, ack.ServerKeepAlive);
    }

    [Fact]
    public async Task ServerKeepAlive_V5ClientAskingForLess_KeepsItsOwn()
    {
        // [MQTT-3.2.2-22]: without Server Keep Alive in CONNACK the server uses the client's Keep Alive; a client
        // below the cap keeps its own (as mosquitto's max_keepalive), so none is sent.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ServerKeepAlive"] = "30");
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("modest", keepAlive: 10), MqttProtocolVersion.V500);
        await using var _ = raw;

        Assert.Equal(MqttConnectReasonCode.Success, ack.ReasonCode);
        Assert.Equal(0, ack.ServerKeepAlive);
    }

    [Fact]
    public async Task ServerKeepAlive_V5ClientSilentForOneAndAHalfTimesTheServerValue_Disconnected0x8D()
    {
        // [MQTT-3.2.2-21] then [MQTT-3.1.2-22]: the client asked for 600 s and was given 1 s; the broker holds it to
        // that: silent past 1.5 × 1 s, it is disconnected with 0x8D (Keep Alive timeout). The keep-alive check
        // runs on the engine's 1 s heartbeat with the real clock, hence a 1 s setting.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ServerKeepAlive"] = "1");
        var clock = Stopwatch.StartNew();
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("sleepy", keepAlive: 600), MqttProtocolVersion.V500);
        await using var _ = raw;
        Assert.Equal(1, ack.ServerKeepAlive);

        var packets = await raw.ReadUntilClosedAsync();

        Assert.Equal(MqttDisconnectReasonCode.KeepAliveTimeout, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
        Assert.InRange(clock.Elapsed, TimeSpan.FromSeconds(1.4), TimeSpan.FromSeconds(8));
    }

    [Fact]
    public async Task ServerKeepAlive_V5ClientPingingWithinTheServerValue_StaysConnected()
    {
        // [MQTT-3.1.2-22] the other way round: a client that uses the Server Keep Alive it was given (here it pings
        // every 0.5 s against 1 s) is never cut off, although its silence outlasts 1.5 × 1 s in total.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ServerKeepAlive"] = "1");
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("pinger", keepAlive: 0), MqttProtocolVersion.V500);
        await using var _ = raw;
        Assert.Equal(1, ack.ServerKeepAlive);

        for (var i = 0; i < 6; i++)
        {
            await Task.Delay(500);
            await raw.SendAsync(MqttPingReqPacket.Instance);
            await raw.ExpectAsync<MqttPingRespPacket>();
        }
    }

    [Theory]
    [InlineData((ushort)600, MqttConnectReturnCode.ConnectionRefusedIdentifierRejected)]
    [InlineData((ushort)0, MqttConnectReturnCode.ConnectionRefusedIdentifierRejected)]
    [InlineData((ushort)30, MqttConnectReturnCode.ConnectionAccepted)]
    [InlineData((ushort)10, MqttConnectReturnCode.ConnectionAccepted)]
    public async Task ServerKeepAlive_V311ClientAskingForMoreOrNone_RefusedAsMosquittoDoes(ushort asked, MqttConnectReturnCode expected)
    {
        // v3.1.1 has no Server Keep Alive to tell the client (v3.1.1 §3.2.2.3 has six return codes). mosquitto's
        // max_keepalive refuses such a client with 0x02 (identifier rejected) rather than cutting it off later
        // without a word; the broker does the same. At or below the cap it is accepted with its own keep-alive.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:ServerKeepAlive"] = "30");

        Assert.Equal(expected, await Connect.V311ReturnCodeAsync(broker.MqttPort, "old-" + asked, null, configure: c => c.KeepAlivePeriod = asked));
    }

    [Fact]
    public async Task ServerKeepAlive_DeprecatedMaxKeepAliveSeconds_StillCaps()
    {
        // Broker:Mqtt:MaxKeepAliveSeconds was the key before contract §9 named it ServerKeepAlive; it still works.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:MaxKeepAliveSeconds"] = "30");
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("keeper", keepAlive: 600), MqttProtocolVersion.V500);
        await using var _ = raw;

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
