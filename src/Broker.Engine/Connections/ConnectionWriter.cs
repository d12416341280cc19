using System.Buffers;
using System.IO.Pipelines;
using Broker.Engine.Routing;
using MQTTnet.Packets;

namespace Broker.Engine.Connections;

/// <summary>
/// The only code that touches a connection's output pipe. There is no writer task: whoever has something
/// for this client (its connection's receive loop with an ack, a publisher's routing, a store commit) calls
/// <see cref="Signal"/>, and writes it on its own thread if no one else is writing, so a message goes from
/// the publisher's socket to the subscriber's without a thread hop, as in mosquitto. Control packets
/// (acks, CONNACK, PINGRESP, DISCONNECT) wait in a small queue and go first; publishes are pulled from the
/// session, so the session decides what may be sent and nothing piles up here.
/// <para>
/// Used by anyone: <see cref="Enqueue"/>, <see cref="Send"/>, <see cref="Signal"/>, <see cref="IsClosing"/>.
/// Used by the connection: <see cref="SetClientLimits"/>, <see cref="WriteDirectAsync"/> and <see cref="Open"/>
/// in the connect phase; <see cref="Close"/>, <see cref="MarkClosing"/> and <see cref="StopAsync"/> to end.
/// It asks its connection only for <see cref="MqttConnection.Version"/>, <see cref="MqttConnection.Session"/>,
/// <see cref="MqttConnection.ReturnReceiveQuota"/> and <see cref="MqttConnection.OnWriterFailed"/>; the
/// connection itself is who the session hands its messages to (<see cref="Sessions.Session.TakeOutbound"/>).
/// </para>
/// </summary>
internal sealed class ConnectionWriter
{
    // _requests counts calls to Signal. The caller that raises it from 0 becomes the writer: it writes
    // what is waiting, flushes, and subtracts the count it saw before writing; if more came meanwhile it
    // goes round again. A flush that cannot complete at once (the client reads slowly) continues on its
    // own task and keeps the writer role. It starts at 1, held by the connect phase until the CONNACK is
    // queued (Open); a writer that stopped (closing, pipe completed) never gives the role back, so
    // nothing is written after the end.

    const int WriteBatch = 64;
    [ThreadStatic] static List<Outbound>? t_batch;

    readonly MqttConnection _connection;
    readonly EngineContext _engine;
    readonly IDuplexPipe _transport;
    ControlQueue _control;
    int _requests = 1;
    bool _opened;
    int _ended; // 1 once the writer has stopped for good (see Ended)
    TaskCompletionSource? _endedSignal; // created by StopAsync only when it must wait for that
    volatile bool _closing;
    uint _clientMaxPacketSize = uint.MaxValue;

    public ConnectionWriter(MqttConnection connection, EngineContext engine, IDuplexPipe transport)
    {
        _connection = connection;
        _engine = engine;
        _transport = transport;
    }

    /// <summary>
    /// The connection is closing: the writer puts out what is in the control queue (a final DISCONNECT),
    /// then stops; the receive loop reads only packets already received.
    /// </summary>
    public bool IsClosing => _closing;

    /// <summary>Queues a control packet; the caller signals (several may be queued under a lock, in order, then one signal).</summary>
    public void Enqueue(MqttPacket packet) => _control.Add(packet);

    /// <summary>Queues a control packet and writes it now, or makes the writer go round again.</summary>
    public void Send(MqttPacket packet)
    {
        _control.Add(packet);
        Signal();
    }

    /// <summary>Something is waiting for this client (in the control queue or the session): write it now, or make the writer go round again.</summary>
    public void Signal()
    {
        if (Interlocked.Increment(ref _requests) == 1 && !DeferredWrites.TryDefer(this))
        {
            Drain();
        }
    }

    /// <summary>The end of a receive loop's stretch (<see cref="DeferredWrites"/>): this writer took its role in it and writes now.</summary>
    public void DrainDeferred() => Drain();

    /// <summary>What the client said it accepts (v5 CONNECT): its Maximum Packet Size, and how many topic aliases we may give it.</summary>
    public void SetClientLimits(uint maxPacketSize, int topicAliasMaximum)
    {
        _clientMaxPacketSize = maxPacketSize;
        _outboundAliasMaximum = topicAliasMaximum;
    }

    /// <summary>The connect phase hands over the writer role once the CONNACK is queued.</summary>
    public void Open()
    {
        _opened = true;
        Drain();
    }

    /// <summary>Closing, without waking the writer: the receive loop is about to end, and <see cref="StopAsync"/> signals then.</summary>
    public void MarkClosing() => _closing = true;

    /// <summary>Closing: the writer puts out what is queued (a DISCONNECT queued before this call) and stops.</summary>
    public void Close()
    {
        _closing = true;
        Signal();
    }

    /// <summary>
    /// Closes, and waits until the writer has stopped, so the transport is not let go before the final
    /// DISCONNECT is written. The writer may be running on another thread (a publisher's routing, a store
    /// commit) and write it there. A stuck client gets two seconds to take what is waiting; a flush still
    /// waiting after that ends.
    /// </summary>
    public async Task StopAsync()
    {
        Close();
        if (_opened)
        {
            var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            Interlocked.CompareExchange(ref _endedSignal, ended, null);
            if (Volatile.Read(ref _ended) == 0)
            {
                await Task.WhenAny(_endedSignal!.Task, Task.Delay(2000));
            }
        }

        _transport.Output.CancelPendingFlush();
    }

    /// <summary>Writes one packet straight to the pipe while the connect phase holds the writer role (CONNACK refusals).</summary>
    public async Task WriteDirectAsync(MqttPacket packet)
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

    /// <summary>The writer stopped for good: a close waiting for the final DISCONNECT to be written may go on.</summary>
    void Ended()
    {
        Interlocked.Exchange(ref _ended, 1); // a full fence: StopAsync sets the signal, then reads this
        Volatile.Read(ref _endedSignal)?.TrySetResult();
    }

    void Drain()
    {
        try
        {
            while (true)
            {
                var seen = Volatile.Read(ref _requests);
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

                if (!more && Interlocked.Add(ref _requests, -seen) == 0)
                {
                    return;
                }
            }
        }
        catch (Exception ex)
        {
            Stopped(ex);
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
            Stopped(ex);
            return;
        }

        Drain(); // still the writer: what was signalled meanwhile is counted in _requests
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
    void Stopped(Exception ex)
    {
        if (!(PipeGone(ex) && (_closing || ex is not InvalidOperationException)))
        {
            _connection.OnWriterFailed(ex);
        }

        _closing = true;
        Ended();
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
            Ended();
            return false;
        }

        if (_closing && _control.IsEmpty)
        {
            // The final DISCONNECT is out: stop reading too. A peer that went away is left alone: the
            // input completes by itself after the packets it sent last.
            _transport.Input.CancelPendingRead();
            Ended();
            return false;
        }

        return true;
    }

    /// <summary>Encodes control packets, then what the session lets us send. Returns true when more is waiting.</summary>
    bool WriteAvailable(PipeWriter output)
    {
        var formatter = PacketFormatters.For(_connection.Version);
        try
        {
            for (var node = _control.TakeAll(); node is not null; node = node.Next)
            {
                _connection.ReturnReceiveQuota(node.Packet); // before the flush: the client cannot answer an ack before we count it out
                WritePacket(output, node.Packet);
            }

            var session = _connection.Session;
            if (session is null || _closing)
            {
                return false;
            }

            // One list per thread; taken while in use, in case a write on this thread leads to another.
            var batch = t_batch ?? new List<Outbound>(WriteBatch);
            t_batch = null;
            batch.Clear();
            var now = _engine.NowUnixMs;
            var more = session.TakeOutbound(_connection, batch, WriteBatch, now);
            foreach (var item in batch)
            {
                if (item.Control is { } control)
                {
                    WritePacket(output, control);
                }
                else if (WritePublish(output, item, now))
                {
                    _engine.Counters.MessageSent(item.Delivery.Qos);
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

    /// <summary>A PUBLISH from the session, encoded from its message's bytes (<see cref="PublishEncoder"/>); false when the client's size limit refused it.</summary>
    bool WritePublish(PipeWriter output, in Outbound item, long nowUnixMs)
    {
        var topic = item.Delivery.Message.Topic;
        var (alias, known, isNew) = _outboundAliasMaximum > 0 ? OutboundAlias(topic) : ((ushort)0, false, false);
        if (PublishEncoder.Write(output, item.Delivery, item.PacketId, item.Dup, _connection.IsV5, nowUnixMs, alias, sendTopic: !known, _clientMaxPacketSize))
        {
            return true;
        }

        if (isNew)
        {
            _outboundAliases!.Remove(topic); // the client never saw the mapping
        }

        // The client said it cannot take it: discard, as if delivered [MQTT-3.1.2-25].
        if (item.PacketId > 0)
        {
            _connection.Session?.DiscardInflight(item.PacketId);
        }

        _engine.Counters.MessageDropped();
        return false;
    }

    /// <summary>A control packet (acks, CONNACK, PINGRESP, DISCONNECT, PUBREL), encoded with the thread's MQTTnet formatter.</summary>
    void WritePacket(PipeWriter output, MqttPacket packet)
    {
        var buffer = PacketFormatters.For(_connection.Version).Encode(packet);
        output.Write(buffer.Packet.AsSpan());
        foreach (var segment in buffer.Payload)
        {
            output.Write(segment.Span);
        }
    }

    // ---- outbound topic aliases [MQTT-3.3.2-7 .. -12] ---------------------------------------------------
    //
    // Towards a v5 client that announced a Topic Alias Maximum, the first PUBLISH of a topic carries the topic and
    // a new alias, later ones the alias and an empty topic. Only the writer touches the map (one writer at a time);
    // the alias is the writer's choice per send, not part of the message, which all recipients share. The map
    // belongs to this connection and goes with it: a new connection starts with none [MQTT-3.3.2-7]. Policy:
    // aliases 1, 2, ... are handed out in the order topics first go out, until the maximum; after that new topics
    // go with their full name and no alias (no replacement, so an alias never changes meaning while a PUBLISH
    // using it may still be in the client's buffer).

    int _outboundAliasMaximum;
    Dictionary<string, ushort>? _outboundAliases;

    /// <summary>The alias for <paramref name="topic"/> (0: none), whether the client knows it already (the topic may be left empty), and whether it is new.</summary>
    (ushort Alias, bool Known, bool IsNew) OutboundAlias(string topic)
    {
        var aliases = _outboundAliases ??= new Dictionary<string, ushort>(StringComparer.Ordinal);
        if (aliases.TryGetValue(topic, out var alias))
        {
            return (alias, true, false); // the alias alone stands for the topic (v5 3.3.2.3.4)
        }

        if (aliases.Count >= _outboundAliasMaximum)
        {
            return (0, false, false); // all used: the full topic, no alias
        }

        alias = (ushort)(aliases.Count + 1); // 1 .. the client's Topic Alias Maximum [MQTT-3.3.2-8, -11]
        aliases.Add(topic, alias);
        return (alias, false, true);
    }
}
