using System.Buffers;
using System.Diagnostics;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.Bench;

/// <summary>Connecting, subscribing and publishing with the MQTTnet client.</summary>
internal static class Clients
{
    static readonly MqttClientFactory Factory = new();

    /// <summary>Connects to <c>--port</c>, or to <paramref name="port"/> (the receivers' <c>--sub-port</c>).</summary>
    public static async Task<IMqttClient> ConnectAsync(BenchOptions o, string clientId, string user, bool clean, Measurements? sink, long run, int port = 0)
    {
        var client = Factory.CreateMqttClient();
        if (sink is not null)
        {
            client.ApplicationMessageReceivedAsync += e =>
            {
                var payload = e.ApplicationMessage.Payload;
                Span<byte> head = stackalloc byte[Stamp.Size];
                if (payload.Length >= Stamp.Size)
                {
                    payload.Slice(0, Stamp.Size).CopyTo(head);
                    var sent = Stamp.Read(head, run);
                    if (sent >= 0)
                    {
                        sink.Arrived(sent);
                    }
                }

                return Task.CompletedTask;
            };
        }

        var builder = new MqttClientOptionsBuilder()
            .WithTcpServer(o.Host, port > 0 ? port : o.Port)
            .WithClientId(clientId)
            .WithCredentials(user, o.Password)
            .WithProtocolVersion(o.V5 ? MqttProtocolVersion.V500 : MqttProtocolVersion.V311)
            .WithKeepAlivePeriod(TimeSpan.FromSeconds(120))
            .WithTimeout(TimeSpan.FromSeconds(30));
        builder = o.V5
            ? builder.WithCleanStart(clean).WithSessionExpiryInterval(clean ? 0u : o.SessionExpiry)
            : builder.WithCleanSession(clean);
        var options = builder.Build();
        if (options.ChannelOptions is MqttClientTcpOptions tcp)
        {
            // MQTTnet's default socket buffers are 8 KiB. On loopback (MSS 64 KiB) a receive buffer that
            // small stalls TCP (window updates below one MSS wait for the sender's persist timer) as soon
            // as a broker writes in bursts; app clients on real networks run with the OS default.
            tcp.BufferSize = 256 * 1024;
            tcp.NoDelay = true;
            if (o.From.Length > 0)
            {
                tcp.LocalEndpoint = new System.Net.IPEndPoint(System.Net.IPAddress.Parse(o.From), 0);
            }
        }

        var result = await client.ConnectAsync(options);
        if (result.ResultCode != MqttClientConnectResultCode.Success)
        {
            throw new InvalidOperationException($"{clientId}: CONNACK {result.ResultCode}");
        }

        return client;
    }

    /// <summary>A receiver that keeps a persistent session: an old session (and its queue) is cleared first.</summary>
    public static async Task<IMqttClient> ConnectReceiverAsync(BenchOptions o, string clientId, string user, Measurements sink, long run)
    {
        if (!o.CleanSession)
        {
            await ClearSessionAsync(o, clientId, user);
        }

        return await ConnectAsync(o, clientId, user, o.CleanSession, sink, run, o.SubPort);
    }

    public static async Task ClearSessionAsync(BenchOptions o, string clientId, string user)
    {
        using var c = await ConnectAsync(o, clientId, user, clean: true, sink: null, run: 0, port: o.SubPort);
        await c.DisconnectAsync();
    }

    public static async Task SubscribeAsync(IMqttClient client, string filter, MqttQualityOfServiceLevel qos)
    {
        var result = await client.SubscribeAsync(new MqttClientSubscribeOptionsBuilder().WithTopicFilter(filter, qos).Build());
        foreach (var item in result.Items)
        {
            if ((int)item.ResultCode >= 0x80)
            {
                throw new InvalidOperationException($"{client.Options.ClientId}: subscription to {filter} refused ({item.ResultCode})");
            }
        }
    }
}

/// <summary>One publishing client with a window of unacknowledged publishes.</summary>
internal sealed class Publisher(IMqttClient client, string topic, BenchOptions o, Measurements m, long run)
{
    readonly SemaphoreSlim _window = new(o.Window, o.Window);
    long _seq;

    public IMqttClient Client => client;

    /// <summary>Fixed-rate mode: publishes now if the window allows, otherwise counts the message as not sent.</summary>
    public void TryPublish()
    {
        if (!_window.Wait(0))
        {
            m.Behind();
            return;
        }

        _ = PublishOneAsync();
    }

    /// <summary>Saturation mode: as fast as the window allows until the deadline.</summary>
    public async Task RunSaturatedAsync(long endTicks)
    {
        while (Stopwatch.GetTimestamp() < endTicks)
        {
            await _window.WaitAsync();
            _ = PublishOneAsync();
        }
    }

    public async Task DrainAsync()
    {
        for (var i = 0; i < o.Window; i++)
        {
            if (!await _window.WaitAsync(TimeSpan.FromSeconds(5)))
            {
                return;
            }
        }
    }

    async Task PublishOneAsync()
    {
        var payload = new byte[o.Payload];
        Stamp.Write(payload, run, Interlocked.Increment(ref _seq));
        var sent = Stamp.Read(payload, run);
        var inWindow = sent >= m.WindowStart && sent < m.WindowEnd;
        try
        {
            var message = new MqttApplicationMessage
            {
                Topic = topic,
                Payload = new ReadOnlySequence<byte>(payload),
                QualityOfServiceLevel = o.Qos,
            };
            if (inWindow)
            {
                m.Published();
            }

            var result = await client.PublishAsync(message);
            if (inWindow && o.Qos != MqttQualityOfServiceLevel.AtMostOnce)
            {
                if (result.IsSuccess)
                {
                    m.Acknowledged();
                }
                else
                {
                    m.PublishFailed();
                }
            }
        }
        catch (Exception)
        {
            m.PublishFailed();
        }
        finally
        {
            _window.Release();
        }
    }
}
