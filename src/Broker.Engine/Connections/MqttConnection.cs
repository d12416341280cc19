using System.Buffers;
using System.IO.Pipelines;
using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>
/// One client connection's protocol handling: a receive loop that reads frames and dispatches them by
/// packet type (handlers in the partial files next to this one). What goes out is written by its
/// <see cref="ConnectionWriter"/> (the only code to touch the output pipe, on whichever thread signals
/// it); acknowledgements that wait for a store write keep their order in its <see cref="AckSequencer"/>.
/// </summary>
internal sealed partial class MqttConnection
{
    readonly EngineContext _engine;
    readonly IDuplexPipe _transport;
    readonly ConnectionMetadata _meta;
    TaskCompletionSource? _closed; // made only when someone waits for the close (a takeover): 88 B fewer per idle connection
    int _isClosed;
    readonly ConnectionWriter _writer;
    readonly AckSequencer _acks;
    MqttProtocolVersion _version;
    Session? _session;
    ClientPrincipal? _principal;
    ClientLimits? _limits;
    string _clientId = "";
    long _lastActivityMs = Environment.TickCount64;
    int _keepAliveSeconds;
    string _closeReason = "connection closed by the client";
    bool _sendWill = true;
    volatile bool _takenOver;
    long _connectionNumber; // for the connection observer, 0 when there is none
    volatile bool _waitingForStore;

    public MqttConnection(EngineContext engine, IDuplexPipe transport, ConnectionMetadata meta, CancellationToken connectionClosed)
    {
        _engine = engine;
        _transport = transport;
        _meta = meta;
        _writer = new ConnectionWriter(this, engine, transport);
        _acks = new AckSequencer(this, engine, _writer);
        // connectionClosed is not used: when a client writes PUBACKs then DISCONNECT and closes at once,
        // those packets are still in the pipe and must be read; the pipe reports completion after them.
        // Nor is a token source of our own: a close wakes the reader with CancelPendingRead and a stuck
        // flush with CancelPendingFlush, so an idle connection holds no registrations.
        _ = connectionClosed;
    }

    public string ClientId => _clientId;

    /// <summary>The protocol version of the CONNECT (the writer encodes with it).</summary>
    internal MqttProtocolVersion Version => _version;

    internal bool IsV5 => _version == MqttProtocolVersion.V500;

    /// <summary>The session, once the CONNACK is queued; null before (the writer pulls from it).</summary>
    internal Session? Session => _session;

    string RemoteEndPoint => _meta.RemoteEndPoint?.ToString() ?? "?";

    public async Task RunAsync()
    {
        _engine.Connections.TryAdd(this, 0);
        var stretch = 0; // packets handled since the writers this loop woke last wrote (DeferredWrites)
        var ownStretch = false;
        try
        {
            if (!await ConnectAsync())
            {
                return;
            }

            _writer.Open();
            var input = _transport.Input;
            while (true)
            {
                // Awaited here, not in a helper: an idle connection then waits in one state machine.
                // No cancellation token (it would cost a registration per connection): closes use CancelPendingRead.
                ReadResult result;
                if (!_writer.IsClosing)
                {
                    var read = input.ReadAsync();
                    if (read.IsCompleted && stretch is > 0 and < DeferredWrites.MaxPackets)
                    {
                        result = read.Result; // more was read already: the writers woken so far wait for it
                    }
                    else
                    {
                        EndStretch(ref stretch, ref ownStretch); // about to wait, or enough for one write: they write now
                        result = await read;
                    }
                }
                else if (!input.TryRead(out result))
                {
                    break; // once closing, only packets already received are read
                }

                if (!TryTakePacket(input, result, isFirst: false, out var packet))
                {
                    if (result.IsCompleted || result.IsCanceled || _writer.IsClosing)
                    {
                        break;
                    }

                    continue;
                }

                Volatile.Write(ref _lastActivityMs, Environment.TickCount64);
                if (stretch++ == 0)
                {
                    ownStretch = DeferredWrites.Begin(); // false: one is open on this thread already, and its opener ends it
                }

                var dispatch = DispatchAsync(packet);
                if (!dispatch.IsCompleted)
                {
                    EndStretch(ref stretch, ref ownStretch); // the handler waits: this thread goes to other work meanwhile
                }

                if (!await dispatch)
                {
                    break;
                }
            }
        }
        catch (OperationCanceledException)
        {
        }
        catch (PacketTooLargeException ex)
        {
            _engine.Counters.OversizedPacket();
            EngineLog.PacketTooLarge(_engine.ConnectionLogger, Name, ex.Size, _engine.Options.Mqtt.MaxPacketSize);
            Disconnect(MqttDisconnectReasonCode.PacketTooLarge, "packet too large");
        }
        catch (MalformedPacketException ex)
        {
            _engine.Counters.MalformedPacket();
            EngineLog.MalformedPacket(_engine.ConnectionLogger, Name, ex.Message);
            Disconnect(ex.Reason, ex.Reason == MqttDisconnectReasonCode.MalformedPacket ? "malformed packet" : "protocol error");
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException or InvalidOperationException || ex.GetType().Name == "ConnectionResetException")
        {
            _closeReason = "connection lost";
        }
        catch (Exception ex)
        {
            EngineLog.ConnectionFailed(_engine.ConnectionLogger, _meta.ConnectionId, ex);
        }
        finally
        {
            EndStretch(ref stretch, ref ownStretch);
            await CloseAsync();
            _engine.Connections.TryRemove(this, out _);
        }
    }

    /// <summary>Ends this loop's <see cref="DeferredWrites"/> stretch, if it opened one: the writers woken in it write now.</summary>
    static void EndStretch(ref int stretch, ref bool own)
    {
        if (own)
        {
            DeferredWrites.End();
            own = false;
        }

        stretch = 0;
    }

    internal string Name => _clientId.Length > 0 ? _clientId : _meta.ConnectionId;

    /// <summary>
    /// One switch on packet type, as mosquitto's handle__packet. The packet has passed
    /// <see cref="PacketValidator"/>: a packet identifier is never 0 here [MQTT-2.3.1-1], so every
    /// acknowledgement can be encoded.
    /// </summary>
    ValueTask<bool> DispatchAsync(MqttPacket packet) => packet switch
    {
        MqttPublishPacket publish => HandlePublishAsync(publish),
        MqttPubAckPacket ack => ValueTask.FromResult(HandlePubAck(ack)),
        MqttPubRecPacket rec => HandlePubRecAsync(rec),
        MqttPubRelPacket rel => HandlePubRelAsync(rel),
        MqttPubCompPacket comp => ValueTask.FromResult(HandlePubComp(comp)),
        MqttSubscribePacket subscribe => HandleSubscribeAsync(subscribe),
        MqttUnsubscribePacket unsubscribe => ValueTask.FromResult(HandleUnsubscribe(unsubscribe)),
        MqttPingReqPacket => ValueTask.FromResult(Send(MqttPingRespPacket.Instance)),
        MqttDisconnectPacket disconnect => ValueTask.FromResult(HandleDisconnect(disconnect)),
        MqttConnectPacket => ValueTask.FromResult(ProtocolError("a second CONNECT [MQTT-3.1.0-2]")),
        _ => ValueTask.FromResult(ProtocolError($"unexpected {packet.GetType().Name}")),
    };

    bool Send(MqttPacket packet)
    {
        _writer.Send(packet);
        return true;
    }

    /// <summary>Something is waiting for this client in its session: write it now, or make the writer go round again.</summary>
    public void SignalWrite() => _writer.Signal();

    /// <summary>Closes with a protocol error: v5 DISCONNECT 0x82, v3.1.1 just closes [MQTT-4.8.0-1].</summary>
    bool ProtocolError(string reason)
    {
        EngineLog.ProtocolError(_engine.ConnectionLogger, Name, reason);
        Disconnect(MqttDisconnectReasonCode.ProtocolError, reason);
        return false;
    }

    /// <summary>Server-initiated close: a v5 client is told why first [MQTT-4.13.2-1].</summary>
    void Disconnect(MqttDisconnectReasonCode reason, string text)
    {
        _closeReason = text;
        if (IsV5 && _session is not null) // only after the CONNACK [MQTT-3.14.0-1]
        {
            _writer.Enqueue(new MqttDisconnectPacket { ReasonCode = reason });
        }

        _writer.Close();
    }

    /// <summary>Completes when this connection has closed and let go of its session.</summary>
    public Task Closed
    {
        get
        {
            if (Volatile.Read(ref _isClosed) == 1)
            {
                return Task.CompletedTask;
            }

            var closed = Volatile.Read(ref _closed) ?? Interlocked.CompareExchange(ref _closed, new(TaskCreationOptions.RunContinuationsAsynchronously), null) ?? _closed!;
            if (Volatile.Read(ref _isClosed) == 1)
            {
                closed.TrySetResult(); // closed meanwhile, before it could see this one (MarkClosed)
            }

            return closed.Task;
        }
    }

    /// <summary>Full fences on both sides: either the close sees the waiter's source, or the waiter sees the close.</summary>
    void MarkClosed()
    {
        Interlocked.Exchange(ref _isClosed, 1);
        Volatile.Read(ref _closed)?.TrySetResult();
    }

    /// <summary>Another connection took the client id [MQTT-3.1.4-3]; v5 reason 0x8E.</summary>
    public void TakeOver()
    {
        EngineLog.SessionTakenOver(_engine.ConnectionLogger, _clientId);
        _takenOver = true;
        CloseFromOutside(MqttDisconnectReasonCode.SessionTakenOver, "session taken over");
    }

    /// <summary>An operator closed this connection (admin API): v5 reason 0x98; the will goes out as for any server-side close.</summary>
    public void Kick() => CloseFromOutside(MqttDisconnectReasonCode.AdministrativeAction, "disconnected by an administrator");

    /// <summary>Broker shutdown: v5 reason 0x8B; no will (the client did nothing wrong, and mosquitto does the same on a clean stop).</summary>
    public void Shutdown()
    {
        _sendWill = false;
        CloseFromOutside(MqttDisconnectReasonCode.ServerShuttingDown, "server shutting down");
    }

    /// <summary>Heartbeat check: no packet within 1.5 × keep-alive closes the connection [MQTT-3.1.2-24].</summary>
    public void CheckKeepAlive(long nowTicks)
    {
        if (_keepAliveSeconds > 0 && !_writer.IsClosing && !_waitingForStore && nowTicks - Volatile.Read(ref _lastActivityMs) > _keepAliveSeconds * 1500L)
        {
            CloseFromOutside(MqttDisconnectReasonCode.KeepAliveTimeout, "keep-alive timeout");
        }
    }

    /// <summary>
    /// A close decided away from the receive loop: the writer sends the v5 DISCONNECT and stops, and the
    /// receive loop is woken to read only what has already arrived.
    /// </summary>
    internal void CloseFromOutside(MqttDisconnectReasonCode reason, string text)
    {
        Disconnect(reason, text);
        _transport.Input.CancelPendingRead();
        Interlocked.CompareExchange(ref _storeWaitEnded, null, null)?.TrySetResult(); // a receive loop waiting for store room (Publish.cs)
        EndRateWait();
    }

    /// <summary>The CONNECT: read with the connect timeout's token; after it the receive loop reads in <see cref="RunAsync"/>.</summary>
    async ValueTask<MqttPacket?> ReadFirstPacketAsync(CancellationToken cancellationToken)
    {
        var input = _transport.Input;
        while (true)
        {
            var result = await input.ReadAsync(cancellationToken);
            if (TryTakePacket(input, result, isFirst: true, out var packet))
            {
                return packet;
            }

            if (result.IsCompleted || result.IsCanceled)
            {
                return null;
            }
        }
    }

    /// <summary>
    /// Takes one packet from what has been read, and consumes it; false (nothing consumed) when the
    /// packet is not complete yet. Too large or malformed throws.
    /// </summary>
    bool TryTakePacket(PipeReader input, in ReadResult result, bool isFirst, [System.Diagnostics.CodeAnalysis.NotNullWhen(true)] out MqttPacket? packet)
    {
        packet = null;
        var buffer = result.Buffer;
        var status = FrameReader.TryRead(buffer, _engine.Options.Mqtt.MaxPacketSize, out var header, out var body, out var size);
        switch (status)
        {
            case FrameStatus.Complete:
                var length = (int)body.Length;
                var rented = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
                try
                {
                    body.CopyTo(rented);
                    input.AdvanceTo(body.End);
                    packet = Decode(new ReceivedMqttPacket(header, new ArraySegment<byte>(rented, 0, length), (int)size), isFirst);
                    return true;
                }
                finally
                {
                    // The decoder copies what it keeps (payload, strings, binary properties).
                    ArrayPool<byte>.Shared.Return(rented);
                }

            case FrameStatus.Incomplete:
                input.AdvanceTo(buffer.Start, buffer.End);
                return false;
            case FrameStatus.TooLarge:
                input.AdvanceTo(buffer.Start, buffer.End);
                throw new PacketTooLargeException(size);
            default:
                input.AdvanceTo(buffer.Start, buffer.End);
                throw new MalformedPacketException("Remaining Length longer than four bytes [MQTT-1.5.5-1]");
        }
    }

    MqttPacket Decode(ReceivedMqttPacket received, bool isFirst)
    {
        if (isFirst)
        {
            if ((received.FixedHeader >> 4) != (int)MqttControlPacketType.Connect)
            {
                throw new MalformedPacketException("the first packet is not CONNECT [MQTT-3.1.0-1]");
            }

            try
            {
                _version = PacketFormatters.Detect(received);
            }
            catch (Exception ex)
            {
                throw new UnsupportedProtocolException(ex.Message);
            }
        }

        // The wire grammar first: MQTTnet's decoder is lenient (ill-formed UTF-8, duplicate properties, reserved bits).
        if (!PacketValidator.TryValidate(received.FixedHeader, new ReadOnlySequence<byte>(received.Body), _version, out var violation))
        {
            throw new MalformedPacketException(violation.Text, violation.Reason);
        }

        try
        {
            return PacketFormatters.For(_version).Decode(received) ?? throw new MalformedPacketException("unknown packet type");
        }
        catch (Exception ex) when (ex is not MalformedPacketException)
        {
            throw new MalformedPacketException(ex.Message);
        }
    }

    /// <summary>The writer failed for a reason other than a transport that is gone: worth a log line, and the close says so.</summary>
    internal void OnWriterFailed(Exception ex)
    {
        EngineLog.WriterFailed(_engine.ConnectionLogger, Name, ex);
        _closeReason = "write failed";
    }

    async Task CloseAsync()
    {
        await _writer.StopAsync(); // writes a final DISCONNECT if one is queued; the transport is not let go before
        _limits?.Close(); // its device slot goes back
        if (_session is null || _principal is null)
        {
            MarkClosed();
            return;
        }

        _engine.Counters.ConnectionClosed();
        var takenOver = !ReferenceEquals(_session.Connection, this);
        EngineLog.ClientDisconnected(_engine.ConnectionLogger, _clientId, _closeReason);
        var detached = _engine.Sessions.Close(_session, this);
        if (_connectionNumber != 0 && _engine.ConnectionObserver is { } observer)
        {
            try
            {
                observer.ClientDisconnected(_principal, _connectionNumber, takenOver: _takenOver || !detached);
            }
            catch (Exception ex)
            {
                EngineLog.ObserverFailed(_engine.Logger, "connection", ex);
            }
        }
        if (_sendWill && _will is not null)
        {
            ScheduleWill(takenOver);
        }
        else if (_willArmed)
        {
            _engine.Cluster.WillDisarmed(_principal.ClientId); // discarded by a normal DISCONNECT
        }

        MarkClosed();
    }

    sealed class PacketTooLargeException(long size) : Exception($"packet of {size} bytes")
    {
        public long Size { get; } = size;
    }

    /// <summary>The packet breaks the wire grammar: v5 is told <see cref="Reason"/> (0x81 Malformed Packet or 0x82 Protocol Error), then the connection closes.</summary>
    sealed class MalformedPacketException(string message, MqttDisconnectReasonCode reason = MqttDisconnectReasonCode.MalformedPacket) : Exception(message)
    {
        public MqttDisconnectReasonCode Reason { get; } = reason;
    }

    sealed class UnsupportedProtocolException(string message) : Exception(message);
}
