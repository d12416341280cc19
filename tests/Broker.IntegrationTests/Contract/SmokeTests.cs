using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Contract;

public sealed class SmokeTests
{
    [Fact]
    public async Task Inbox_FromAliceToBob_IsDelivered()
    {
        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", MqttProtocolVersion.V311);
        await alice.PublishAsync("IMS/bob/Inbox/Add/GFReq/alice", "hi");
        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Add/GFReq/alice", "hi");
    }
}
