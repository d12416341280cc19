using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Host;

/// <summary>
/// Broker:Mqtt:Transport = sockets serves MQTT over TCP with the broker's own listener instead of
/// Kestrel's; the broker behaves the same. (The whole integration suite also passes with
/// Broker__Mqtt__Transport=sockets in the environment; the connection limit is in LimitsTests.)
/// </summary>
public sealed class SocketTransportTests
{
    static Task<TestBroker> StartAsync() => TestBroker.StartImsAsync(s => s["Broker:Mqtt:Transport"] = "sockets");

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task QoS1And2_AreDeliveredAndAcknowledged(MqttProtocolVersion version)
    {
        await using var broker = await StartAsync();
        await Expect.InboxQoS1And2DeliveredAsync(broker, version);
    }

    [Fact]
    public async Task BadCredentials_GetTheirReasonCode_OverTheOwnListener()
    {
        // [MQTT-3.2.2-8] v5 0x86 then close: identity works the same whatever accepted the socket.
        await using var broker = await StartAsync();
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", "wrong"));
    }

    [Fact]
    public async Task MosquittoSub_GetsAnInboxMessage_FromMosquittoPub()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await StartAsync();
        var port = broker.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await using var sub = await Mosquitto.Subscriber.StartAsync(
            ["-h", "127.0.0.1", "-p", port, "-i", "GID_IMS@@@bob-phone", "-u", "bob", "-P", "bob-pass", "-t", "IMS/bob/Inbox/#", "-q", "1", "-v"]);

        var (exit, output) = await Mosquitto.RunAsync("mosquitto_pub",
            "-h", "127.0.0.1", "-p", port, "-i", "GID_IMS@@@alice-phone", "-u", "alice", "-P", "alice-pass", "-t", "IMS/bob/Inbox/Msg/alice", "-m", "hi bob", "-q", "1");

        Assert.True(exit == 0, output);
        Assert.Equal("IMS/bob/Inbox/Msg/alice hi bob", await sub.NextMessageAsync());
    }

    [Fact]
    public async Task Shutdown_V5ClientGetsServerShuttingDown()
    {
        // [MQTT-4.13.2-1] / 0x8B: the engine closes the connections it was given before the listener goes.
        var broker = await StartAsync();
        await using var client = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version: MqttProtocolVersion.V500);

        await broker.DisposeAsync();

        var disconnected = await client.Disconnected.WaitAsync(TestClient.Timeout);
        Assert.Equal(MqttClientDisconnectReason.ServerShuttingDown, disconnected.Reason);
    }
}
