using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>MQTT over WebSocket (ws://host:{HttpPort}/mqtt) is the same broker as MQTT over TCP.</summary>
public sealed class WebSocketTests
{
    // These tests found that WebSocket frames went out as text (a client drops the first non-UTF-8 byte):
    // BrokerConnectionHandler now sets ITransferFormatFeature.ActiveFormat = TransferFormat.Binary.
    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task WebSocketClient_ExchangesMessagesWithTcpClient(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartPlainAsync();
        await using var ws = await TestClient.ConnectAsync(broker.HttpPort, "ws-client", version: version, webSocket: true);
        await using var tcp = await TestClient.ConnectAsync(broker.MqttPort, "tcp-client", version: version);
        await ws.SubscribeOkAsync("to-ws/#", MqttQualityOfServiceLevel.ExactlyOnce);
        await tcp.SubscribeOkAsync("to-tcp/#", MqttQualityOfServiceLevel.ExactlyOnce);

        foreach (var qos in new[] { MqttQualityOfServiceLevel.AtMostOnce, MqttQualityOfServiceLevel.AtLeastOnce, MqttQualityOfServiceLevel.ExactlyOnce })
        {
            await tcp.PublishAsync("to-ws/x", "from tcp " + qos, qos);
            await ws.PublishAsync("to-tcp/x", "from ws " + qos, qos);
        }

        foreach (var qos in new[] { MqttQualityOfServiceLevel.AtMostOnce, MqttQualityOfServiceLevel.AtLeastOnce, MqttQualityOfServiceLevel.ExactlyOnce })
        {
            await ws.ExpectOnlyAsync("to-ws/x", "from tcp " + qos);
            await tcp.ExpectOnlyAsync("to-tcp/x", "from ws " + qos);
        }
    }

    [Fact]
    public async Task WebSocketClient_TakenOverByTcpClient_V5SessionTakenOver()
    {
        // [MQTT-3.1.4-3] across transports: the client id is one session whatever the transport.
        await using var broker = await TestBroker.StartPlainAsync();
        await using var ws = await TestClient.ConnectAsync(broker.HttpPort, "roaming", webSocket: true);
        await using var tcp = await TestClient.ConnectAsync(broker.MqttPort, "roaming");

        var disconnected = await ws.Disconnected.WaitAsync(TestClient.Timeout);
        Assert.Equal(MQTTnet.MqttClientDisconnectReason.SessionTakenOver, disconnected.Reason);
    }
}
