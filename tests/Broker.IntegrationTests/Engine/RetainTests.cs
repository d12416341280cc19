using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Engine;

/// <summary>Retained messages: set, replace, delete, the RETAIN flag on delivery, expiry [MQTT-3.3.1-5 .. -12].</summary>
public sealed class RetainTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Retained_SetThenReplaced_NewSubscriberGetsOnlyTheLatest(MqttProtocolVersion version)
    {
        // [MQTT-3.3.1-5]: the server keeps the message and replaces any previous one on the topic.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        await pub.PublishAsync("r/x", "first", retain: true);
        await pub.PublishAsync("r/x", "second", retain: true);
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);

        await sub.SubscribeOkAsync("r/#");
        await pub.PublishAsync("r/marker", "m");

        await sub.ExpectOnlyAsync("r/x", "second");
        await sub.ExpectOnlyAsync("r/marker", "m");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Retained_EmptyPayload_DeletesRetainedMessage(MqttProtocolVersion version)
    {
        // [MQTT-3.3.1-10] (v3.1.1) / [MQTT-3.3.1-6] (v5): a retained PUBLISH with zero-length payload removes the
        // retained message [MQTT-3.3.1-11]: it is not stored and later subscribers get nothing.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        await pub.PublishAsync("r/x", "kept", retain: true);
        await pub.PublishAsync("r/x", "", retain: true);
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);

        await sub.SubscribeOkAsync("r/#");
        await pub.PublishAsync("r/marker", "m");

        await sub.ExpectOnlyAsync("r/marker", "m");
        Assert.Equal(0, broker.Engine.RetainedCount);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Retained_OnSubscribeHasRetain1_LiveForwardHasRetain0(MqttProtocolVersion version)
    {
        // [MQTT-3.3.1-8]: sent because of a new subscription → RETAIN 1;
        // [MQTT-3.3.1-9] (v3.1.1; v5 with Retain As Published 0): forwarded to existing subscribers → RETAIN 0.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var early = await TestClient.ConnectAsync(broker.MqttPort, "early", version: version);
        await early.SubscribeOkAsync("r/x");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        await pub.PublishAsync("r/x", "state", retain: true);

        var live = await early.NextAsync();
        Assert.Equal("state", TestClient.Text(live));
        Assert.False(live.ApplicationMessage.Retain);

        await using var late = await TestClient.ConnectAsync(broker.MqttPort, "late", version: version);
        await late.SubscribeOkAsync("r/x");
        var stored = await late.NextAsync();
        Assert.Equal("state", TestClient.Text(stored));
        Assert.True(stored.ApplicationMessage.Retain);
    }

    [Fact]
    public async Task Retained_MessageExpiryPassed_NotSentToNewSubscribers()
    {
        // [MQTT-3.3.2-5]: once the Message Expiry Interval has passed the retained message is not delivered;
        // before that it is, with the interval reduced by the time it waited [MQTT-3.3.2-6].
        await using var broker = await TestBroker.StartPlainAsync(fakeClock: true);
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("r/x", "short-lived", retain: true, configure: m => m.WithMessageExpiryInterval(10));

        broker.Clock!.Advance(TimeSpan.FromSeconds(4));
        await using (var before = await TestClient.ConnectAsync(broker.MqttPort, "before"))
        {
            await before.SubscribeOkAsync("r/#");
            var received = await before.NextAsync();
            Assert.Equal("short-lived", TestClient.Text(received));
            Assert.Equal(6u, received.ApplicationMessage.MessageExpiryInterval);
        }

        broker.Clock.Advance(TimeSpan.FromSeconds(7));
        await using var after = await TestClient.ConnectAsync(broker.MqttPort, "after");
        await after.SubscribeOkAsync("r/#");
        await pub.PublishAsync("r/marker", "m");
        await after.ExpectOnlyAsync("r/marker", "m");
    }
}
