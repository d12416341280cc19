using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>
/// Topic aliases from the broker to a v5 client [MQTT-3.3.2-7 .. -12]: the first PUBLISH of a topic carries the
/// topic and an alias, later ones the alias and an empty topic; never more aliases than the client's Topic Alias
/// Maximum; none for a client that announced none; a new connection starts with none. (Aliases from the client to
/// the broker: <see cref="LimitsTests"/>.)
/// </summary>
public class TopicAliasTests : BrokerTestBase
{
    [Fact]
    public async Task ThreeMessagesOnOneTopic_TopicAndAliasFirst_ThenAliasAndEmptyTopic()
    {
        // v5 §3.3.2.3.4: a PUBLISH with a topic and a Topic Alias sets the mapping; one with the alias and an empty
        // topic means that topic. The alias is within what the client accepts [MQTT-3.3.2-11] and not 0 [MQTT-3.3.2-8].
        // (The Paho v5 interoperability suite's test_server_topic_alias: one message per QoS.)
        await using var broker = await StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "aliased", MqttProtocolVersion.V500, configure: c => c.TopicAliasMaximum = 5);
        await raw.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await publisher.PublishAsync("ta/long/topic", "m0", MqttQualityOfServiceLevel.AtMostOnce);
        await publisher.PublishAsync("ta/long/topic", "m1", MqttQualityOfServiceLevel.AtLeastOnce);
        await publisher.PublishAsync("ta/long/topic", "m2", MqttQualityOfServiceLevel.ExactlyOnce);

        var first = await NextPublishAsync(raw);
        var second = await NextPublishAsync(raw);
        var third = await NextPublishAsync(raw);

        Assert.Equal(("ta/long/topic", "m0"), (first.Topic, Raw.Text(first)));
        Assert.InRange(first.TopicAlias, (ushort)1, (ushort)5);
        Assert.Equal(("", "m1", first.TopicAlias), (second.Topic, Raw.Text(second), second.TopicAlias));
        Assert.Equal(("", "m2", first.TopicAlias), (third.Topic, Raw.Text(third), third.TopicAlias));
    }

    [Fact]
    public async Task AllAliasesUsed_FurtherTopicsGoInFull_ExistingAliasesKeepTheirMeaning()
    {
        // [MQTT-3.3.2-11]: never an alias above the client's Topic Alias Maximum (here 2). The broker's policy: aliases
        // are handed out until that maximum, then new topics are sent with their full name and no alias.
        await using var broker = await StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "few", MqttProtocolVersion.V500, configure: c => c.TopicAliasMaximum = 2);
        await raw.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.AtMostOnce);
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        foreach (var topic in new[] { "ta/a", "ta/b", "ta/c", "ta/c", "ta/a", "ta/b" })
        {
            await publisher.PublishAsync(topic, topic, MqttQualityOfServiceLevel.AtMostOnce);
        }

        var seen = new List<(string Topic, ushort Alias)>();
        for (var i = 0; i < 6; i++)
        {
            var p = await NextPublishAsync(raw);
            Assert.Equal(Raw.Text(p), p.Topic.Length > 0 ? p.Topic : seen.Last(s => s.Alias == p.TopicAlias && s.Topic.Length > 0).Topic);
            seen.Add((p.Topic, p.TopicAlias));
        }

        Assert.Equal(
            [("ta/a", (ushort)1), ("ta/b", (ushort)2), ("ta/c", (ushort)0), ("ta/c", (ushort)0), ("", (ushort)1), ("", (ushort)2)],
            seen);
    }

    [Theory]
    [InlineData((ushort)0)]
    [InlineData(null)]
    public async Task ClientWithoutTopicAliasMaximum_GetsNoAliases(ushort? maximum)
    {
        // [MQTT-3.3.2-11] with v5 §3.1.2.11.5: Topic Alias Maximum absent or 0 means the client accepts no alias, so
        // every PUBLISH has its full topic and no Topic Alias.
        await using var broker = await StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "plain", MqttProtocolVersion.V500, configure: c => c.TopicAliasMaximum = maximum ?? 0);
        await raw.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        for (var i = 0; i < 3; i++)
        {
            await publisher.PublishAsync("ta/x", "m" + i);
        }

        for (var i = 0; i < 3; i++)
        {
            var p = await NextPublishAsync(raw);
            Assert.Equal(("ta/x", (ushort)0), (p.Topic, p.TopicAlias));
        }
    }

    [Fact]
    public async Task Reconnect_StartsWithoutAliases_EvenForTheResentMessage()
    {
        // [MQTT-3.3.2-7]: a receiver MUST NOT carry forward any Topic Alias mappings from one Network Connection to
        // another. After a reconnect the first PUBLISH of a topic (here the re-sent, unacknowledged one, DUP) again
        // carries the full topic with its alias.
        await using var broker = await StartPlainAsync();
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await using (var first = await Raw.ConnectAsync(broker.MqttPort, "roamer", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 300, configure: c => c.TopicAliasMaximum = 5))
        {
            await first.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.AtLeastOnce);
            await publisher.PublishAsync("ta/x", "acked");
            var acked = await NextPublishAsync(first);
            Assert.Equal("ta/x", acked.Topic);
            await first.SendAsync(new MqttPubAckPacket { PacketIdentifier = acked.PacketIdentifier });
            await publisher.PublishAsync("ta/x", "unacked");
            var unacked = await NextPublishAsync(first);
            Assert.Equal(("", acked.TopicAlias), (unacked.Topic, unacked.TopicAlias)); // alias only on this connection
        }

        await broker.WaitOfflineAsync("roamer");
        await using var second = await Raw.ConnectAsync(broker.MqttPort, "roamer", MqttProtocolVersion.V500, cleanSession: false, sessionExpiry: 300, sessionPresent: true, configure: c => c.TopicAliasMaximum = 5);
        var resent = await NextPublishAsync(second);
        Assert.True(resent.Dup);
        Assert.Equal(("ta/x", "unacked"), (resent.Topic, Raw.Text(resent)));
        Assert.NotEqual(0, resent.TopicAlias);
        await second.SendAsync(new MqttPubAckPacket { PacketIdentifier = resent.PacketIdentifier });

        await publisher.PublishAsync("ta/x", "after");
        var after = await NextPublishAsync(second);
        Assert.Equal(("", resent.TopicAlias, "after"), (after.Topic, after.TopicAlias, Raw.Text(after)));
    }

    [Fact]
    public async Task AliasesArePerRecipient_OneClientsAliasesDoNotLeakIntoAnothers()
    {
        // Every recipient gets its own PUBLISH (the message is shared, the packet is not): a client with aliases and one
        // without, on the same messages, each see what they asked for.
        await using var broker = await StartPlainAsync();
        await using var aliased = await Raw.ConnectAsync(broker.MqttPort, "aliased", MqttProtocolVersion.V500, configure: c => c.TopicAliasMaximum = 3);
        await aliased.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.AtMostOnce);
        await using var plain = await Raw.ConnectAsync(broker.MqttPort, "plain", MqttProtocolVersion.V500);
        await plain.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.AtMostOnce);
        await using var old = await Raw.ConnectAsync(broker.MqttPort, "old", MqttProtocolVersion.V311);
        await old.SubscribeAsync("ta/#", MqttQualityOfServiceLevel.AtMostOnce);
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        await publisher.PublishAsync("ta/x", "1", MqttQualityOfServiceLevel.AtMostOnce);
        await publisher.PublishAsync("ta/x", "2", MqttQualityOfServiceLevel.AtMostOnce);

        Assert.Equal("ta/x", (await NextPublishAsync(aliased)).Topic);
        Assert.Equal("", (await NextPublishAsync(aliased)).Topic);
        foreach (var client in new[] { plain, old })
        {
            for (var i = 0; i < 2; i++)
            {
                var p = await NextPublishAsync(client);
                Assert.Equal(("ta/x", (ushort)0), (p.Topic, p.TopicAlias));
            }
        }
    }

    [Fact]
    public async Task MqttNetClientWithTopicAliasMaximum_ReceivesTheRightTopics()
    {
        // [MQTT-3.3.2-10]: a client accepts every alias up to the maximum it sent. MQTTnet 5.2's client decodes the Topic
        // Alias but does not resolve it (the message's Topic is then ""), so an application keeps the map itself, as
        // here: with it, every message of two topics taking turns has its full topic, and each topic's first message
        // brought topic and alias together (v5 3.3.2.3.4).
        await using var broker = await StartPlainAsync();
        await using var receiver = await TestClient.ConnectAsync(broker.MqttPort, "mqttnet", configure: o => o.WithTopicAliasMaximum(10));
        await receiver.SubscribeOkAsync("ta/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await using var publisher = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        var topics = new[] { "ta/one", "ta/two", "ta/one", "ta/two", "ta/one" };
        for (var i = 0; i < topics.Length; i++)
        {
            await publisher.PublishAsync(topics[i], "m" + i);
        }

        var aliases = new Dictionary<ushort, string>();
        for (var i = 0; i < topics.Length; i++)
        {
            var received = await receiver.NextAsync();
            var message = received.ApplicationMessage;
            Assert.InRange(message.TopicAlias, (ushort)1, (ushort)10);
            if (!string.IsNullOrEmpty(message.Topic))
            {
                Assert.False(aliases.ContainsKey(message.TopicAlias), "a topic is sent in full once per connection");
                aliases[message.TopicAlias] = message.Topic;
            }

            Assert.Equal((topics[i], "m" + i), (aliases[message.TopicAlias], TestClient.Text(received)));
        }

        Assert.Equal(2, aliases.Count);
    }

    /// <summary>The next PUBLISH, acknowledging nothing (QoS 1/2 ones stay in flight).</summary>
    static Task<MqttPublishPacket> NextPublishAsync(RawClient raw) => raw.ExpectAsync<MqttPublishPacket>();
}
