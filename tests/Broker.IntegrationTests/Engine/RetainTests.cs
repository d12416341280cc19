using System.Text;
using Broker.Engine.Policy;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>Retained messages: set, replace, delete, the RETAIN flag on delivery, expiry [MQTT-3.3.1-5 .. -12].</summary>
public class RetainTests : BrokerTestBase
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Retained_SetThenReplaced_NewSubscriberGetsOnlyTheLatest(MqttProtocolVersion version)
    {
        // [MQTT-3.3.1-5]: the server keeps the message and replaces any previous one on the topic.
        await using var broker = await StartPlainAsync();
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
        await using var broker = await StartPlainAsync();
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
        await using var broker = await StartPlainAsync();
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
        await using var broker = await StartPlainAsync(fakeClock: true);
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

    // ---- broker-wide bounds (docs/reliability.md, "Retained messages") ---------------------------------

    [Fact]
    public async Task RetainedLimit_V5_NewTopicBeyondMaxMessages_Gets0x97_NotRetainedNorDelivered_ReplaceAndDeleteWork()
    {
        await using var broker = await StartPlainAsync(s => s["Broker:Limits:MaxRetainedMessages"] = "3");
        await using var live = await TestClient.ConnectAsync(broker.MqttPort, "live");
        await live.SubscribeOkAsync("r/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        for (var i = 1; i <= 3; i++)
        {
            Assert.Equal(MqttClientPublishReasonCode.Success, (await pub.PublishAsync($"r/{i}", $"v{i}", retain: true)).ReasonCode);
            await live.ExpectOnlyAsync($"r/{i}", $"v{i}");
        }

        // The 4th new topic: 0x97, and refused as a whole (a failed PUBACK means not accepted): no live copy either.
        Assert.Equal(MqttClientPublishReasonCode.QuotaExceeded, (await pub.PublishAsync("r/4", "v4", retain: true)).ReasonCode);
        await using (var raw = await Raw.ConnectAsync(broker.MqttPort, "raw", MqttProtocolVersion.V500))
        {
            // QoS 2: PUBREC 0x97 ends the exchange [MQTT-4.3.3-4 v5].
            var qos2 = Raw.Publish("r/4", "v4", MqttQualityOfServiceLevel.ExactlyOnce, 7);
            qos2.Retain = true;
            await raw.SendAsync(qos2);
            Assert.Equal(MqttPubRecReasonCode.QuotaExceeded, (await raw.ExpectAsync<MqttPubRecPacket>()).ReasonCode);
        }

        Assert.Equal(2, broker.Counters.RetainedRefused);
        Assert.Equal(3, broker.Engine.RetainedCount);

        // Replacing an existing topic is always allowed; so is a non-retained publish.
        Assert.Equal(MqttClientPublishReasonCode.Success, (await pub.PublishAsync("r/1", "v1b", retain: true)).ReasonCode);
        await live.ExpectOnlyAsync("r/1", "v1b");
        Assert.Equal(MqttClientPublishReasonCode.Success, (await pub.PublishAsync("r/5", "not retained")).ReasonCode);
        await live.ExpectOnlyAsync("r/5", "not retained");

        // A new subscriber gets the three kept, never r/4 [MQTT-3.3.1-6].
        await using (var late = await TestClient.ConnectAsync(broker.MqttPort, "late"))
        {
            await late.SubscribeOkAsync("r/#");
            Assert.Equal(["r/1=v1b", "r/2=v2", "r/3=v3"], await DrainUntilMarkerAsync(late, pub, "r/marker"));
        }

        // Deleting one (empty payload) frees a place.
        Assert.Equal(MqttClientPublishReasonCode.Success, (await pub.PublishAsync("r/2", "", retain: true)).ReasonCode);
        Assert.Equal(MqttClientPublishReasonCode.Success, (await pub.PublishAsync("r/4", "v4", retain: true)).ReasonCode);
        await using var later = await TestClient.ConnectAsync(broker.MqttPort, "later");
        await later.SubscribeOkAsync("r/#");
        Assert.Equal(["r/1=v1b", "r/3=v3", "r/4=v4"], await DrainUntilMarkerAsync(later, pub, "r/marker"));
    }

    [Fact]
    public async Task RetainedLimit_V311_NewTopicBeyondMaxMessages_AcknowledgedNotRetained_Counted()
    {
        // v3.1.1 cannot say no: acknowledged, dropped (not retained, not delivered), logged, counted [contract §2].
        await using var broker = await StartPlainAsync(s => s["Broker:Limits:MaxRetainedMessages"] = "3");
        await using var live = await TestClient.ConnectAsync(broker.MqttPort, "live", version: MqttProtocolVersion.V311);
        await live.SubscribeOkAsync("r/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: MqttProtocolVersion.V311);
        for (var i = 1; i <= 3; i++)
        {
            await pub.PublishAsync($"r/{i}", $"v{i}", retain: true);
            await live.ExpectOnlyAsync($"r/{i}", $"v{i}");
        }

        var refused = await pub.PublishAsync("r/4", "v4", retain: true); // the PUBACK arrives
        Assert.Equal(MqttClientPublishReasonCode.Success, refused.ReasonCode);
        await pub.PublishAsync("r/4", "v4", MqttQualityOfServiceLevel.ExactlyOnce, retain: true); // PUBREC, PUBREL, PUBCOMP
        await pub.PublishAsync("r/4", "v4", MqttQualityOfServiceLevel.AtMostOnce, retain: true);
        await pub.PublishAsync("r/marker", "m");
        await live.ExpectOnlyAsync("r/marker", "m");
        Assert.Equal(3, broker.Counters.RetainedRefused);
        Assert.True(pub.Client.IsConnected);
        using (var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") })
        {
            Assert.Contains("\nims_broker_retained_refused 3\n", await http.GetStringAsync("/metrics"), StringComparison.Ordinal);
        }

        await using var late = await TestClient.ConnectAsync(broker.MqttPort, "late", version: MqttProtocolVersion.V311);
        await late.SubscribeOkAsync("r/#");
        Assert.Equal(["r/1=v1", "r/2=v2", "r/3=v3"], await DrainUntilMarkerAsync(late, pub, "r/marker"));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task RetainedLimit_Bytes_NewTopicBeyondMaxBytes_Refused_SmallerReplacementAllowed(MqttProtocolVersion version)
    {
        // Each message is 3 topic bytes + 400 payload bytes: two fit in 1,000, a third does not.
        await using var broker = await StartPlainAsync(s => s["Broker:Limits:MaxRetainedBytes"] = "1000");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);
        var big = new string('x', 400);
        var ok = MqttClientPublishReasonCode.Success;
        var refused = version == MqttProtocolVersion.V500 ? MqttClientPublishReasonCode.QuotaExceeded : ok;
        Assert.Equal(ok, (await pub.PublishAsync("b/1", big, retain: true)).ReasonCode);
        Assert.Equal(ok, (await pub.PublishAsync("b/2", big, retain: true)).ReasonCode);
        Assert.Equal(refused, (await pub.PublishAsync("b/3", big, retain: true)).ReasonCode);
        Assert.Equal(1, broker.Counters.RetainedRefused);
        Assert.Equal(ok, (await pub.PublishAsync("b/1", "small", retain: true)).ReasonCode);
        Assert.Equal(ok, (await pub.PublishAsync("b/3", "small too", retain: true)).ReasonCode);
        Assert.Equal(1, broker.Counters.RetainedRefused);

        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await sub.SubscribeOkAsync("b/+");
        Assert.Equal(["b/1=small", $"b/2={big}", "b/3=small too"], await DrainUntilMarkerAsync(sub, pub, "b/marker"));
    }

    [Fact]
    public async Task Retained_WildcardSubscribe_ManyTopics_ExactlyTheMatchingOnes_DollarTopicsNotUnderLeadingWildcard()
    {
        // [MQTT-3.3.1-6]: a new subscription gets the retained messages its filter matches, and only those;
        // [MQTT-4.7.2-1]: '#' and '+' at the first level do not match topics beginning with '$'.
        await using var broker = await StartPlainAsync();
        var sys = new ClientPrincipal("$SYS", "$SYS", "service");
        for (var i = 0; i < 500; i++)
        {
            await broker.Engine.PublishAsync(sys, $"w/{i % 10}/{i}", Encoding.UTF8.GetBytes($"p{i}"), MqttQualityOfServiceLevel.AtMostOnce, retain: true);
        }

        await broker.Engine.PublishAsync(sys, "$SYS/broker/test", "s"u8.ToArray(), MqttQualityOfServiceLevel.AtMostOnce, retain: true);
        await broker.Engine.PublishAsync(sys, "$app/w/1", "a"u8.ToArray(), MqttQualityOfServiceLevel.AtMostOnce, retain: true);
        Assert.Equal(502, broker.Engine.RetainedCount);
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        async Task<List<string>> On(string filter, string marker)
        {
            await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
            await sub.SubscribeOkAsync(filter);
            return await DrainUntilMarkerAsync(sub, pub, marker);
        }

        var all = await On("#", "marker");
        Assert.Equal(500, all.Count);
        Assert.DoesNotContain(all, t => t.StartsWith('$'));
        Assert.Equal(Enumerable.Range(0, 50).Select(n => $"w/3/{n * 10 + 3}=p{n * 10 + 3}").Order(StringComparer.Ordinal), await On("w/3/+", "w/3/marker"));
        Assert.Equal(["w/7/7=p7"], await On("w/+/7", "w/marker/7"));
        Assert.Equal(["w/7/7=p7"], await On("+/7/7", "marker/7/7"));
        Assert.Equal(50, (await On("w/1/#", "w/1/marker")).Count);
        Assert.Empty(await On("+/w/1", "marker/w/1"));
        Assert.Equal(["$app/w/1=a"], await On("$app/#", "$app/marker"));
        Assert.Equal(["$app/w/1=a"], await On("$app/+/1", "$app/marker/1"));
    }

    /// <summary>Publishes a marker the subscriber's filter matches and returns what came before it, as "topic=payload", sorted.</summary>
    static async Task<List<string>> DrainUntilMarkerAsync(TestClient sub, TestClient pub, string marker)
    {
        await pub.PublishAsync(marker, "marker");
        var seen = new List<string>();
        while (true)
        {
            var next = await sub.NextAsync();
            if (next.ApplicationMessage.Topic == marker)
            {
                return [.. seen.Order(StringComparer.Ordinal)];
            }

            seen.Add($"{next.ApplicationMessage.Topic}={TestClient.Text(next)}");
        }
    }
}
