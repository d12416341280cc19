using System.Text;
using System.Threading.Channels;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>An MQTTnet client (v3.1.1 or v5) with an inbox of what it received.</summary>
public sealed class TestClient : IAsyncDisposable
{
    public static readonly TimeSpan Timeout = TimeSpan.FromSeconds(10);

    readonly Channel<MqttApplicationMessageReceivedEventArgs> _inbox = Channel.CreateUnbounded<MqttApplicationMessageReceivedEventArgs>();
    readonly TaskCompletionSource<MqttClientDisconnectedEventArgs> _disconnected = new(TaskCreationOptions.RunContinuationsAsynchronously);

    readonly bool _acknowledgeOnRead;

    TestClient(IMqttClient client, bool autoAcknowledge)
    {
        Client = client;
        _acknowledgeOnRead = autoAcknowledge;
        client.ApplicationMessageReceivedAsync += e =>
        {
            // Acked when the test reads it (NextAsync), so "received" means "the broker has the PUBACK
            // on the wire before anything the test does next" — a following DISCONNECT cannot overtake it.
            e.AutoAcknowledge = false;
            _inbox.Writer.TryWrite(e);
            return Task.CompletedTask;
        };
        client.DisconnectedAsync += e =>
        {
            _disconnected.TrySetResult(e);
            return Task.CompletedTask;
        };
    }

    public IMqttClient Client { get; }

    public MqttClientConnectResult ConnectResult { get; private set; } = null!;

    /// <summary>Completes when the connection ends, with the server's reason (v5) when it sent one.</summary>
    public Task<MqttClientDisconnectedEventArgs> Disconnected => _disconnected.Task;

    public static async Task<TestClient> ConnectAsync(
        int port,
        string clientId,
        string? user = null,
        MqttProtocolVersion version = MqttProtocolVersion.V500,
        bool cleanStart = true,
        uint sessionExpiry = 0,
        bool autoAcknowledge = true,
        Action<MqttClientOptionsBuilder>? configure = null,
        string? password = null,
        bool webSocket = false,
        bool expectSuccess = true)
    {
        var builder = new MqttClientOptionsBuilder()
            .WithClientId(clientId)
            .WithProtocolVersion(version)
            .WithCleanSession(cleanStart)
            .WithTimeout(Timeout);
        builder = webSocket
            ? builder.WithWebSocketServer(ws => ws.WithUri($"ws://127.0.0.1:{port}/mqtt"))
            : builder.WithTcpServer("127.0.0.1", port);
        if (version == MqttProtocolVersion.V500 && sessionExpiry > 0)
        {
            builder.WithSessionExpiryInterval(sessionExpiry);
        }

        if (user is not null)
        {
            builder.WithCredentials(user, password ?? user + "-pass");
        }

        configure?.Invoke(builder);
        var options = builder.Build();
        if (options.ChannelOptions is MqttClientTcpOptions tcp)
        {
            // MQTTnet closes with RST by default (linger 0), and the kernel then throws away whatever the
            // broker had not read yet: the PUBACKs sent just before DISCONNECT. Close as most clients do.
            tcp.LingerState = new System.Net.Sockets.LingerOption(false, 0);
        }

        var client = new TestClient(new MqttClientFactory().CreateMqttClient(), autoAcknowledge);
        client.ConnectResult = await client.Client.ConnectAsync(options);
        if (expectSuccess)
        {
            Assert.Equal(MqttClientConnectResultCode.Success, client.ConnectResult.ResultCode);
        }

        return client;
    }

    public async Task<MqttClientSubscribeResult> SubscribeAsync(string filter, MqttQualityOfServiceLevel qos = MqttQualityOfServiceLevel.AtLeastOnce, Action<MqttTopicFilterBuilder>? configure = null, uint subscriptionId = 0)
    {
        var options = new MqttClientSubscribeOptionsBuilder().WithTopicFilter(f =>
        {
            f.WithTopic(filter).WithQualityOfServiceLevel(qos);
            configure?.Invoke(f);
        });
        if (subscriptionId > 0)
        {
            options.WithSubscriptionIdentifier(subscriptionId);
        }

        return await Client.SubscribeAsync(options.Build());
    }

    /// <summary>Subscribes and asserts the broker granted it.</summary>
    public async Task SubscribeOkAsync(string filter, MqttQualityOfServiceLevel qos = MqttQualityOfServiceLevel.AtLeastOnce)
    {
        var result = await SubscribeAsync(filter, qos);
        Assert.Equal((int)qos, (int)result.Items.Single().ResultCode);
    }

    public Task<MqttClientPublishResult> PublishAsync(string topic, string payload, MqttQualityOfServiceLevel qos = MqttQualityOfServiceLevel.AtLeastOnce, bool retain = false, Action<MqttApplicationMessageBuilder>? configure = null)
    {
        var message = new MqttApplicationMessageBuilder().WithTopic(topic).WithPayload(payload).WithQualityOfServiceLevel(qos).WithRetainFlag(retain);
        configure?.Invoke(message);
        return Client.PublishAsync(message.Build());
    }

    /// <summary>The next message received, or a timeout failure.</summary>
    public async Task<MqttApplicationMessageReceivedEventArgs> NextAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? Timeout);
        try
        {
            var received = await _inbox.Reader.ReadAsync(cts.Token);
            if (_acknowledgeOnRead)
            {
                await received.AcknowledgeAsync(cts.Token);
            }

            return received;
        }
        catch (OperationCanceledException)
        {
            throw new TimeoutException($"{Client.Options?.ClientId} received no message within {(timeout ?? Timeout).TotalSeconds} s");
        }
    }

    /// <summary>
    /// Asserts nothing else is waiting before a marker message: publish the refused or leaking message first,
    /// then a marker the client does receive; ordering through the same session proves nothing came before it.
    /// </summary>
    public async Task ExpectOnlyAsync(string topic, string payload)
    {
        var next = await NextAsync();
        Assert.Equal((topic, payload), (next.ApplicationMessage.Topic, Text(next)));
    }

    public bool HasPending => _inbox.Reader.TryPeek(out _);

    public static string Text(MqttApplicationMessageReceivedEventArgs e) => Encoding.UTF8.GetString(e.ApplicationMessage.Payload);

    public async ValueTask DisposeAsync()
    {
        if (Client.IsConnected)
        {
            try
            {
                await Client.DisconnectAsync();
            }
            catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or OperationCanceledException)
            {
            }
        }

        Client.Dispose();
    }
}
