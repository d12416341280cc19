using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Host;

/// <summary>
/// Broker:Mqtt:InlineIo = false returns to Kestrel's scheduling through the thread pool; the broker
/// behaves the same (every other test runs with the default, true).
/// </summary>
public sealed class InlineIoTests
{
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task WithInlineIoOff_QoS1And2_AreDeliveredAndAcknowledged(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:Mqtt:InlineIo"] = "false");
        await Expect.InboxQoS1And2DeliveredAsync(broker, version);
    }
}
