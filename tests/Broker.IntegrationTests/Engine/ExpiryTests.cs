using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>
/// Message expiry and session expiry on the broker's clock (a fake one here) [MQTT-3.3.2-5, -6, 3.1.2-23].
/// Clients go offline through a raw DISCONNECT whose socket close is awaited, so the broker has recorded the
/// disconnect time before the clock moves.
/// </summary>
public class ExpiryTests : BrokerTestBase
{
    static async Task VisitAsync(TestBroker broker, string clientId, MqttProtocolVersion version, uint sessionExpiry, bool? sessionPresent, string? subscribe = null)
    {
        var raw = await Raw.ConnectAsync(broker.MqttPort, clientId, version, cleanSession: false, sessionExpiry: sessionExpiry, sessionPresent: sessionPresent);
        if (subscribe is not null)
        {
            await raw.SubscribeAsync(subscribe, MqttQualityOfServiceLevel.AtLeastOnce);
        }

        await raw.DisconnectAsync();
    }

    [Fact]
    public async Task MessageExpiry_QueuedForOfflineSession_ExpiredDroppedOthersDeliveredWithReducedInterval()
    {
        // [MQTT-3.3.2-5]: a message whose expiry passed before delivery is not sent;
        // [MQTT-3.3.2-6]: the interval sent is the received value minus the time spent waiting.
        await using var broker = await StartPlainAsync(fakeClock: true);
        await VisitAsync(broker, "offline", MqttProtocolVersion.V500, 300, sessionPresent: false, subscribe: "e/#");

        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("e/short", "expires", configure: m => m.WithMessageExpiryInterval(5));
        await pub.PublishAsync("e/long", "survives", configure: m => m.WithMessageExpiryInterval(60));
        broker.Clock!.Advance(TimeSpan.FromSeconds(10));

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, "offline", cleanStart: false, sessionExpiry: 300);
        Assert.True(back.ConnectResult.IsSessionPresent);
        var received = await back.NextAsync();
        Assert.Equal(("e/long", "survives"), (received.ApplicationMessage.Topic, TestClient.Text(received)));
        Assert.Equal(50u, received.ApplicationMessage.MessageExpiryInterval);
        await pub.PublishAsync("e/marker", "m", MqttQualityOfServiceLevel.AtMostOnce);
        await back.ExpectOnlyAsync("e/marker", "m");
        Assert.Equal(1, broker.Counters.Dropped);
    }

    [Fact]
    public async Task SessionExpiryV5_IntervalPassed_SessionGone()
    {
        // [MQTT-3.1.2-23]: the session is kept for Session Expiry Interval seconds after the connection closes;
        // after that a reconnect with clean start 0 finds none (session present 0, subscriptions gone).
        await using var broker = await StartPlainAsync(fakeClock: true);
        await VisitAsync(broker, "ephemeral", MqttProtocolVersion.V500, 10, sessionPresent: false, subscribe: "se/x");

        broker.Clock!.Advance(TimeSpan.FromSeconds(5));
        await VisitAsync(broker, "ephemeral", MqttProtocolVersion.V500, 10, sessionPresent: true);

        broker.Clock.Advance(TimeSpan.FromSeconds(11));
        await using var after = await TestClient.ConnectAsync(broker.MqttPort, "ephemeral", cleanStart: false, sessionExpiry: 10);
        Assert.False(after.ConnectResult.IsSessionPresent);

        await after.SubscribeOkAsync("se/marker");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("se/x", "old subscription");
        await pub.PublishAsync("se/marker", "m");
        await after.ExpectOnlyAsync("se/marker", "m");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task SessionExpiry_Zero_SessionEndsWithConnection(MqttProtocolVersion version)
    {
        // [MQTT-3.1.2-23] (v3.1.1: clean session 1 [MQTT-3.1.2-6]): a session with expiry 0 lasts as long as its
        // network connection; a later CONNECT with clean start 0 does not find it, whether the first connection
        // is already closed or is being taken over.
        await using var broker = await StartPlainAsync();
        await using (var first = await TestClient.ConnectAsync(broker.MqttPort, "zero", version: version, cleanStart: true))
        {
            await first.SubscribeOkAsync("z/x");
            await using var takeover = await TestClient.ConnectAsync(broker.MqttPort, "zero", version: version, cleanStart: false, sessionExpiry: 300);
            Assert.False(takeover.ConnectResult.IsSessionPresent);
        }

        var raw = await Raw.ConnectAsync(broker.MqttPort, "zero2", version, cleanSession: true);
        await raw.DisconnectAsync();
        await using var again = await TestClient.ConnectAsync(broker.MqttPort, "zero2", version: version, cleanStart: false, sessionExpiry: 300);
        Assert.False(again.ConnectResult.IsSessionPresent);
    }

    [Fact]
    public async Task SessionExpiryV311_DefaultSessionExpiryPassed_SessionGone()
    {
        // v3.1.1 cannot state an expiry; a clean session 0 session lives for Broker:DefaultSessionExpiry.
        await using var broker = await StartPlainAsync(s => s["Broker:DefaultSessionExpiry"] = "00:00:30", fakeClock: true);
        await VisitAsync(broker, "old", MqttProtocolVersion.V311, 0, sessionPresent: false, subscribe: "v3/x");

        broker.Clock!.Advance(TimeSpan.FromSeconds(20));
        await VisitAsync(broker, "old", MqttProtocolVersion.V311, 0, sessionPresent: true);

        broker.Clock.Advance(TimeSpan.FromSeconds(31));
        await using var after = await TestClient.ConnectAsync(broker.MqttPort, "old", version: MqttProtocolVersion.V311, cleanStart: false);
        Assert.False(after.ConnectResult.IsSessionPresent);
    }

    [Fact]
    public async Task SessionExpiryV5_ChangedOnDisconnect_NewIntervalApplies()
    {
        // v5 §3.14.2.2.2: the client may change the Session Expiry Interval on DISCONNECT (when it was not 0).
        await using var broker = await StartPlainAsync(fakeClock: true);
        await using (var raw = await Raw.ConnectAsync(broker.MqttPort, "shorten", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 3600))
        {
            await raw.SendAsync(new MQTTnet.Packets.MqttDisconnectPacket { SessionExpiryInterval = 5 });
            Assert.Empty(await raw.ReadUntilClosedAsync());
        }

        broker.Clock!.Advance(TimeSpan.FromSeconds(6));
        await using var after = await TestClient.ConnectAsync(broker.MqttPort, "shorten", cleanStart: false, sessionExpiry: 3600);
        Assert.False(after.ConnectResult.IsSessionPresent);
    }
}
