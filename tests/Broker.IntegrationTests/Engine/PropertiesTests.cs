using System.Text;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>v5 PUBLISH properties reach subscribers unchanged in plain mode [MQTT-3.3.2-15 .. -20].</summary>
public class PropertiesTests : BrokerTestBase
{
    static readonly byte[] Correlation = [0x00, 0x01, 0xFE, 0xFF];

    static void WithAllProperties(MqttApplicationMessageBuilder m) => m
        .WithContentType("application/json")
        .WithResponseTopic("reply/here")
        .WithCorrelationData(Correlation)
        .WithPayloadFormatIndicator(MqttPayloadFormatIndicator.CharacterData)
        .WithUserProperty("k", Encoding.UTF8.GetBytes("v1").AsMemory())
        .WithUserProperty("other", Encoding.UTF8.GetBytes("x").AsMemory())
        .WithUserProperty("k", Encoding.UTF8.GetBytes("v2").AsMemory());

    static void AssertAllProperties(MqttApplicationMessage m)
    {
        Assert.Equal("{\"a\":1}", Encoding.UTF8.GetString(m.Payload)); // [MQTT-3.3.2-4] payload unaltered
        Assert.Equal("application/json", m.ContentType); // [MQTT-3.3.2-20]
        Assert.Equal("reply/here", m.ResponseTopic); // [MQTT-3.3.2-15]
        Assert.Equal(Correlation, m.CorrelationData); // [MQTT-3.3.2-16]
        Assert.Equal(MqttPayloadFormatIndicator.CharacterData, m.PayloadFormatIndicator); // [MQTT-3.3.2-4]

        // [MQTT-3.3.2-17, -18]: user properties unaltered, in order, duplicates kept.
        Assert.Equal(
            [("k", "v1"), ("other", "x"), ("k", "v2")],
            m.UserProperties.Select(p => (p.Name, Encoding.UTF8.GetString(p.ValueBuffer.Span))));
    }

    [Fact]
    public async Task Properties_LiveDelivery_PassThroughUnchanged()
    {
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("props/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        await pub.PublishAsync("props/x", "{\"a\":1}", configure: WithAllProperties);

        AssertAllProperties((await sub.NextAsync()).ApplicationMessage);
    }

    [Fact]
    public async Task Properties_QueuedForOfflineSession_PassThroughUnchanged()
    {
        await using var broker = await StartPlainAsync();
        var raw = await Raw.ConnectAsync(broker.MqttPort, "later", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 300);
        await raw.SubscribeAsync("props/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await raw.DisconnectAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        await pub.PublishAsync("props/x", "{\"a\":1}", configure: WithAllProperties);
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "later", cleanStart: false, sessionExpiry: 300);

        AssertAllProperties((await sub.NextAsync()).ApplicationMessage);
    }

    [Fact]
    public async Task Properties_RetainedMessage_PassThroughUnchanged()
    {
        await using var broker = await StartPlainAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("props/x", "{\"a\":1}", retain: true, configure: WithAllProperties);
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");

        await sub.SubscribeOkAsync("props/#");

        AssertAllProperties((await sub.NextAsync()).ApplicationMessage);
    }

    [Fact]
    public async Task Properties_V311Subscriber_GetsPayloadOnly()
    {
        // A v3.1.1 subscriber cannot carry properties; it still gets the message and its payload unchanged.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: MqttProtocolVersion.V311);
        await sub.SubscribeOkAsync("props/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        await pub.PublishAsync("props/x", "{\"a\":1}", configure: WithAllProperties);

        await sub.ExpectOnlyAsync("props/x", "{\"a\":1}");
    }
}
