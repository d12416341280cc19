using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Broker.Engine;
using Broker.Engine.Admission;
using Broker.Engine.Connections;
using Microsoft.Extensions.Options;

namespace Broker.Transport;

/// <summary>
/// MQTT over plain TCP without Kestrel (<c>Broker:Mqtt:Transport = sockets</c>): the socket, a
/// <see cref="PipeReader"/> and a <see cref="PipeWriter"/> over it, handed to the engine. An idle
/// connection waits in a zero-byte read and holds no buffer, as with Kestrel, but without Kestrel's
/// two pipes, send and receive loops, features and logging scope: about 1.6 kB less per idle
/// connection (docs/performance.md). TLS and WebSocket stay on Kestrel.
/// </summary>
public sealed partial class SocketListener(
    BrokerEngine engine, ConnectionAdmission admission, IOptions<ListenerOptions> options, ListenerEndpoints endpoints, ILogger<SocketListener> logger) : IHostedService
{
    // Kestrel's defaults: a read buffer taken only while data is there, 512-byte minimum write chunks.
    static readonly StreamPipeReaderOptions ReaderOptions = new(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true, useZeroByteReads: true);
    static readonly StreamPipeWriterOptions WriterOptions = new(minimumBufferSize: 512, leaveOpen: true);

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
        var stream = new NetworkStream(socket, ownsSocket: true);
        var reader = new SocketPipeReader(PipeReader.Create(stream, ReaderOptions), socket);
        var writer = PipeWriter.Create(stream, WriterOptions);
        try
        {
            socket.NoDelay = true; // as Kestrel: a PUBACK must not wait for Nagle
            await engine.HandleConnectionAsync(new DuplexPipe(reader, writer), new ConnectionMetadata(id, socket.RemoteEndPoint, "tcp"), CancellationToken.None);
        }
        catch (Exception ex)
        {
            LogConnectionFailed(logger, id, ex);
        }
        finally
        {
            try
            {
                await reader.CompleteAsync();
                // What is still buffered goes out, then FIN; a client that stopped reading gets 2 s, as the engine gives it.
                await writer.CompleteAsync().AsTask().WaitAsync(TimeSpan.FromSeconds(2));
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException or OperationCanceledException or InvalidOperationException or TimeoutException)
            {
                // The peer is gone or stuck: closing the socket below ends it.
            }
            finally
            {
                await stream.DisposeAsync();
                admission.Release();
            }
        }
    }

    /// <summary>
    /// TryRead also takes what the kernel has received already. Kestrel's receive loop moves it into its
    /// pipe on its own, and the engine relies on that: a connection that is closing still reads the
    /// PUBACKs and DISCONNECT its client sent before the close, with TryRead.
    /// </summary>
    sealed class SocketPipeReader(PipeReader inner, Socket socket) : PipeReader
    {
        public override bool TryRead(out ReadResult result)
        {
            if (inner.TryRead(out result))
            {
                return true;
            }

            try
            {
                if (socket.Available == 0)
                {
                    return false;
                }
            }
            catch (SocketException)
            {
                return false; // reset by the peer: nothing more to read
            }

            // Data is waiting, so the socket read completes at once; never left pending on a closing connection.
            result = inner.ReadAsync().AsTask().GetAwaiter().GetResult();
            return true;
        }

        public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default) => inner.ReadAsync(cancellationToken);

        public override void AdvanceTo(SequencePosition consumed) => inner.AdvanceTo(consumed);

        public override void AdvanceTo(SequencePosition consumed, SequencePosition examined) => inner.AdvanceTo(consumed, examined);

        public override void CancelPendingRead() => inner.CancelPendingRead();

        public override void Complete(Exception? exception = null) => inner.Complete(exception);

        public override ValueTask CompleteAsync(Exception? exception = null) => inner.CompleteAsync(exception);
    }

    sealed class DuplexPipe(PipeReader input, PipeWriter output) : IDuplexPipe
    {
        public PipeReader Input { get; } = input;

        public PipeWriter Output { get; } = output;
    }

    [LoggerMessage(1101, LogLevel.Warning, "Accepting a TCP connection failed: {Error}")]
    static partial void LogAcceptFailed(ILogger logger, SocketError error);

    [LoggerMessage(1102, LogLevel.Error, "Connection {ConnectionId} failed")]
    static partial void LogConnectionFailed(ILogger logger, string connectionId, Exception exception);
}
