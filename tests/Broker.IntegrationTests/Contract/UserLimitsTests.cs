using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// Contract §13: limits per user over all of its devices, per role (<c>Broker:Limits:Roles:&lt;role&gt;</c>):
/// devices connected at once, subscriptions per session, retained messages owned, and a publish rate that
/// slows a user down (never drops) and disconnects one kept over it for RateGraceSeconds.
/// </summary>
public sealed class UserLimitsTests
{
    const string Inbox = "IMS/bob/Inbox/Msg/alice";

    static Task<TestBroker> StartAsync(params (string Key, string Value)[] limits) => TestBroker.StartImsAsync(s =>
    {
        s["Broker:Presence:Enabled"] = "false"; // the broker's own retained presence would count in the retained figures
        foreach (var (key, value) in limits)
        {
            s["Broker:Limits:Roles:user:" + key] = value;
        }
    });

    [Fact]
    public async Task AUserAtTheDeviceQuota_Gets0x97_Or0x03_TheSameDeviceMayReconnect_AndAServiceIsUnlimited()
    {
        await using var broker = await StartAsync(("MaxDevices", "2"));
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-laptop", "alice", MqttProtocolVersion.V311);

        Assert.Equal(MqttClientConnectResultCode.QuotaExceeded, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@alice-tablet", "alice"));
        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedServerUnavailable, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@alice-tablet", "alice"));

        // Another user is not affected; the same device again (a takeover) is still one device.
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using var phoneAgain = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await phone.Disconnected;

        // A device leaves: its slot goes back.
        await laptop.Client.DisconnectAsync();
        await broker.WaitOfflineAsync("GID_IMS@@@alice-laptop");
        await using var tablet = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-tablet", "alice");

        // Role service: no per-user limits by default.
        await using var bot1 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot1", "assistant");
        await using var bot2 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot2", "assistant");
        await using var bot3 = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot3", "assistant");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311, MqttClientSubscribeResultCode.UnspecifiedError)]
    [InlineData(MqttProtocolVersion.V500, MqttClientSubscribeResultCode.QuotaExceeded)]
    public async Task TheSubscriptionQuota_RefusesOnlyTheExtraFilters(MqttProtocolVersion version, MqttClientSubscribeResultCode refused)
    {
        await using var broker = await StartAsync(("MaxSubscriptions", "2"));
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        var result = await alice.Client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder()
            .WithTopicFilter("IMS/alice/Inbox/#", MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter("IMS/bob", MqttQualityOfServiceLevel.AtLeastOnce)
            .WithTopicFilter("IMS/carol", MqttQualityOfServiceLevel.AtLeastOnce)
            .Build());

        Assert.Equal([MqttClientSubscribeResultCode.GrantedQoS1, MqttClientSubscribeResultCode.GrantedQoS1, refused], result.Items.Select(i => i.ResultCode));

        // Subscribing again to a filter it has replaces it: not one more.
        await alice.SubscribeOkAsync("IMS/bob", MqttQualityOfServiceLevel.AtMostOnce);
        Assert.Equal(refused, (await alice.SubscribeAsync("IMS/System/#")).Items.Single().ResultCode);
        await alice.Client.UnsubscribeAsync("IMS/bob");
        await alice.SubscribeOkAsync("IMS/System/#");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task TheRetainedQuota_CountsWhatTheUserOwns_DeletingFreesIt(MqttProtocolVersion version)
    {
        await using var broker = await StartAsync(("MaxRetained", "2"));
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        var v5 = version == MqttProtocolVersion.V500;

        Assert.Equal(MqttClientPublishReasonCode.Success, (await alice.PublishAsync("IMS/alice/a", "1", retain: true)).ReasonCode);
        Assert.Equal(MqttClientPublishReasonCode.Success, (await alice.PublishAsync("IMS/alice/b", "1", retain: true)).ReasonCode);
        var refusedBefore = broker.Counters.RetainedRefused;
        var third = await alice.PublishAsync("IMS/alice/c", "1", retain: true);
        Assert.Equal(v5 ? MqttClientPublishReasonCode.QuotaExceeded : MqttClientPublishReasonCode.Success, third.ReasonCode);
        Assert.Equal(refusedBefore + 1, broker.Counters.RetainedRefused);
        Assert.Equal(2, broker.Engine.RetainedCount);

        // Replacing its own is fine; another user has its own quota.
        Assert.Equal(MqttClientPublishReasonCode.Success, (await alice.PublishAsync("IMS/alice/a", "2", retain: true)).ReasonCode);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        Assert.Equal(MqttClientPublishReasonCode.Success, (await bob.PublishAsync("IMS/bob/a", "1", retain: true)).ReasonCode);

        // Deleting (empty payload) frees one.
        Assert.Equal(MqttClientPublishReasonCode.Success, (await alice.PublishAsync("IMS/alice/a", "", retain: true)).ReasonCode);
        Assert.Equal(MqttClientPublishReasonCode.Success, (await alice.PublishAsync("IMS/alice/c", "1", retain: true)).ReasonCode);
        Assert.Equal(3, broker.Engine.RetainedCount);

        // The refused one was not delivered either.
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);
        await carol.SubscribeOkAsync("IMS/alice/c");
        await carol.ExpectOnlyAsync("IMS/alice/c", "1");
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task AFloodingUser_IsSlowed_NothingDropped_WhileAnotherUserGetsThrough(MqttProtocolVersion version)
    {
        const int Count = 60; // at 20/s after a burst of 5: about 3 s
        await using var broker = await StartAsync(("PublishRate", "20"), ("PublishBurst", "5"), ("RateGraceSeconds", "60"));
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-laptop", "alice", version);
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol", version);

        // Both of alice's devices flood; they share her bucket.
        async Task FloodAsync(TestClient device, string name)
        {
            for (var i = 0; i < Count / 2; i++)
            {
                await Expect.PublishAcceptedAsync(device, Inbox, $"{name}-{i:D2}");
            }
        }

        var flood = Task.WhenAll(FloodAsync(phone, "phone"), FloodAsync(laptop, "laptop"));
        while (broker.Counters.PublishThrottled == 0)
        {
            Assert.False(flood.IsCompleted, "the flood was never slowed down");
            await Task.Delay(10);
        }

        await Expect.PublishAcceptedAsync(carol, "IMS/bob/Inbox/Msg/carol", "meanwhile");
        Assert.False(flood.IsCompleted); // carol's publish was answered while alice still waits

        var received = new List<string>();
        while (received.Count < Count + 1)
        {
            received.Add(TestClient.Text(await bob.NextAsync()));
        }

        await flood;
        Assert.True(received.IndexOf("meanwhile") < Count, "carol's message came after the whole flood");
        foreach (var device in new[] { "phone", "laptop" })
        {
            Assert.Equal(Enumerable.Range(0, Count / 2).Select(i => $"{device}-{i:D2}"), received.Where(m => m.StartsWith(device, StringComparison.Ordinal)));
        }

        Assert.True(phone.Client.IsConnected && laptop.Client.IsConnected);
        Assert.Equal(0, broker.Counters.RateDisconnects);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task AConnectionKeptOverTheRateForTheGrace_IsDisconnected_0x96(MqttProtocolVersion version)
    {
        await using var broker = await StartAsync(("PublishRate", "5"), ("PublishBurst", "1"), ("RateGraceSeconds", "1"));
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);

        var i = 0;
        try
        {
            while (!alice.Disconnected.IsCompleted)
            {
                await alice.PublishAsync(Inbox, $"m{i++}", MqttQualityOfServiceLevel.AtMostOnce);
            }
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or MQTTnet.Exceptions.MqttClientNotConnectedException or OperationCanceledException)
        {
        }

        var disconnected = await alice.Disconnected.WaitAsync(TestClient.Timeout);
        if (version == MqttProtocolVersion.V500)
        {
            Assert.Equal(MqttClientDisconnectReason.MessageRateTooHigh, disconnected.Reason);
        }

        Assert.Equal(1, broker.Counters.RateDisconnects);
    }

    [Fact]
    public async Task PublishBytesRate_SlowsLargePayloads()
    {
        await using var broker = await StartAsync(("PublishBytesRate", "1000"), ("RateGraceSeconds", "60"));
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        var payload = new string('x', 600);
        for (var i = 0; i < 3; i++)
        {
            await Expect.PublishAcceptedAsync(alice, Inbox, payload);
        }

        for (var i = 0; i < 3; i++)
        {
            Assert.Equal(600, (await bob.NextAsync()).ApplicationMessage.Payload.Length);
        }

        Assert.True(broker.Counters.PublishThrottled > 0);
    }
}
