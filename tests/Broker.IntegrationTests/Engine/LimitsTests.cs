using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>Packet size, malformed input, queue limit, topic length and topic aliases: one bad client hurts only itself.</summary>
public sealed class LimitsTests
{
    /// <summary>A subscriber and a publisher that must keep working while another client misbehaves.</summary>
    sealed class Bystanders : IAsyncDisposable
    {
        TestClient _sub = null!;
        TestClient _pub = null!;

        public static async Task<Bystanders> StartAsync(TestBroker broker)
        {
            var b = new Bystanders
            {
                _sub = await TestClient.ConnectAsync(broker.MqttPort, "bystander-sub"),
                _pub = await TestClient.ConnectAsync(broker.MqttPort, "bystander-pub", version: MqttProtocolVersion.V311),
            };
            await b._sub.SubscribeOkAsync("ok/#");
            return b;
        }

        public async Task StillWorkAsync(string payload)
        {
            await _pub.PublishAsync("ok/x", payload);
            await _sub.ExpectOnlyAsync("ok/x", payload);
            Assert.True(_pub.Client.IsConnected);
        }

        public async ValueTask DisposeAsync()
        {
            await _sub.DisposeAsync();
            await _pub.DisposeAsync();
        }
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PacketAboveMaxPacketSize_ClosesOnlyThatConnection(MqttProtocolVersion version)
    {
        // v5 §3.2.2.3.6 / [MQTT-4.13.1-1]: a packet above the Maximum Packet Size the server announced is a
        // protocol error: v5 DISCONNECT 0x95 (Packet too large), then close. v3.1.1 just closes.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:MaxPacketSize"] = "1024");
        await using var bystanders = await Bystanders.StartAsync(broker);
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("big"), version);
        await using var _ = raw;
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(1024u, ack.MaximumPacketSize);
        }

        await raw.SendAsync(Raw.Publish("big/x", new string('x', 2000), MqttQualityOfServiceLevel.AtLeastOnce, 1));

        var packets = await raw.ReadUntilClosedAsync();
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttDisconnectReasonCode.PacketTooLarge, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
        }
        else
        {
            Assert.Empty(packets);
        }

        Assert.Equal(1, broker.Counters.Oversized);
        await bystanders.StillWorkAsync("after oversized");
    }

    [Theory]
    [InlineData("kestrel")]
    [InlineData("sockets")]
    public async Task ConnectionsAboveMaxConnections_AreClosedAtOnce_OthersKeepWorking(string transport)
    {
        // Broker:Limits:MaxConnections: a connection over the limit is closed before any MQTT is read (no
        // CONNACK), on either TCP transport; the open ones are not disturbed, and a freed place is reusable.
        await using var broker = await TestBroker.StartPlainAsync(s =>
        {
            s["Broker:Limits:MaxConnections"] = "2";
            s["Broker:Mqtt:Transport"] = transport;
        });
        await using (var bystanders = await Bystanders.StartAsync(broker))
        {
            await using var third = await RawClient.OpenAsync(broker.MqttPort);
            await third.SendAsync(Raw.Connect("third"));
            Assert.Empty(await third.ReadUntilClosedAsync());
            await bystanders.StillWorkAsync("while the third was refused");
        }

        // The place is free once the broker has seen a bystander go; until then a new connection is still refused.
        var deadline = DateTime.UtcNow + TestClient.Timeout;
        while (true)
        {
            await using var next = await RawClient.OpenAsync(broker.MqttPort);
            await next.SendAsync(Raw.Connect("next"));
            if (await next.ReceiveAsync() is MqttConnAckPacket ack)
            {
                Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, ack.ReturnCode);
                break;
            }

            Assert.True(DateTime.UtcNow < deadline, "no connection was accepted after the bystanders left");
        }
    }

    [Fact]
    public async Task PacketAboveMaxPacketSize_RefusedFromFixedHeaderBeforeBody()
    {
        // The limit is checked on the Remaining Length: the broker closes without waiting for a body that never comes.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:MaxPacketSize"] = "1024");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "header-only");

        await raw.SendBytesAsync([0x30, 0xD0, 0x0F]); // PUBLISH, Remaining Length 2000, no body

        Assert.Empty(await raw.ReadUntilClosedAsync());
        Assert.Equal(1, broker.Counters.Oversized);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task GarbageBytes_AfterConnect_ClosesOnlyThatConnection(MqttProtocolVersion version)
    {
        // [MQTT-1.5.5-1] / [MQTT-4.13.1-1]: a Remaining Length of more than four bytes is malformed; the server
        // closes the connection (v5 after DISCONNECT 0x81 Malformed Packet).
        await using var broker = await TestBroker.StartPlainAsync();
        await using var bystanders = await Bystanders.StartAsync(broker);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "garbage", version);

        await raw.SendBytesAsync([0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);

        var packets = await raw.ReadUntilClosedAsync();
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttDisconnectReasonCode.MalformedPacket, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
        }
        else
        {
            Assert.Empty(packets);
        }

        Assert.Equal(1, broker.Counters.Malformed);
        await bystanders.StillWorkAsync("after garbage");
    }

    [Fact]
    public async Task GarbageBytes_InsteadOfConnect_ClosedAndCounted()
    {
        await using var broker = await TestBroker.StartPlainAsync();
        await using var bystanders = await Bystanders.StartAsync(broker);
        await using var raw = await RawClient.OpenAsync(broker.MqttPort);

        await raw.SendBytesAsync([0xFF, 0xFF, 0xFF, 0xFF, 0xFF]);

        Assert.Empty(await raw.ReadUntilClosedAsync());
        Assert.Equal(1, broker.Counters.Malformed);
        await bystanders.StillWorkAsync("after garbage");
    }

    [Fact]
    public async Task QueueLimit_OfflineSubscriber_KeepsNewestAndDroppedNeverReturn()
    {
        // Broker:OfflineQueue:MaxMessages bounds a persistent session's queue: the oldest are dropped, counted,
        // and never resent. The window in memory (Broker:MaxQueuedMessages) is smaller still: the rest is paged in.
        await using var broker = await TestBroker.StartPlainAsync(s =>
        {
            s["Broker:OfflineQueue:MaxMessages"] = "5";
            s["Broker:MaxQueuedMessages"] = "2";
        });
        var v5 = MqttProtocolVersion.V500;
        var raw = await Raw.ConnectAsync(broker.MqttPort, "slow", v5, cleanSession: false, sessionExpiry: 300);
        await raw.SubscribeAsync("ql/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await raw.DisconnectAsync();

        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");
        for (var i = 1; i <= 8; i++)
        {
            await pub.PublishAsync($"ql/{i}", $"m{i}");
        }

        Assert.Equal(3, broker.Counters.Dropped);

        raw = await Raw.ConnectAsync(broker.MqttPort, "slow", v5, cleanSession: false, sessionExpiry: 300, sessionPresent: true);
        for (var i = 4; i <= 8; i++)
        {
            var publish = await raw.ExpectAsync<MqttPublishPacket>();
            Assert.Equal(($"ql/{i}", $"m{i}"), (publish.Topic, Raw.Text(publish)));
            await raw.SendAsync(new MqttPubAckPacket { PacketIdentifier = publish.PacketIdentifier });
        }

        await raw.DisconnectAsync();

        await using var again = await Raw.ConnectAsync(broker.MqttPort, "slow", v5, cleanSession: false, sessionExpiry: 300, sessionPresent: true);
        await pub.PublishAsync("ql/marker", "m", MqttQualityOfServiceLevel.AtMostOnce);
        var next = await again.ExpectAsync<MqttPublishPacket>();
        Assert.Equal("ql/marker", next.Topic);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task TopicAboveMaxTopicLength_RefusedAndNotRouted(MqttProtocolVersion version)
    {
        // v5: PUBACK 0x90 Topic Name invalid [MQTT-3.3.4 v5 reason codes]; v3.1.1 cannot refuse, so it is
        // acknowledged and dropped. Either way nobody receives it.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Limits:MaxTopicLength"] = "64");
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("#");
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub", version: version);

        var result = await pub.PublishAsync("long/" + new string('t', 100), "too long");
        await pub.PublishAsync("short", "fine");

        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttClientPublishReasonCode.TopicNameInvalid, result.ReasonCode);
        }

        await sub.ExpectOnlyAsync("short", "fine");
    }

    [Fact]
    public async Task TopicAlias_TopicThenAliasOnly_DeliveredWithFullTopic()
    {
        // [MQTT-3.3.2-12]: a PUBLISH with a topic and a Topic Alias sets the mapping; a later PUBLISH with the
        // alias and an empty topic means that topic. Subscribers get the full topic name.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("alias/#");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "aliaser", MqttProtocolVersion.V500);

        var first = Raw.Publish("alias/long/topic", "one", MqttQualityOfServiceLevel.AtLeastOnce, 1);
        first.TopicAlias = 1;
        await raw.SendAsync(first);
        Assert.Equal(MqttPubAckReasonCode.Success, (await raw.ExpectAsync<MqttPubAckPacket>()).ReasonCode);
        var second = Raw.Publish("", "two", MqttQualityOfServiceLevel.AtLeastOnce, 2);
        second.TopicAlias = 1;
        await raw.SendAsync(second);
        Assert.Equal(MqttPubAckReasonCode.Success, (await raw.ExpectAsync<MqttPubAckPacket>()).ReasonCode);

        // Re-mapping the alias to another topic [MQTT-3.3.2-12].
        var third = Raw.Publish("alias/other", "three", MqttQualityOfServiceLevel.AtLeastOnce, 3);
        third.TopicAlias = 1;
        await raw.SendAsync(third);
        await raw.ExpectAsync<MqttPubAckPacket>();
        var fourth = Raw.Publish("", "four", MqttQualityOfServiceLevel.AtLeastOnce, 4);
        fourth.TopicAlias = 1;
        await raw.SendAsync(fourth);
        await raw.ExpectAsync<MqttPubAckPacket>();

        await sub.ExpectOnlyAsync("alias/long/topic", "one");
        await sub.ExpectOnlyAsync("alias/long/topic", "two");
        await sub.ExpectOnlyAsync("alias/other", "three");
        await sub.ExpectOnlyAsync("alias/other", "four");
    }

    [Fact]
    public async Task TopicAlias_AboveTopicAliasMaximum_DisconnectedWith0x94()
    {
        // [MQTT-3.3.2-9]: an alias above the Topic Alias Maximum the server sent is an error: DISCONNECT 0x94.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:TopicAliasMaximum"] = "4");
        var (raw, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("aliaser"), MqttProtocolVersion.V500);
        await using var _ = raw;
        Assert.Equal(4, ack.TopicAliasMaximum);

        var publish = Raw.Publish("alias/x", "x", MqttQualityOfServiceLevel.AtLeastOnce, 1);
        publish.TopicAlias = 5;
        await raw.SendAsync(publish);

        var packets = await raw.ReadUntilClosedAsync();
        Assert.Equal(MqttDisconnectReasonCode.TopicAliasInvalid, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
    }

    [Fact]
    public async Task TopicAlias_Zero_DisconnectedWith0x94()
    {
        // [MQTT-3.3.2-8]: a sender MUST NOT send Topic Alias 0; v5 §3.3.4: "A Topic Alias value of 0 or greater than
        // the Maximum Topic Alias is a Protocol Error, the receiver uses DISCONNECT with Reason Code of 0x94".
        await using var broker = await TestBroker.StartPlainAsync();
        await using var bystanders = await Bystanders.StartAsync(broker);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "aliaser", MqttProtocolVersion.V500);

        // MQTTnet's encoder leaves out a Topic Alias of 0, so the PUBLISH is written by hand: topic "a", QoS 1, id 1,
        // properties: Topic Alias (0x23) = 0.
        await raw.SendBytesAsync(Convert.FromHexString("3209000161000103230000"));

        var packets = await raw.ReadUntilClosedAsync();
        Assert.Equal(MqttDisconnectReasonCode.TopicAliasInvalid, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
        await bystanders.StillWorkAsync("after alias 0");
    }

    [Fact]
    public async Task TopicAlias_UpToTheMaximum_Accepted()
    {
        // [MQTT-3.3.2-12]: the server MUST accept every Topic Alias above 0 and up to the Topic Alias Maximum it
        // returned in CONNACK: here 1 and 4 of 4.
        await using var broker = await TestBroker.StartPlainAsync(s => s["Broker:Mqtt:TopicAliasMaximum"] = "4");
        await using var sub = await TestClient.ConnectAsync(broker.MqttPort, "sub");
        await sub.SubscribeOkAsync("alias/#");
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "aliaser", MqttProtocolVersion.V500);

        ushort id = 1;
        foreach (var (alias, topic) in new[] { ((ushort)1, "alias/one"), ((ushort)4, "alias/four"), ((ushort)4, ""), ((ushort)1, "") })
        {
            var publish = Raw.Publish(topic, "m" + id, MqttQualityOfServiceLevel.AtLeastOnce, id++);
            publish.TopicAlias = alias;
            await raw.SendAsync(publish);
            Assert.Equal(MqttPubAckReasonCode.Success, (await raw.ExpectAsync<MqttPubAckPacket>()).ReasonCode);
        }

        await sub.ExpectOnlyAsync("alias/one", "m1");
        await sub.ExpectOnlyAsync("alias/four", "m2");
        await sub.ExpectOnlyAsync("alias/four", "m3");
        await sub.ExpectOnlyAsync("alias/one", "m4");
    }

    [Fact]
    public async Task TopicAlias_UnknownAliasWithEmptyTopic_ProtocolError()
    {
        // [MQTT-3.3.2-7]: aliases live in one network connection. v5 §3.3.4 on an alias the receiver has no mapping
        // for: "If the packet has a zero length Topic Name field it is a Protocol Error and the receiver uses
        // DISCONNECT with Reason Code of 0x82 (Protocol Error)". Not 0x94: that one is for 0 and above the maximum
        // (mosquitto answers the same way).
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "aliaser", MqttProtocolVersion.V500);

        var publish = Raw.Publish("", "x", MqttQualityOfServiceLevel.AtLeastOnce, 1);
        publish.TopicAlias = 2;
        await raw.SendAsync(publish);

        var packets = await raw.ReadUntilClosedAsync();
        Assert.Equal(MqttDisconnectReasonCode.ProtocolError, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task PublishWithBothQosBitsSet_ConnectionClosedAndNothingRouted(MqttProtocolVersion version)
    {
        // [MQTT-3.3.1-4]: a PUBLISH with both QoS bits set is malformed; the receiver closes the connection
        // (v5: DISCONNECT 0x81 Malformed Packet first).
        await using var broker = await TestBroker.StartPlainAsync();
        await using var bystanders = await Bystanders.StartAsync(broker);
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "qos3", version);
        byte[] publish = version == MqttProtocolVersion.V500
            ? [0x36, 0x09, 0x00, 0x04, (byte)'o', (byte)'k', (byte)'/', (byte)'x', 0x00, 0x01, 0x00]
            : [0x36, 0x08, 0x00, 0x04, (byte)'o', (byte)'k', (byte)'/', (byte)'x', 0x00, 0x01];

        await raw.SendBytesAsync(publish);

        var packets = await raw.ReadUntilClosedAsync();
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttDisconnectReasonCode.MalformedPacket, Assert.IsType<MqttDisconnectPacket>(Assert.Single(packets)).ReasonCode);
        }
        else
        {
            Assert.Empty(packets);
        }

        await bystanders.StillWorkAsync("only this"); // the QoS 3 publish to ok/x was not routed
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task SubscribeWithQos3_ConnectionClosed(MqttProtocolVersion version)
    {
        // [MQTT-3.8.3-4] (v3.1.1) / v5 §3.8.3.1: QoS 3 in the subscription options is malformed; close the connection.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "sub-qos3", version);
        byte[] subscribe = version == MqttProtocolVersion.V500
            ? [0x82, 0x07, 0x00, 0x01, 0x00, 0x00, 0x01, (byte)'a', 0x03]
            : [0x82, 0x06, 0x00, 0x01, 0x00, 0x01, (byte)'a', 0x03];

        await raw.SendBytesAsync(subscribe);

        var packets = await raw.ReadUntilClosedAsync();
        Assert.DoesNotContain(packets, p => p is MqttSubAckPacket);
        Assert.Equal(1, broker.Counters.Malformed);
    }

    [Fact]
    public async Task ClientMaximumPacketSize_LargerMessagesNotSentToThatClient()
    {
        // [MQTT-3.1.2-25]: the server must not send a packet larger than the client's Maximum Packet Size;
        // it discards it as if delivered and goes on with the next.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "small", MqttProtocolVersion.V500, configure: c => c.MaximumPacketSize = 100);
        await raw.SubscribeAsync("mps/#", MqttQualityOfServiceLevel.AtLeastOnce);
        await using var pub = await TestClient.ConnectAsync(broker.MqttPort, "pub");

        await pub.PublishAsync("mps/big", new string('x', 200));
        await pub.PublishAsync("mps/small", "fits");

        var next = await raw.ExpectAsync<MqttPublishPacket>();
        Assert.Equal(("mps/small", "fits"), (next.Topic, Raw.Text(next)));
        Assert.Equal(1, broker.Counters.Dropped);
    }
}
