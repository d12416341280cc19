using System.Net.Sockets;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A bare TCP socket that speaks MQTT through MQTTnet's formatter, byte by byte under the test's
/// control: hand-made DUP re-sends, missing acks, garbage, oversized packets, exact CONNACK bytes.
/// </summary>
public sealed class RawClient : IAsyncDisposable
{
    readonly TcpClient _tcp;
    readonly MqttPacketFormatterAdapter _formatter;
    NetworkStream _stream = null!;

    RawClient(MqttProtocolVersion version, System.Net.IPAddress? from)
    {
        _tcp = from is null ? new TcpClient() : new TcpClient(new System.Net.IPEndPoint(from, 0));
        _formatter = new MqttPacketFormatterAdapter(version, new MqttBufferWriter(4096, 65536));
    }

    /// <param name="from">The local address to connect from: another loopback address (127.0.0.2) is another source to the broker.</param>
    public static async Task<RawClient> OpenAsync(int port, MqttProtocolVersion version = MqttProtocolVersion.V311, System.Net.IPAddress? from = null)
    {
        var raw = new RawClient(version, from);
        await raw._tcp.ConnectAsync("127.0.0.1", port);
        raw._stream = raw._tcp.GetStream();
        return raw;
    }

    /// <summary>Connects and returns the CONNACK.</summary>
    public static async Task<(RawClient Client, MqttConnAckPacket ConnAck)> ConnectAsync(int port, MqttConnectPacket connect, MqttProtocolVersion version = MqttProtocolVersion.V311, System.Net.IPAddress? from = null)
    {
        var raw = await OpenAsync(port, version, from);
        await raw.SendAsync(connect);
        var ack = Assert.IsType<MqttConnAckPacket>(await raw.ReceiveAsync());
        return (raw, ack);
    }

    public async Task SendAsync(MqttPacket packet)
    {
        var buffer = _formatter.Encode(packet);
        await _stream.WriteAsync(buffer.Join());
    }

    public Task SendBytesAsync(byte[] bytes) => _stream.WriteAsync(bytes).AsTask();

    /// <summary>
    /// The next packet, or null when the broker closed the connection: with a FIN, or with a reset when it
    /// closed with bytes of ours still unread (a connection refused on accept, whose CONNECT had arrived).
    /// </summary>
    public async Task<MqttPacket?> ReceiveAsync(TimeSpan? timeout = null)
    {
        try
        {
            return await ReceiveOrThrowAsync(timeout);
        }
        catch (IOException ex) when (ex.InnerException is System.Net.Sockets.SocketException { SocketErrorCode: System.Net.Sockets.SocketError.ConnectionReset })
        {
            return null;
        }
    }

    async Task<MqttPacket?> ReceiveOrThrowAsync(TimeSpan? timeout)
    {
        using var cts = new CancellationTokenSource(timeout ?? TestClient.Timeout);
        var header = new byte[1];
        if (await _stream.ReadAsync(header, cts.Token) == 0)
        {
            return null;
        }

        var length = 0;
        var multiplier = 1;
        var b = new byte[1];
        do
        {
            if (await _stream.ReadAsync(b, cts.Token) == 0)
            {
                return null;
            }

            length += (b[0] & 0x7F) * multiplier;
            multiplier *= 128;
        }
        while ((b[0] & 0x80) != 0);

        var body = new byte[length];
        await _stream.ReadExactlyAsync(body, cts.Token);
        return _formatter.Decode(new ReceivedMqttPacket(header[0], new ArraySegment<byte>(body), length + 2));
    }

    /// <summary>Reads until the broker closes the connection; returns the packets seen on the way.</summary>
    public async Task<List<MqttPacket>> ReadUntilClosedAsync(TimeSpan? timeout = null)
    {
        var packets = new List<MqttPacket>();
        try
        {
            while (await ReceiveAsync(timeout) is { } packet)
            {
                packets.Add(packet);
            }
        }
        catch (IOException)
        {
        }

        return packets;
    }

    /// <summary>Reads the raw bytes of the reply (for the exact v3.1.1 CONNACK bytes), until closed.</summary>
    public async Task<byte[]> ReadAllBytesAsync(TimeSpan? timeout = null)
    {
        using var cts = new CancellationTokenSource(timeout ?? TestClient.Timeout);
        var all = new MemoryStream();
        var buffer = new byte[256];
        try
        {
            int n;
            while ((n = await _stream.ReadAsync(buffer, cts.Token)) > 0)
            {
                all.Write(buffer, 0, n);
            }
        }
        catch (IOException)
        {
        }

        return all.ToArray();
    }

    public ValueTask DisposeAsync()
    {
        _tcp.Dispose();
        return ValueTask.CompletedTask;
    }
}
