using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>CONNECT exchanges whose exact answer matters: the v3.1.1 return code byte, the v5 reason code.</summary>
public static class Connect
{
    /// <summary>The v3.1.1 CONNACK return code for a CONNECT, read from the wire.</summary>
    public static async Task<MqttConnectReturnCode> V311ReturnCodeAsync(int port, string clientId, string? user, string? password = null, bool cleanSession = true, Action<MqttConnectPacket>? configure = null, System.Net.IPAddress? from = null)
    {
        var connect = new MqttConnectPacket
        {
            ClientId = clientId,
            Username = user,
            Password = user is null ? null : System.Text.Encoding.UTF8.GetBytes(password ?? user + "-pass"),
            CleanSession = cleanSession,
            KeepAlivePeriod = 60,
        };
        configure?.Invoke(connect);
        var (client, ack) = await RawClient.ConnectAsync(port, connect, from: from);
        await using (client)
        {
            if (ack.ReturnCode != MqttConnectReturnCode.ConnectionAccepted)
            {
                // A refusal closes the connection [MQTT-3.2.2-5].
                Assert.Empty(await client.ReadUntilClosedAsync());
                Assert.False(ack.IsSessionPresent); // [MQTT-3.2.2-4]
            }

            return ack.ReturnCode;
        }
    }

    /// <summary>The v5 CONNACK reason code, through MQTTnet's client.</summary>
    public static async Task<MQTTnet.MqttClientConnectResultCode> V5ResultAsync(int port, string clientId, string? user, string? password = null, Action<MQTTnet.MqttClientOptionsBuilder>? configure = null)
    {
        await using var client = await TestClient.ConnectAsync(port, clientId, user, MqttProtocolVersion.V500, password: password, configure: configure, expectSuccess: false);
        return client.ConnectResult.ResultCode;
    }
}
