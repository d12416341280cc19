using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Host;

/// <summary>
/// Broker:Mqtt:Transport: MQTT over TCP is served by the broker's own listener ("sockets", the default, which
/// every other test uses) or by Kestrel's socket transport ("kestrel"); the broker behaves the same on both.
/// (The whole integration suite also passes with Broker__Mqtt__Transport=kestrel in the environment; the
/// connection limits are in AdmissionTests and LimitsTests; the own listener's pipe in SocketPipeTests.)
/// </summary>
public sealed class TcpTransportTests
{
    static Task<TestBroker> StartAsync(string transport) => TestBroker.StartImsAsync(s => s["Broker:Mqtt:Transport"] = transport);

    [Theory]
    [InlineData("sockets", MqttProtocolVersion.V311)]
    [InlineData("sockets", MqttProtocolVersion.V500)]
    [InlineData("kestrel", MqttProtocolVersion.V311)]
    [InlineData("kestrel", MqttProtocolVersion.V500)]
    public async Task QoS1And2_AreDeliveredAndAcknowledged(string transport, MqttProtocolVersion version)
    {
        await using var broker = await StartAsync(transport);
        await Expect.InboxQoS1And2DeliveredAsync(broker, version);
    }

    [Theory]
    [InlineData("sockets")]
    [InlineData("kestrel")]
    public async Task BadCredentials_GetTheirReasonCode_OnEitherTransport(string transport)
    {
        // [MQTT-3.2.2-8] v5 0x86 then close: identity works the same whatever accepted the socket.
        await using var broker = await StartAsync(transport);
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", "wrong"));
    }

    [Theory]
    [InlineData("sockets")]
    [InlineData("kestrel")]
    public async Task MosquittoSub_GetsAnInboxMessage_FromMosquittoPub(string transport)
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await StartAsync(transport);
        var port = broker.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture);
        await using var sub = await Mosquitto.Subscriber.StartAsync(
            ["-h", "127.0.0.1", "-p", port, "-i", "GID_IMS@@@bob-phone", "-u", "bob", "-P", "bob-pass", "-t", "IMS/bob/Inbox/#", "-q", "1", "-v"]);

        var (exit, output) = await Mosquitto.RunAsync("mosquitto_pub",
            "-h", "127.0.0.1", "-p", port, "-i", "GID_IMS@@@alice-phone", "-u", "alice", "-P", "alice-pass", "-t", "IMS/bob/Inbox/Msg/alice", "-m", "hi bob", "-q", "1");

        Assert.True(exit == 0, output);
        Assert.Equal("IMS/bob/Inbox/Msg/alice hi bob", await sub.NextMessageAsync());
    }

    [Theory]
    [InlineData("sockets")]
    [InlineData("kestrel")]
    public async Task Shutdown_V5ClientGetsServerShuttingDown(string transport)
    {
        // [MQTT-4.13.2-1] / 0x8B: the engine closes the connections it was given before the listener goes.
        var broker = await StartAsync(transport);
        await using var client = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", version: MqttProtocolVersion.V500);

        await broker.DisposeAsync();

        var disconnected = await client.Disconnected.WaitAsync(TestClient.Timeout);
        Assert.Equal(MqttClientDisconnectReason.ServerShuttingDown, disconnected.Reason);
    }
}
