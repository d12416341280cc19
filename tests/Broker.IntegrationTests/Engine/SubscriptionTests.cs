using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>Topic filters, SUBACK/UNSUBACK, subscription options and shared subscriptions [MQTT-3.8 – 3.11, 4.7, 4.8].</summary>
public class SubscriptionTests : BrokerTestBase
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Wildcards_PlusAndHash_MatchAsSpecified(MqttProtocolVersion version)
    {
        // [MQTT-4.7.1-2]: '#' matches the parent and any number of levels ("h/#" matches "h");
        // [MQTT-4.7.1-3]: '+' matches exactly one level.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await sub.SubscribeOkAsync("w/+/c");
        await sub.SubscribeOkAsync("h/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        foreach (var topic in new[] { "w/b/c", "w/b/d", "w/b/c/d", "w/c", "h", "h/x/y", "hx", "w//c" })
        {
            await pub.PublishAsync(topic, topic);
        }

        await pub.PublishAsync("h/end", "marker");

        await sub.ExpectOnlyAsync("w/b/c", "w/b/c");
        await sub.ExpectOnlyAsync("h", "h");
        await sub.ExpectOnlyAsync("h/x/y", "h/x/y");
        await sub.ExpectOnlyAsync("w//c", "w//c"); // '+' matches an empty level too
        await sub.ExpectOnlyAsync("h/end", "marker");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task DollarTopics_NotMatchedByLeadingWildcards(MqttProtocolVersion version)
    {
        // [MQTT-4.7.2-1]: filters starting with '#' or '+' do not match topics starting with '$'.
        await using var broker = await StartPlainAsync();
        await using var wild = await TestClient.ConnectAsync(broker.MqttPort, "wild", version: version);
        await wild.SubscribeOkAsync("#");
        await wild.SubscribeOkAsync("+/x");
        await using var dollar = await TestClient.ConnectAsync(broker.MqttPort, "dollar", version: version);
        await dollar.SubscribeOkAsync("$app/+");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        await pub.PublishAsync("$app/x", "dollar");
        await pub.PublishAsync("m/x", "marker");

        await dollar.ExpectOnlyAsync("$app/x", "dollar");
        await wild.ExpectOnlyAsync("m/x", "marker");
    }

    [Fact]
    public async Task SysTopics_PublishByClient_RefusedWithNotAuthorized()
    {
        // $SYS is the server's: a v5 client's publish there gets PUBACK 0x87 and goes nowhere.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("$SYS/#");
        await sub.SubscribeOkAsync("marker");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        var result = await pub.PublishAsync("$SYS/fake", "x");
        await pub.PublishAsync("marker", "m");

        Assert.Equal(MqttClientPublishReasonCode.NotAuthorized, result.ReasonCode);
        await sub.ExpectOnlyAsync("marker", "m");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task SubAck_MixedFilters_OneCodePerFilterInRequestOrder(MqttProtocolVersion version)
    {
        // [MQTT-3.9.3-1] (v3.1.1 [MQTT-3.8.4-6]): one return code per filter, in order; a filter that is well formed
        // but refused (here: above Broker:Limits:MaxTopicLevels) gets 0x80 (v3.1.1) or 0x8F Topic Filter Invalid (v5)
        // while the others are granted. (A filter against the grammar of 4.7.1 closes the connection: FuzzTests.)
        await using var broker = await StartPlainAsync(s => s["Broker:Limits:MaxTopicLevels"] = "3");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "mixed", version);
        await raw.SendAsync(new MqttSubscribePacket
        {
            PacketIdentifier = 3,
            TopicFilters =
            [
                new MqttTopicFilter { Topic = "s/0", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtMostOnce },
                new MqttTopicFilter { Topic = "a/b/c/#", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce },
                new MqttTopicFilter { Topic = "s/2", QualityOfServiceLevel = MqttQualityOfServiceLevel.ExactlyOnce },
                new MqttTopicFilter { Topic = "a/+/c/d", QualityOfServiceLevel = MqttQualityOfServiceLevel.ExactlyOnce },
                new MqttTopicFilter { Topic = "s/1", QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce },
            ],
        });

        var ack = await raw.ExpectAsync<MqttSubAckPacket>();
        var invalid = version == MqttProtocolVersion.V500 ? 0x8F : 0x80;
        Assert.Equal(3, ack.PacketIdentifier);
        Assert.Equal([0x00, invalid, 0x02, invalid, 0x01], ack.ReasonCodes.Select(c => (int)c));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task OverlappingSubscriptions_OneCopyWithMaxQosAndAllIdentifiers(MqttProtocolVersion version)
    {
        // [MQTT-3.3.4-2]: one copy with the highest QoS of the matching subscriptions;
        // [MQTT-3.3.4-3] (v5): carrying the identifiers of all of them.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        var v5 = version == MqttProtocolVersion.V500;
        await sub.SubscribeAsync("o/#", MqttQualityOfServiceLevel.AtMostOnce, subscriptionId: v5 ? 1u : 0u);
        await sub.SubscribeAsync("o/+", MqttQualityOfServiceLevel.ExactlyOnce, subscriptionId: v5 ? 2u : 0u);
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        await pub.PublishAsync("o/x", "both", MqttQualityOfServiceLevel.ExactlyOnce);
        await pub.PublishAsync("o/marker/deep", "marker"); // matches "o/#" only

        var received = await sub.NextAsync();
        Assert.Equal(("o/x", "both"), (received.ApplicationMessage.Topic, TestClient.Text(received)));
        Assert.Equal(MqttQualityOfServiceLevel.ExactlyOnce, received.ApplicationMessage.QualityOfServiceLevel);
        if (v5)
        {
            Assert.Equal([1u, 2u], received.ApplicationMessage.SubscriptionIdentifiers.Order());
        }

        await sub.ExpectOnlyAsync("o/marker/deep", "marker");
    }

    [Fact]
    public async Task SubscriptionIdentifier_Given_CarriedOnEveryMatchingMessage()
    {
        // [MQTT-3.8.2.1.2] / [MQTT-3.3.4-3]: the identifier of the matching subscription is sent with the PUBLISH;
        // a subscription without one adds none.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeAsync("id/with", subscriptionId: 42);
        await sub.SubscribeAsync("id/without");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        await pub.PublishAsync("id/with", "a");
        await pub.PublishAsync("id/without", "b");

        var with = await sub.NextAsync();
        Assert.Equal([42u], with.ApplicationMessage.SubscriptionIdentifiers);
        var without = await sub.NextAsync();
        Assert.Equal("id/without", without.ApplicationMessage.Topic);
        Assert.True(without.ApplicationMessage.SubscriptionIdentifiers is null or { Count: 0 });
    }

    [Fact]
    public async Task NoLocal_Set_OwnPublishesNotDelivered()
    {
        // [MQTT-3.8.3-3]: with No Local the server does not forward a client's own messages to it.
        await using var broker = await StartPlainAsync();
        await using var self = await TestClient.ConnectAsync(broker.MqttPort, "self");
        await self.SubscribeAsync("nl/#", configure: f => f.WithNoLocal());
        await using var other = await TestClient.ConnectAsync(broker.MqttPort, "other");

        await self.PublishAsync("nl/own", "mine");
        await other.PublishAsync("nl/theirs", "theirs");

        await self.ExpectOnlyAsync("nl/theirs", "theirs");
    }

    [Fact]
    public async Task NoLocal_Unset_OwnPublishesDelivered()
    {
        // [MQTT-3.8.3-3] converse: without No Local a client receives what it publishes to its own subscription.
        await using var broker = await StartPlainAsync();
        await using var self = await TestClient.ConnectAsync(broker.MqttPort, "self");
        await self.SubscribeOkAsync("echo/#");

        await self.PublishAsync("echo/own", "mine");

        await self.ExpectOnlyAsync("echo/own", "mine");
    }

    [Fact]
    public async Task RetainAsPublished_LiveRetainedMessage_KeepsRetainFlagOnlyForThatSubscription()
    {
        // [MQTT-3.3.1-12]: Retain As Published 1 forwards the RETAIN flag as published; 0 forwards RETAIN 0 [MQTT-3.3.1-13].
        await using var broker = await StartPlainAsync();
        await using var rap = await TestClient.ConnectAsync(broker.MqttPort, "rap");
        await rap.SubscribeAsync("rap/#", configure: f => f.WithRetainAsPublished());
        await using var plain = await TestClient.ConnectAsync(broker.MqttPort, "plain");
        await plain.SubscribeOkAsync("rap/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        await pub.PublishAsync("rap/x", "kept", retain: true);
        await pub.PublishAsync("rap/y", "live", retain: false);

        Assert.True((await rap.NextAsync()).ApplicationMessage.Retain);
        Assert.False((await rap.NextAsync()).ApplicationMessage.Retain);
        Assert.False((await plain.NextAsync()).ApplicationMessage.Retain);
        Assert.False((await plain.NextAsync()).ApplicationMessage.Retain);
    }

    [Fact]
    public async Task RetainHandling_0_1_2_SendRetainedAsAsked()
    {
        // [MQTT-3.3.1-9]: 0 sends retained messages on every SUBSCRIBE; [MQTT-3.3.1-10]: 1 only when the
        // subscription did not exist; [MQTT-3.3.1-11]: 2 never.
        await using var broker = await StartPlainAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("rh/x", "retained", retain: true);
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("rh/marker");

        async Task SubscribeThenMarker(string filter, MqttRetainHandling handling)
        {
            var result = await sub.SubscribeAsync(filter, configure: f => f.WithRetainHandling(handling));
            Assert.Equal(MqttClientSubscribeResultCode.GrantedQoS1, result.Items.Single().ResultCode);
            await pub.PublishAsync("rh/marker", filter + handling);
        }

        await SubscribeThenMarker("rh/+", MqttRetainHandling.SendAtSubscribe);
        await sub.ExpectOnlyAsync("rh/x", "retained");
        await sub.ExpectOnlyAsync("rh/marker", "rh/+" + MqttRetainHandling.SendAtSubscribe);
        await SubscribeThenMarker("rh/+", MqttRetainHandling.SendAtSubscribe);
        await sub.ExpectOnlyAsync("rh/x", "retained");
        await sub.ExpectOnlyAsync("rh/marker", "rh/+" + MqttRetainHandling.SendAtSubscribe);

        await SubscribeThenMarker("rh/#", MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly);
        await sub.ExpectOnlyAsync("rh/x", "retained");
        await sub.ExpectOnlyAsync("rh/marker", "rh/#" + MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly);
        await SubscribeThenMarker("rh/#", MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly);
        await sub.ExpectOnlyAsync("rh/marker", "rh/#" + MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly);

        await SubscribeThenMarker("rh/x", MqttRetainHandling.DoNotSendOnSubscribe);
        await sub.ExpectOnlyAsync("rh/marker", "rh/x" + MqttRetainHandling.DoNotSendOnSubscribe);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Unsubscribe_Subscribed_StopsDelivery(MqttProtocolVersion version)
    {
        // [MQTT-3.10.4-2]: after UNSUBSCRIBE the server stops adding messages for that filter.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await sub.SubscribeOkAsync("u/x");
        await sub.SubscribeOkAsync("u/marker");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        var result = await sub.Client.UnsubscribeAsync(new MqttClientUnsubscribeOptionsBuilder().WithTopicFilter("u/x").Build());
        await pub.PublishAsync("u/x", "gone");
        await pub.PublishAsync("u/marker", "m");

        Assert.Equal(MqttClientUnsubscribeResultCode.Success, result.Items.Single().ResultCode);
        await sub.ExpectOnlyAsync("u/marker", "m");
    }

    [Fact]
    public async Task Unsubscribe_UnknownFilters_V5NoSubscriptionExisted()
    {
        // [MQTT-3.11.3-1]: one UNSUBACK reason per filter, in order; 0x11 when there was no such subscription.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("u/known");

        var result = await sub.Client.UnsubscribeAsync(new MqttClientUnsubscribeOptionsBuilder()
            .WithTopicFilter("u/unknown").WithTopicFilter("u/known").Build());

        Assert.Equal(
            [MqttClientUnsubscribeResultCode.NoSubscriptionExisted, MqttClientUnsubscribeResultCode.Success],
            result.Items.Select(i => i.ResultCode));
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task SharedSubscription_TwoOnlineMembers_RoundRobinWhilePlainSubscriberGetsAll(MqttProtocolVersion version)
    {
        // [MQTT-4.8.2]: each message goes to one member of the share group; a plain subscription of the same
        // filter is independent of the group and gets every message.
        await using var broker = await StartPlainAsync();
        await using var a = await TestClient.ConnectAsync(broker.MqttPort, "member-a", version: version);
        await using var b = await TestClient.ConnectAsync(broker.MqttPort, "member-b", version: version);
        await using var plain = await TestClient.ConnectAsync(broker.MqttPort, "plain", version: version);
        await a.SubscribeOkAsync("$share/g/t/#");
        await b.SubscribeOkAsync("$share/g/t/#");
        await plain.SubscribeOkAsync("t/#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        for (var i = 1; i <= 10; i++)
        {
            await pub.PublishAsync($"t/{i}", $"m{i}");
        }

        for (var i = 1; i <= 10; i++)
        {
            await plain.ExpectOnlyAsync($"t/{i}", $"m{i}");
        }

        var seen = new List<string>();
        foreach (var member in new[] { a, b })
        {
            for (var i = 0; i < 5; i++)
            {
                seen.Add(TestClient.Text(await member.NextAsync()));
            }
        }

        // Five each, and together every message exactly once.
        Assert.Equal(Enumerable.Range(1, 10).Select(i => $"m{i}").Order(), seen.Order());
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Resubscribe_SameFilter_ReplacesSubscription(MqttProtocolVersion version)
    {
        // [MQTT-3.8.4-3]: a SUBSCRIBE with a filter identical to an existing one replaces it (new QoS), and the
        // client still gets one copy per message.
        await using var broker = await StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub", version: version);
        await sub.SubscribeOkAsync("re/x", MqttQualityOfServiceLevel.AtMostOnce);
        await sub.SubscribeOkAsync("re/x", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        await pub.PublishAsync("re/x", "one", MqttQualityOfServiceLevel.ExactlyOnce);
        await pub.PublishAsync("re/x", "two", MqttQualityOfServiceLevel.ExactlyOnce);

        var first = await sub.NextAsync();
        Assert.Equal(("one", MqttQualityOfServiceLevel.ExactlyOnce), (TestClient.Text(first), first.ApplicationMessage.QualityOfServiceLevel));
        await sub.ExpectOnlyAsync("re/x", "two");
    }

    [Fact]
    public async Task SharedSubscription_OnSubscribe_NoRetainedMessages()
    {
        // [MQTT-3.3.1-6] (v5): retained messages are sent when a new non-shared subscription is made; a shared
        // subscription gets none.
        await using var broker = await StartPlainAsync();
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await pub.PublishAsync("sr/x", "retained", retain: true);
        await using var member = await TestClient.ConnectAsync(broker.MqttPort, "member");

        await member.SubscribeOkAsync("$share/g/sr/#");
        await pub.PublishAsync("sr/live", "live");

        await member.ExpectOnlyAsync("sr/live", "live");
    }

    [Fact]
    public async Task SharedSubscription_MemberLeaves_RemainingMemberGetsAll()
    {
        // [MQTT-4.8.2]: a member that unsubscribed or whose session ended takes no more messages.
        await using var broker = await StartPlainAsync();
        await using var stays = await TestClient.ConnectAsync(broker.MqttPort, "stays");
        await stays.SubscribeOkAsync("$share/g/sl/#");
        await using (var leaves = await TestClient.ConnectAsync(broker.MqttPort, "leaves"))
        {
            await leaves.SubscribeOkAsync("$share/g/sl/#");
            await leaves.Client.UnsubscribeAsync(new MqttClientUnsubscribeOptionsBuilder().WithTopicFilter("$share/g/sl/#").Build());
        }

        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        for (var i = 1; i <= 4; i++)
        {
            await pub.PublishAsync($"sl/{i}", $"m{i}");
        }

        for (var i = 1; i <= 4; i++)
        {
            await stays.ExpectOnlyAsync($"sl/{i}", $"m{i}");
        }
    }
}
