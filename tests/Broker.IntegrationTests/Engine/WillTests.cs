using System.Text;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>Will messages: when they go, when they do not, delay and retain [MQTT-3.1.2-8 .. -17, 3.1.3-9].</summary>
public class WillTests : BrokerTestBase
{
    static Action<MqttConnectPacket> Will(string topic, string payload, bool retain = false, uint delay = 0) => c =>
    {
        c.WillFlag = true;
        c.WillTopic = topic;
        c.WillMessage = Encoding.UTF8.GetBytes(payload);
        c.WillQoS = MqttQualityOfServiceLevel.AtLeastOnce;
        c.WillRetain = retain;
        c.WillDelayInterval = delay;
    };

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Will_SocketDroppedWithoutDisconnect_Published(MqttProtocolVersion version)
    {
        // [MQTT-3.1.2-8]: the will is published when the network connection closes without DISCONNECT.
        await using var broker = await StartPlainAsync();
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher", version: version);
        await watcher.SubscribeOkAsync("will/#");
        var raw = await Raw.ConnectAsync(broker.MqttPort, "dying", version, configure: Will("will/dying", "gone"));

        await raw.DisposeAsync();

        await watcher.ExpectOnlyAsync("will/dying", "gone");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Will_MqttNetClientDisposedWithoutDisconnect_Published(MqttProtocolVersion version)
    {
        // [MQTT-3.1.2-8]: same, with MQTTnet's client dropping its connection (Dispose sends no DISCONNECT).
        await using var broker = await StartPlainAsync();
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher", version: version);
        await watcher.SubscribeOkAsync("will/#");
        var dying = await TestClient.ConnectAsync(broker.MqttPort, "dying", version: version,
            configure: o => o.WithWillTopic("will/dying").WithWillPayload("gone").WithWillQualityOfServiceLevel(MqttQualityOfServiceLevel.AtLeastOnce));

        dying.Client.Dispose();

        await watcher.ExpectOnlyAsync("will/dying", "gone");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Will_NormalDisconnect_NotPublished(MqttProtocolVersion version)
    {
        // [MQTT-3.1.2-10]: a DISCONNECT (v5 reason 0x00) removes the will without publishing it.
        await using var broker = await StartPlainAsync();
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher", version: version);
        await watcher.SubscribeOkAsync("will/#");
        var raw = await Raw.ConnectAsync(broker.MqttPort, "polite", version, configure: Will("will/polite", "gone"));

        await raw.SendAsync(new MqttDisconnectPacket());
        Assert.Empty(await raw.ReadUntilClosedAsync()); // the broker has handled the DISCONNECT and closed
        await raw.DisposeAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        await pub.PublishAsync("will/marker", "m");

        await watcher.ExpectOnlyAsync("will/marker", "m");
    }

    [Fact]
    public async Task Will_V5DisconnectWithWillMessage_Published()
    {
        // v5 §3.14.2.1: DISCONNECT reason 0x04 "Disconnect with Will Message" asks the server to publish the will.
        await using var broker = await StartPlainAsync();
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        await using var leaving = await TestClient.ConnectAsync(broker.MqttPort, "leaving",
            configure: o => o.WithWillTopic("will/leaving").WithWillPayload("asked for"));

        await leaving.Client.DisconnectAsync(new MqttClientDisconnectOptionsBuilder().WithReason(MqttClientDisconnectOptionsReason.DisconnectWithWillMessage).Build());

        await watcher.ExpectOnlyAsync("will/leaving", "asked for");
    }

    [Fact]
    public async Task Will_Retained_StoredForLaterSubscribers()
    {
        // [MQTT-3.1.2-17]: Will Retain 1 publishes the will as a retained message.
        await using var broker = await StartPlainAsync();
        var raw = await Raw.ConnectAsync(broker.MqttPort, "dying", MqttProtocolVersion.V500, configure: Will("will/status", "offline", retain: true));
        await using (var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher"))
        {
            await watcher.SubscribeOkAsync("will/#");
            await raw.DisposeAsync();
            await watcher.ExpectOnlyAsync("will/status", "offline"); // the will has been routed (and retained)
        }

        await using var late = await TestClient.ConnectAsync(broker.MqttPort, "late");
        await late.SubscribeOkAsync("will/#");
        var retained = await late.NextAsync();
        Assert.Equal(("will/status", "offline"), (retained.ApplicationMessage.Topic, TestClient.Text(retained)));
        Assert.True(retained.ApplicationMessage.Retain);
    }

    /// <summary>
    /// A v5 client that leaves with DISCONNECT 0x04 (publish the will) and a Will Delay; awaiting the socket
    /// close means the broker has recorded the pending will before the test moves the clock.
    /// </summary>
    static async Task LeaveWithDelayedWillAsync(TestBroker broker, string clientId, uint delay)
    {
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, clientId, MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 300,
            configure: Will("will/" + clientId, clientId + " gone", delay: delay));
        await raw.SendAsync(new MqttDisconnectPacket { ReasonCode = MqttDisconnectReasonCode.DisconnectWithWillMessage });
        Assert.Empty(await raw.ReadUntilClosedAsync());
    }

    [Fact]
    public async Task WillDelay_BeforeDelay_NothingThenPublishedAfter()
    {
        // [MQTT-3.1.3-9]: the will is published after the Will Delay Interval, not before.
        // A canary with a shorter delay proves the heartbeat ran after each clock step.
        await using var broker = await StartPlainAsync(fakeClock: true);
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        await LeaveWithDelayedWillAsync(broker, "slow", delay: 10);
        await LeaveWithDelayedWillAsync(broker, "canary", delay: 3);

        broker.Clock!.Advance(TimeSpan.FromSeconds(5));
        await watcher.ExpectOnlyAsync("will/canary", "canary gone");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("will/marker", "m");
        await watcher.ExpectOnlyAsync("will/marker", "m");

        broker.Clock.Advance(TimeSpan.FromSeconds(6));
        await watcher.ExpectOnlyAsync("will/slow", "slow gone");
    }

    [Fact]
    public async Task WillDelay_ClientReconnectsWithinDelay_WillCancelled()
    {
        // [MQTT-3.1.3-9]: if a new connection resumes the session before the delay passes, no will is sent.
        await using var broker = await StartPlainAsync(fakeClock: true);
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        await LeaveWithDelayedWillAsync(broker, "back", delay: 10);
        await LeaveWithDelayedWillAsync(broker, "canary", delay: 10);

        await using var back = await Raw.ConnectAsync(broker.MqttPort, "back", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 300, sessionPresent: true);
        broker.Clock!.Advance(TimeSpan.FromSeconds(11));

        await watcher.ExpectOnlyAsync("will/canary", "canary gone");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("will/marker", "m");
        await watcher.ExpectOnlyAsync("will/marker", "m");
    }

    [Fact]
    public async Task WillDelay_SessionEndsFirst_WillPublishedAtSessionEnd()
    {
        // [MQTT-3.1.3-9] / v5 §3.1.3.2.2: the will goes at the earlier of the delay and the end of the session;
        // a session that ends with its connection (expiry 0) sends it at once.
        await using var broker = await StartPlainAsync(fakeClock: true);
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        var raw = await Raw.ConnectAsync(broker.MqttPort, "short", MqttProtocolVersion.V500, configure: Will("will/short", "short gone", delay: 60));

        await raw.DisposeAsync();

        await watcher.ExpectOnlyAsync("will/short", "short gone");
    }

    [Fact]
    public async Task WillDelay_LongerThanSessionExpiry_PublishedWhenSessionExpires()
    {
        // v5 §3.1.3.2.2 / [MQTT-3.1.3-9]: the will goes when the delay passes or the session ends, whichever is first.
        await using var broker = await StartPlainAsync(fakeClock: true);
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        await using (var raw = await Raw.ConnectAsync(broker.MqttPort, "brief", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 5,
            configure: Will("will/brief", "brief gone", delay: 600)))
        {
            await raw.SendAsync(new MqttDisconnectPacket { ReasonCode = MqttDisconnectReasonCode.DisconnectWithWillMessage });
            Assert.Empty(await raw.ReadUntilClosedAsync());
        }

        broker.Clock!.Advance(TimeSpan.FromSeconds(6));

        await watcher.ExpectOnlyAsync("will/brief", "brief gone");
    }

    [Fact]
    public async Task WillMessageExpiry_CountsFromPublicationNotFromConnect()
    {
        // v5 §3.1.3.2.4: the Will Message Expiry Interval is the will's lifetime, "sent as the Publication Expiry
        // Interval when the Server publishes the Will Message" — a client connected longer than that still has a will.
        await using var broker = await StartPlainAsync(fakeClock: true);
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        var raw = await Raw.ConnectAsync(broker.MqttPort, "long-lived", MqttProtocolVersion.V500, configure: c =>
        {
            Will("will/long-lived", "gone")(c);
            c.WillMessageExpiryInterval = 10;
        });

        broker.Clock!.Advance(TimeSpan.FromSeconds(30));
        await raw.DisposeAsync();

        var will = await watcher.NextAsync();
        Assert.Equal(("will/long-lived", "gone"), (will.ApplicationMessage.Topic, TestClient.Text(will)));
        Assert.Equal(10u, will.ApplicationMessage.MessageExpiryInterval);
    }

    [Fact]
    public async Task Disconnect_SettingSessionExpiryAfterZero_ProtocolErrorAndWillPublished()
    {
        // v5 §3.14.2.2.2 [MQTT-3.14.2-2]: a non-zero Session Expiry Interval on DISCONNECT after 0 on CONNECT is a
        // protocol error: the server "does not treat it as a valid DISCONNECT" and sends DISCONNECT 0x82, so the
        // will is published as for any other close without a valid DISCONNECT [MQTT-3.1.2-8].
        await using var broker = await StartPlainAsync();
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "sly", MqttProtocolVersion.V500, configure: Will("will/sly", "gone"));

        await raw.SendAsync(new MqttDisconnectPacket { SessionExpiryInterval = 60 });

        var packets = await raw.ReadUntilClosedAsync();
        Assert.Equal(MqttDisconnectReasonCode.ProtocolError, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
        await watcher.ExpectOnlyAsync("will/sly", "gone");
    }

    [Fact]
    public async Task KeepAliveTimeout_WillPublished()
    {
        // [MQTT-3.1.2-24] closes the connection, and a close that is not a DISCONNECT publishes the will [MQTT-3.1.2-8].
        await using var broker = await StartPlainAsync();
        await using var watcher = await TestClient.ConnectAsync(broker.MqttPort, "watcher");
        await watcher.SubscribeOkAsync("will/#");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "quiet", configure: c =>
        {
            Will("will/quiet", "timed out")(c);
            c.KeepAlivePeriod = 1;
        });

        Assert.Empty(await raw.ReadUntilClosedAsync());
        await watcher.ExpectOnlyAsync("will/quiet", "timed out");
    }
}
