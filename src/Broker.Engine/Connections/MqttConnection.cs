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
/// One client connection: a receive loop that reads frames and dispatches them by packet type
/// (handlers in the partial files next to this one), and a writer that is the only code to touch
/// the output pipe. There is no writer task: whoever has something for this client (its own receive
/// loop with an ack, a publisher's routing, a store commit) writes it, one at a time (see
/// <see cref="SignalWrite"/>), so a message goes from the publisher's socket to the subscriber's
/// without a thread hop, as in mosquitto. Acks go through a small control queue; publishes are pulled
/// from the session's queue, so the session decides what may be sent and nothing piles up here.
/// </summary>
internal sealed partial class MqttConnection
{
    readonly EngineContext _engine;
    readonly IDuplexPipe _transport;
    readonly ConnectionMetadata _meta;
    readonly TaskCompletionSource _closed = new(TaskCreationOptions.RunContinuationsAsynchronously);
    ControlQueue _control;
    MqttProtocolVersion _version;
    Session? _session;
    ClientPrincipal? _principal;
    ClientLimits? _limits;
    string _clientId = "";
    long _lastActivityMs = Environment.TickCount64;
    int _keepAliveSeconds;
    uint _clientMaxPacketSize = uint.MaxValue;
    string _closeReason = "connection closed by the client";
    bool _sendWill = true;
    volatile bool _takenOver;
    long _connectionNumber; // for the connection observer, 0 when there is none
    volatile bool _closing;
    volatile bool _waitingForStore;

    public MqttConnection(EngineContext engine, IDuplexPipe transport, ConnectionMetadata meta, CancellationToken connectionClosed)
    {
        _engine = engine;
        _transport = transport;
        _meta = meta;
        // connectionClosed is not used: when a client writes PUBACKs then DISCONNECT and closes at once,
        // those packets are still in the pipe and must be read; the pipe reports completion after them.
        // Nor is a token source of our own: a close wakes the reader with CancelPendingRead and a stuck
        // flush with CancelPendingFlush, so an idle connection holds no registrations.
        _ = connectionClosed;
    }

    public string ClientId => _clientId;

    bool IsV5 => _version == MqttProtocolVersion.V500;

    string RemoteEndPoint => _meta.RemoteEndPoint?.ToString() ?? "?";

    public async Task RunAsync()
    {
        _engine.Connections.TryAdd(this, 0);
        try
        {
            if (!await ConnectAsync())
            {
                return;
            }

            OpenWriter();
            var input = _transport.Input;
            while (true)
            {
                // Awaited here, not in a helper: an idle connection then waits in one state machine.
                // No cancellation token (it would cost a registration per connection): closes use CancelPendingRead.
                ReadResult result;
                if (!_closing)
                {
                    result = await input.ReadAsync();
                }
                else if (!input.TryRead(out result))
                {
                    break; // once closing, only packets already received are read
                }

                if (!TryTakePacket(input, result, isFirst: false, out var packet))
                {
                    if (result.IsCompleted || result.IsCanceled || _closing)
                    {
                        break;
                    }

                    continue;
                }

                Volatile.Write(ref _lastActivityMs, Environment.TickCount64);
                if (!await DispatchAsync(packet))
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
            await CloseAsync();
            _engine.Connections.TryRemove(this, out _);
        }
    }

    string Name => _clientId.Length > 0 ? _clientId : _meta.ConnectionId;

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
        _control.Add(packet);
        SignalWrite();
        return true;
    }

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
            _control.Add(new MqttDisconnectPacket { ReasonCode = reason });
        }

        _closing = true;
        SignalWrite();
    }

    /// <summary>Completes when this connection has closed and let go of its session.</summary>
    public Task Closed => _closed.Task;

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
        if (_keepAliveSeconds > 0 && !_closing && !_waitingForStore && nowTicks - Volatile.Read(ref _lastActivityMs) > _keepAliveSeconds * 1500L)
        {
            CloseFromOutside(MqttDisconnectReasonCode.KeepAliveTimeout, "keep-alive timeout");
        }
    }

    /// <summary>
    /// A close decided away from the receive loop: the writer sends the v5 DISCONNECT and stops, and the
    /// receive loop is woken to read only what has already arrived.
    /// </summary>
    void CloseFromOutside(MqttDisconnectReasonCode reason, string text)
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

    // ---- the writer ------------------------------------------------------------------------------
    //
    // _writeRequests counts calls to SignalWrite. The caller that raises it from 0 becomes the writer:
    // it writes what is waiting, flushes, and subtracts the count it saw before writing; if more came
    // meanwhile it goes round again. A flush that cannot complete at once (the client reads slowly)
    // continues on its own task and keeps the writer role. It starts at 1, held by the connect phase
    // until the CONNACK is queued (OpenWriter); a writer that stopped (closing, pipe completed) never
    // gives the role back, so nothing is written after the end.

    const int WriteBatch = 64;
    [ThreadStatic] static List<MqttPacket>? t_batch;
    int _writeRequests = 1;
    bool _writerOpened;
    int _writerEnded; // 1 once the writer has stopped for good (see WriterEnded)
    TaskCompletionSource? _writerEndedSignal; // created by CloseAsync only when it must wait for that

    /// <summary>Something is waiting for this client (in the control queue or the session): write it now, or make the writer go round again.</summary>
    public void SignalWrite()
    {
        if (Interlocked.Increment(ref _writeRequests) == 1)
        {
            Drain();
        }
    }

    void OpenWriter()
    {
        _writerOpened = true;
        Drain();
    }

    /// <summary>The writer stopped for good: a close waiting for the final DISCONNECT to be written may go on.</summary>
    void WriterEnded()
    {
        Interlocked.Exchange(ref _writerEnded, 1); // a full fence: CloseAsync sets the signal, then reads this
        Volatile.Read(ref _writerEndedSignal)?.TrySetResult();
    }

    void Drain()
    {
        try
        {
            while (true)
            {
                var seen = Volatile.Read(ref _writeRequests);
                var more = WriteAvailable(_transport.Output);
                var flush = _transport.Output.FlushAsync();
                if (!flush.IsCompletedSuccessfully)
                {
                    _ = DrainAfterFlushAsync(flush);
                    return;
                }

                if (!Continue(flush.Result))
                {
                    return;
                }

                if (!more && Interlocked.Add(ref _writeRequests, -seen) == 0)
                {
                    return;
                }
            }
        }
        catch (Exception ex)
        {
            WriterStopped(ex);
        }
    }

    async Task DrainAfterFlushAsync(ValueTask<FlushResult> flush)
    {
        try
        {
            if (!Continue(await flush))
            {
                return;
            }
        }
        catch (Exception ex)
        {
            WriterStopped(ex);
            return;
        }

        Drain(); // still the writer: what was signalled meanwhile is counted in _writeRequests
    }

    /// <summary>What writing to or flushing a pipe throws once the connection is closing or gone.</summary>
    static bool PipeGone(Exception ex) => ex is OperationCanceledException or IOException or ObjectDisposedException or InvalidOperationException;

    /// <summary>
    /// The writer failed: this connection closes, and nothing else notices. Whoever was writing (a
    /// publisher's routing, the store's commit, another connection's thread) goes on with its other
    /// recipients, so one connection's fault never reaches another or the process. A transport that
    /// is gone is normal; anything else (a packet that cannot be encoded) is a bug worth a log line.
    /// The writer role is kept, so nothing more is written.
    /// </summary>
    void WriterStopped(Exception ex)
    {
        if (!(PipeGone(ex) && (_closing || ex is not InvalidOperationException)))
        {
            EngineLog.WriterFailed(_engine.ConnectionLogger, Name, ex);
            _closeReason = "write failed";
        }

        _closing = true;
        WriterEnded();
        try
        {
            _transport.Input.CancelPendingRead(); // the receive loop ends and lets go of the session
        }
        catch (Exception)
        {
            // The transport is already gone: its receive loop ends by itself.
        }
    }

    /// <summary>After a flush: false when the writer stops for good (client gone, or a close we decided on).</summary>
    bool Continue(FlushResult flush)
    {
        if (flush.IsCompleted || flush.IsCanceled)
        {
            WriterEnded();
            return false;
        }

        if (_closing && _control.IsEmpty)
        {
            // The final DISCONNECT is out: stop reading too. A peer that went away is left alone: the
            // input completes by itself after the packets it sent last.
            _transport.Input.CancelPendingRead();
            WriterEnded();
            return false;
        }

        return true;
    }

    /// <summary>Encodes control packets, then what the session lets us send. Returns true when more is waiting.</summary>
    bool WriteAvailable(PipeWriter output)
    {
        var formatter = PacketFormatters.For(_version);
        try
        {
            for (var node = _control.TakeAll(); node is not null; node = node.Next)
            {
                ReturnReceiveQuota(node.Packet); // before the flush: the client cannot answer an ack before we count it out
                WritePacket(output, node.Packet);
            }

            if (_session is null || _closing)
            {
                return false;
            }

            // One list per thread; taken while in use, in case a write on this thread leads to another.
            var batch = t_batch ?? new List<MqttPacket>(WriteBatch);
            t_batch = null;
            batch.Clear();
            var more = _session.TakeOutbound(this, batch, WriteBatch, IsV5, _engine.NowUnixMs);
            foreach (var packet in batch)
            {
                if (WritePacket(output, packet) && packet is MqttPublishPacket publish)
                {
                    _engine.Counters.MessageSent(publish.QualityOfServiceLevel);
                }
            }

            batch.Clear();
            t_batch = batch;
            return more;
        }
        finally
        {
            formatter.Cleanup();
        }
    }

    bool WritePacket(PipeWriter output, MqttPacket packet)
    {
        var newAlias = _outboundAliasMaximum > 0 && packet is MqttPublishPacket aliased && AssignOutboundAlias(aliased);
        var buffer = PacketFormatters.For(_version).Encode(packet);
        if ((uint)buffer.Length > _clientMaxPacketSize)
        {
            if (newAlias)
            {
                ForgetOutboundAlias((MqttPublishPacket)packet); // the client never saw the mapping
            }

            // The client said it cannot take it: discard, as if delivered [MQTT-3.1.2-25].
            if (packet is MqttPublishPacket { PacketIdentifier: > 0 } publish)
            {
                _session?.DiscardInflight(publish.PacketIdentifier);
            }

            _engine.Counters.MessageDropped();
            return false;
        }

        output.Write(buffer.Packet.AsSpan());
        foreach (var segment in buffer.Payload)
        {
            output.Write(segment.Span);
        }

        return true;
    }

    // ---- outbound topic aliases [MQTT-3.3.2-7 .. -12] ---------------------------------------------------
    //
    // Towards a v5 client that announced a Topic Alias Maximum, the first PUBLISH of a topic carries the topic and
    // a new alias, later ones the alias and an empty topic. Only the writer touches the map (one writer at a time),
    // and every PUBLISH it writes is its own object (Session.BuildPublish makes one per recipient and send), so
    // setting its Topic and TopicAlias here changes nothing another recipient sees. The map belongs to this
    // connection and goes with it: a new connection starts with none [MQTT-3.3.2-7], and what it re-sends
    // (DUP) is built afresh. Policy: aliases 1, 2, ... are handed out in the order topics first go out, until
    // the maximum; after that new topics go with their full name and no alias (no replacement, so an alias
    // never changes meaning while a PUBLISH using it may still be in the client's buffer).

    int _outboundAliasMaximum;
    Dictionary<string, ushort>? _outboundAliases;

    /// <summary>Puts an alias on <paramref name="publish"/> (and empties its topic when the client knows the alias). True when the alias is new.</summary>
    bool AssignOutboundAlias(MqttPublishPacket publish)
    {
        var topic = publish.Topic;
        if (string.IsNullOrEmpty(topic))
        {
            return false;
        }

        var aliases = _outboundAliases ??= new Dictionary<string, ushort>(StringComparer.Ordinal);
        if (aliases.TryGetValue(topic, out var alias))
        {
            publish.TopicAlias = alias;
            publish.Topic = ""; // the alias alone stands for the topic (v5 3.3.2.3.4)
            return false;
        }

        if (aliases.Count >= _outboundAliasMaximum)
        {
            return false; // all used: the full topic, no alias
        }

        alias = (ushort)(aliases.Count + 1); // 1 .. the client's Topic Alias Maximum [MQTT-3.3.2-8, -11]
        aliases.Add(topic, alias);
        publish.TopicAlias = alias;
        return true;
    }

    /// <summary>Undoes the alias just assigned to a PUBLISH that was not sent.</summary>
    void ForgetOutboundAlias(MqttPublishPacket publish) => _outboundAliases!.Remove(publish.Topic);

    /// <summary>Writes one packet straight to the pipe while the connect phase holds the writer role (CONNACK refusals).</summary>
    async Task WriteDirectAsync(MqttPacket packet)
    {
        try
        {
            WritePacket(_transport.Output, packet);
            await _transport.Output.FlushAsync();
        }
        catch (Exception ex) when (PipeGone(ex))
        {
        }
    }

    async Task CloseAsync()
    {
        _closing = true;
        SignalWrite(); // writes a final DISCONNECT if one is queued, then the writer stops
        if (_writerOpened)
        {
            // The writer may be running on another thread (a publisher's routing, a store commit) and write
            // the final DISCONNECT there: the transport is not let go before it has stopped. A stuck client
            // gets two seconds to take what is waiting.
            var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Interlocked.CompareExchange(ref _writerEndedSignal, ended, null);
            if (Volatile.Read(ref _writerEnded) == 0)
            {
                await Task.WhenAny(_writerEndedSignal!.Task, Task.Delay(2000));
            }
        }

        _transport.Output.CancelPendingFlush(); // a flush still waiting after that ends now
        _limits?.Close(); // its device slot goes back
        if (_session is null || _principal is null)
        {
            _closed.TrySetResult();
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

        _closed.TrySetResult();
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
