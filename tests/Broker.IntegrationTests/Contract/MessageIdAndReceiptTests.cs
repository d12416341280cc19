using System.Text.Json;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Contract §11: ims-id on every delivery to an MQTT 5 client; delivery receipts published by the broker.</summary>
public sealed class MessageIdAndReceiptTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-receipts-");

    public void Dispose() => _dir.Delete(recursive: true);

    static string Id(MqttApplicationMessageReceivedEventArgs e) => Expect.UserProperty(e.ApplicationMessage.UserProperties, "ims-id")!;

    static Action<MqttApplicationMessageBuilder> WantReceipt => m => m.WithUserProperty("ims-receipt", "delivered");

    sealed record Receipt(string Id, string User, string Client, long At);

    static async Task<Receipt> NextReceiptAsync(TestClient sender, string from)
    {
        var e = await sender.NextAsync();
        Assert.Equal($"IMS/alice/Inbox/Receipt/Delivered/{from}", e.ApplicationMessage.Topic);
        Assert.Equal(MqttQualityOfServiceLevel.AtLeastOnce, e.ApplicationMessage.QualityOfServiceLevel);
        using var json = JsonDocument.Parse(e.ApplicationMessage.Payload);
        var root = json.RootElement;
        Assert.Equal(["id", "user", "client", "at"], root.EnumerateObject().Select(p => p.Name).ToArray());
        return new Receipt(root.GetProperty("id").GetString()!, root.GetProperty("user").GetString()!, root.GetProperty("client").GetString()!, root.GetProperty("at").GetInt64());
    }

    [Fact]
    public async Task ImsId_SameAtEveryRecipient_NewPerPublish_ForgedOneReplaced()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob");
        await phone.SubscribeOkAsync("IMS/bob/Inbox/#");
        await laptop.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "one");
        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "two", configure: m => m.WithUserProperty("ims-id", "42"));

        var one = Id(await phone.NextAsync());
        Assert.Equal(one, Id(await laptop.NextAsync()));
        var two = await phone.NextAsync();
        Assert.Equal(Id(two), Id(await laptop.NextAsync()));
        Assert.NotEqual(one, Id(two));
        Assert.Single(two.ApplicationMessage.UserProperties, p => p.Name == "ims-id"); // the client's "42" is gone
        Assert.NotEqual("42", Id(two));
        Assert.True(long.Parse(Id(two)) > long.Parse(one));
    }

    [Fact]
    public async Task ImsId_OfARetainedMessage_IsThatOfItsPublish()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await carol.SubscribeOkAsync("IMS/bob/status");
        await bob.PublishAsync("IMS/bob/status", "away", retain: true);
        var live = Id(await carol.NextAsync());

        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/bob/status");
        Assert.Equal(live, Id(await alice.NextAsync()));
    }

    [Theory]
    [InlineData(MqttQualityOfServiceLevel.AtLeastOnce, MqttProtocolVersion.V500)]
    [InlineData(MqttQualityOfServiceLevel.ExactlyOnce, MqttProtocolVersion.V500)]
    [InlineData(MqttQualityOfServiceLevel.AtLeastOnce, MqttProtocolVersion.V311)]
    public async Task Receipt_PerRecipientDevice_NoneForOwnDevices(MqttQualityOfServiceLevel qos, MqttProtocolVersion recipientVersion)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/alice/Inbox/Receipt/#");
        await using var aliceLaptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-laptop", "alice");
        await aliceLaptop.SubscribeOkAsync("IMS/Group123/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await using var phone = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", recipientVersion);
        await using var laptop = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-laptop", "bob", recipientVersion);
        await phone.SubscribeOkAsync("IMS/Group123/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await laptop.SubscribeOkAsync("IMS/Group123/#", MqttQualityOfServiceLevel.ExactlyOnce);

        var sent = await alice.PublishAsync("IMS/Group123/alice", "hello", qos, configure: WantReceipt);
        Assert.Equal(MqttClientPublishReasonCode.Success, sent.ReasonCode);

        // alice's own laptop acknowledges first: no receipt for it.
        await aliceLaptop.NextAsync();
        await broker.WaitAcknowledgedAsync("GID_IMS@@@alice-laptop");
        var atPhone = await phone.NextAsync();
        var first = await NextReceiptAsync(alice, "bob");
        Assert.Equal(("bob", "GID_IMS@@@bob-phone"), (first.User, first.Client));
        await laptop.NextAsync();
        var second = await NextReceiptAsync(alice, "bob");
        Assert.Equal(("bob", "GID_IMS@@@bob-laptop"), (second.User, second.Client));
        Assert.Equal(first.Id, second.Id);
        if (recipientVersion == MqttProtocolVersion.V500)
        {
            Assert.Equal(Id(atPhone), first.Id);
        }

        // Receipts are stamped by the broker.
        Assert.False(alice.HasPending);
    }

    [Fact]
    public async Task NoRequest_NoReceipt()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");

        await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "no receipt");
        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "receipt", configure: WantReceipt);
        await bob.NextAsync();
        await bob.NextAsync();

        var only = await NextReceiptAsync(alice, "bob");
        Assert.False(alice.HasPending);
        Assert.Equal("GID_IMS@@@bob-phone", only.Client);
    }

    [Fact]
    public async Task OfflineRecipient_ReceiptWhenItComesBackAndAcknowledges_P2p()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600))
        {
        }

        await broker.WaitOfflineAsync("GID_IMS@@@bob-phone");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/alice/Inbox/Receipt/#");
        await alice.PublishAsync("IMS/p2p/GID_IMS@@@bob-phone", "while you were away", configure: WantReceipt);
        var back = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();

        await using var again = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600);
        var m = await again.NextAsync();
        var receipt = await NextReceiptAsync(alice, "bob");
        Assert.Equal(Id(m), receipt.Id);
        Assert.True(receipt.At >= back);
    }

    [Fact]
    public async Task OfflineSender_ReceiptQueuedInItsSession()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", cleanStart: false, sessionExpiry: 3600))
        {
            await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
            await alice.PublishAsync("IMS/p2p/GID_IMS@@@bob-phone", "hi", configure: WantReceipt);
        }

        await broker.WaitOfflineAsync("GID_IMS@@@alice-phone");
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await bob.NextAsync();
            await broker.WaitAcknowledgedAsync("GID_IMS@@@bob-phone");
        }

        await using var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", cleanStart: false, sessionExpiry: 3600);
        Assert.Equal("GID_IMS@@@bob-phone", (await NextReceiptAsync(back, "bob")).Client);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task ForgedReceipt_Refused_ReadReceiptAllowed(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version);
        await using var assistant = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@assistant-1", "assistant", version);

        await Expect.PublishRefusedAsync(broker, bob, "IMS/alice/Inbox/Receipt/Delivered/bob", MqttClientPublishReasonCode.NotAuthorized, """{"id":"1"}""");
        await Expect.PublishRefusedAsync(broker, assistant, "IMS/alice/Inbox/Receipt/Delivered/bob", MqttClientPublishReasonCode.NotAuthorized);
        await Expect.PublishAcceptedAsync(bob, "IMS/alice/Inbox/Receipt/Read/bob", "read");

        await alice.ExpectOnlyAsync("IMS/alice/Inbox/Receipt/Read/bob", "read");
    }

    [Fact]
    public async Task AfterKill9_RequestSurvives_ReceiptWhenRecipientAcknowledges_IdsUniqueAcrossTheRestart()
    {
        var broker = await RunningBroker.StartAsync(_dir.FullName);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 86400))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        string before;
        await using (var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", cleanStart: false, sessionExpiry: 86400))
        {
            await alice.SubscribeOkAsync("IMS/alice/Inbox/#");
            await alice.SubscribeOkAsync("IMS/alice/status");
            await Expect.PublishAcceptedAsync(alice, "IMS/alice/status", "probe");
            before = Id(await alice.NextAsync());
            var sent = await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "survive", configure: WantReceipt);
            Assert.Equal(MqttClientPublishReasonCode.Success, sent.ReasonCode);
        }

        await broker.KillAsync();
        await using var restarted = await RunningBroker.StartAsync(_dir.FullName);
        await using var aliceBack = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@alice-phone", "alice", cleanStart: false, sessionExpiry: 86400);
        await using var bobBack = await TestClient.ConnectAsync(restarted.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 86400);
        var m = await bobBack.NextAsync();
        Assert.Equal("survive", TestClient.Text(m));

        var receipt = await NextReceiptAsync(aliceBack, "bob");
        Assert.Equal(Id(m), receipt.Id);

        await Expect.PublishAcceptedAsync(aliceBack, "IMS/alice/status", "probe");
        var after = Id(await aliceBack.NextAsync());
        Assert.True(long.Parse(after) > long.Parse(receipt.Id) && long.Parse(receipt.Id) > long.Parse(before));
    }
}
