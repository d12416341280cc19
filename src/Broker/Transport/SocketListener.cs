using System.Net;
using System.Net.Sockets;
using Broker.Engine;
using Broker.Engine.Admission;
using Broker.Engine.Connections;
using Microsoft.Extensions.Options;

namespace Broker.Transport;

/// <summary>
/// MQTT over plain TCP without Kestrel (<c>Broker:Mqtt:Transport = sockets</c>): each accepted socket is
/// handed to the engine as a <see cref="SocketPipe"/>. An idle connection waits in a zero-byte read and
/// holds no buffer, as with Kestrel, but without Kestrel's two pipes, send and receive loops, features and
/// logging scope (docs/performance.md). TLS and WebSocket stay on Kestrel.
/// </summary>
public sealed partial class SocketListener(
    BrokerEngine engine, ConnectionAdmission admission, IOptions<ListenerOptions> options, ListenerEndpoints endpoints, ILogger<SocketListener> logger) : IHostedService
{
    Socket? _listener;
    Task _accepting = Task.CompletedTask;
    long _nextId;

    public Task StartAsync(CancellationToken cancellationToken)
    {
        var mqtt = options.Value;
        var address = mqtt.BindAddress();
        _listener = new Socket(address.AddressFamily, SocketType.Stream, ProtocolType.Tcp);
        _listener.SetSocketOption(SocketOptionLevel.Socket, SocketOptionName.ReuseAddress, true); // restart while old connections sit in TIME_WAIT
        _listener.Bind(new IPEndPoint(address, mqtt.Port));
        _listener.Listen(512); // Kestrel's backlog
        endpoints.MqttSockets = _listener.LocalEndPoint;
        _accepting = AcceptAsync(_listener);
        return Task.CompletedTask;
    }

    /// <summary>Stops accepting; open connections are closed by the engine (which tells v5 clients why).</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        _listener?.Dispose();
        await _accepting;
    }

    async Task AcceptAsync(Socket listener)
    {
        while (true)
        {
            Socket socket;
            try
            {
                socket = await listener.AcceptAsync();
            }
            catch (Exception ex) when (ex is ObjectDisposedException or SocketException { SocketErrorCode: SocketError.OperationAborted or SocketError.Interrupted })
            {
                return; // stopped
            }
            catch (SocketException ex)
            {
                LogAcceptFailed(logger, ex.SocketErrorCode); // e.g. out of file descriptors: keep serving the others
                continue;
            }

            // The same front door as Kestrel's listeners (MaxConnections counted over all of them, the
            // per-source connect rate): refused means closed at once, before any MQTT is read.
            if (!admission.TryAdmit(socket.RemoteEndPoint))
            {
                socket.Dispose();
                continue;
            }

            _ = ServeAsync(socket);
        }
    }

    async Task ServeAsync(Socket socket)
    {
        var id = $"tcp-{Interlocked.Increment(ref _nextId)}";
        try
        {
            socket.NoDelay = true; // as Kestrel: a PUBACK must not wait for Nagle
            var pipe = new SocketPipe(socket);
            try
            {
                await engine.HandleConnectionAsync(pipe, new ConnectionMetadata(id, socket.RemoteEndPoint, "tcp"), CancellationToken.None);
            }
            finally
            {
                pipe.Complete();
                pipe.Output.Complete(); // what the kernel takes now; a client that stopped reading had the engine's two seconds
            }
        }
        catch (Exception ex)
        {
            LogConnectionFailed(logger, id, ex);
        }
        finally
        {
            socket.Dispose();
            admission.Release();
        }
    }

    [LoggerMessage(1101, LogLevel.Warning, "Accepting a TCP connection failed: {Error}")]
    static partial void LogAcceptFailed(ILogger logger, SocketError error);

    [LoggerMessage(1102, LogLevel.Error, "Connection {ConnectionId} failed")]
    static partial void LogConnectionFailed(ILogger logger, string connectionId, Exception exception);
}
