using System.Buffers;
using System.Diagnostics;
using System.Net.Sockets;
using System.Text;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// An MQTT client (v3.1.1 or v5) whose session state lives in the test process and outlives its connections and
/// the broker's process, as a real device's does. MQTTnet's own client forgets unacknowledged publishes when the
/// connection drops, so it cannot show what a crash does to "acknowledged" and "exactly once"; this one keeps:
/// <list type="bullet">
/// <item>as a sender, every PUBLISH not yet PUBACKed (QoS 1) or PUBRECed (QoS 2), and every PUBREL not yet PUBCOMPed,
/// re-sent on each reconnect in their original order, PUBLISH with DUP = 1 and the same packet id
/// [MQTT-4.4.0-1] [MQTT-4.6.0-1]; a message counts as acknowledged at PUBACK / PUBREC, when the sender may forget
/// its payload;</item>
/// <item>as a receiver, the QoS 2 packet ids it holds between PUBLISH and PUBREL: a PUBLISH with a held id is
/// acknowledged again but not delivered again [MQTT-4.3.3-9] (v5: 4.3.3, method B of 4.3.3 "Receiver").</item>
/// </list>
/// Every packet is written to a trace, so a duplicate or a loss can be told apart from a harness fault.
/// </summary>
public sealed class SessionClient : IAsyncDisposable
{
    readonly string _user;
    readonly uint _sessionExpiry;
    readonly Pulse _pulse;
    readonly MqttPacketFormatterAdapter _encoder;
    readonly SemaphoreSlim _sendLock = new(1, 1);
    readonly SemaphoreSlim _window;
    readonly Stopwatch _clock;

    // Session state: guarded by _gate, kept across connections.
    readonly object _gate = new();
    readonly Dictionary<ushort, Outgoing> _outgoing = [];
    readonly Dictionary<ushort, string> _held = []; // inbound QoS 2 ids between PUBLISH and PUBREL (with the payload, for the trace)
    readonly HashSet<ushort> _subscribing = [];
    long _order;
    ushort _lastId;

    // What happened: guarded by _gate.
    readonly List<string> _acknowledged = [];
    readonly List<Delivery> _deliveries = [];
    readonly HashSet<string> _delivered = [];
    readonly List<TraceEntry> _trace = [];
    readonly List<string> _errors = [];

    Connection? _connection;
    int _connections;

    // Connect attempts, for the state dump of a failed test: guarded by _gate.
    int _connectAttempts;
    string? _lastConnectFailure;
    int _publishWriteFailures;

    public SessionClient(string clientId, string user, MqttProtocolVersion version, Pulse pulse, Stopwatch clock, uint sessionExpiry = 86400, int window = 10, ushort receiveMaximum = 0)
    {
        ClientId = clientId;
        Version = version;
        _user = user;
        _sessionExpiry = sessionExpiry;
        ReceiveMaximum = receiveMaximum;
        _pulse = pulse;
        _clock = clock;
        Window = window;
        _window = new SemaphoreSlim(window, window);
        _encoder = new MqttPacketFormatterAdapter(version, new MqttBufferWriter(4096, 65536));
    }

    public string ClientId { get; }

    public MqttProtocolVersion Version { get; }

    /// <summary>v5: QoS 1/2 publishes the broker may have unacknowledged towards us (0: the default, 65,535).</summary>
    public ushort ReceiveMaximum { get; }

    /// <summary>QoS 1/2 publishes this client has in flight at most.</summary>
    public int Window { get; }

    public int DeliveredCount
    {
        get
        {
            lock (_gate)
            {
                return _deliveries.Count;
            }
        }
    }

    /// <summary>Every one of <paramref name="payloads"/> was handed to the application at least once.</summary>
    public bool HasDelivered(IEnumerable<string> payloads)
    {
        lock (_gate)
        {
            return payloads.All(_delivered.Contains);
        }
    }

    /// <summary>How many connections this client has made (1 after the first CONNACK).</summary>
    public int Connections
    {
        get
        {
            lock (_gate)
            {
                return _connections;
            }
        }
    }

    /// <summary>Payloads whose PUBACK (QoS 1) or PUBREC (QoS 2) arrived, in that order.</summary>
    public IReadOnlyList<string> Acknowledged
    {
        get
        {
            lock (_gate)
            {
                return [.. _acknowledged];
            }
        }
    }

    public int AcknowledgedCount
    {
        get
        {
            lock (_gate)
            {
                return _acknowledged.Count;
            }
        }
    }

    /// <summary>What was handed to the application: one entry per delivery, so a QoS 2 duplicate shows as two.</summary>
    public IReadOnlyList<Delivery> Deliveries
    {
        get
        {
            lock (_gate)
            {
                return [.. _deliveries];
            }
        }
    }

    public IReadOnlyList<TraceEntry> Trace
    {
        get
        {
            lock (_gate)
            {
                return [.. _trace];
            }
        }
    }

    /// <summary>Protocol faults seen by this client (wrong CONNACK, lost session, a packet out of place): the test asserts none.</summary>
    public IReadOnlyList<string> Errors
    {
        get
        {
            lock (_gate)
            {
                return [.. _errors];
            }
        }
    }

    /// <summary>No publish of ours waits for an acknowledgement and no QoS 2 flow of ours is open.</summary>
    public bool OutgoingIdle
    {
        get
        {
            lock (_gate)
            {
                return _outgoing.Count == 0;
            }
        }
    }

    /// <summary>No inbound QoS 2 flow is open: the broker released every id it gave us.</summary>
    public bool HoldsNoQos2Id
    {
        get
        {
            lock (_gate)
            {
                return _held.Count == 0;
            }
        }
    }

    /// <summary>The inbound QoS 2 ids held (PUBLISH seen, PUBREL not yet), with their payloads.</summary>
    public IReadOnlyList<(ushort Id, string Payload)> HeldIds
    {
        get
        {
            lock (_gate)
            {
                return [.. _held.Select(h => (h.Key, h.Value))];
            }
        }
    }

    /// <summary>PublishAsync writes that failed because the broker had just died (the message waits for the next connect).</summary>
    public int PublishWriteFailures
    {
        get
        {
            lock (_gate)
            {
                return _publishWriteFailures;
            }
        }
    }

    public bool IsConnected => _connection is { Ready: true, Closed.Task.IsCompleted: false };

    /// <summary>
    /// Connects, retrying until the broker answers (it may still be starting after a restart); <paramref name="port"/>
    /// is asked again on each try. Then re-sends the session's unacknowledged packets before anything new goes out.
    /// </summary>
    public async Task<MqttConnAckPacket> ConnectAsync(Func<int> port, bool expectSessionPresent, TimeSpan? timeout = null)
    {
        if (_connection is { } old)
        {
            await old.Closed.Task.WaitAsync(TestClient.Timeout); // the broker's end of it is gone: kill -9 or our DISCONNECT
        }

        var deadline = DateTime.UtcNow + (timeout ?? TimeSpan.FromSeconds(60));
        while (true)
        {
            await _sendLock.WaitAsync();
            try
            {
                var ack = await TryConnectAsync(port(), expectSessionPresent);
                if (ack is not null)
                {
                    return ack;
                }
            }
            finally
            {
                _sendLock.Release();
            }

            if (DateTime.UtcNow > deadline)
            {
                throw new TimeoutException($"{ClientId} could not connect within {(timeout ?? TimeSpan.FromSeconds(60)).TotalSeconds} s");
            }

            await Task.Delay(50);
        }
    }

    /// <summary>Waits until the current connection is closed (by the broker's death or our DISCONNECT).</summary>
    public Task WaitClosedAsync() => _connection?.Closed.Task.WaitAsync(TestClient.Timeout) ?? Task.CompletedTask;

    public async Task SubscribeAsync(string filter, MqttQualityOfServiceLevel qos)
    {
        var connection = _connection ?? throw new InvalidOperationException("not connected");
        ushort id;
        lock (_gate)
        {
            id = NextId();
            _subscribing.Add(id);
        }

        var reply = new TaskCompletionSource<MqttSubAckPacket>(TaskCreationOptions.RunContinuationsAsynchronously);
        connection.SubAcks[id] = reply;
        await SendAsync(connection, new MqttSubscribePacket { PacketIdentifier = id, TopicFilters = [new MqttTopicFilter { Topic = filter, QualityOfServiceLevel = qos }] });
        var ack = await reply.Task.WaitAsync(TestClient.Timeout);
        lock (_gate)
        {
            _subscribing.Remove(id);
        }

        Assert.Equal((int)qos, (int)ack.ReasonCodes.Single());
    }

    /// <summary>
    /// Takes a slot of the in-flight window (waits for one), gives the message a packet id and sends it if connected;
    /// if not, the next connect sends it. Returns once it is on its way, not once it is acknowledged.
    /// </summary>
    public async Task PublishAsync(string topic, string payload, MqttQualityOfServiceLevel qos, CancellationToken cancellationToken = default)
    {
        Assert.NotEqual(MqttQualityOfServiceLevel.AtMostOnce, qos);
        await _window.WaitAsync(cancellationToken);
        Outgoing message;
        lock (_gate)
        {
            message = new Outgoing(NextId(), topic, payload, qos, _order++);
            _outgoing.Add(message.Id, message);
        }

        await _sendLock.WaitAsync(CancellationToken.None);
        try
        {
            // A reconnect that ran between the two locks has sent it already.
            if (_connection is { Ready: true } connection && message.SentOn != connection.Number)
            {
                await SendUnlockedAsync(connection, ToPublish(message, connection.Number));
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            // The broker was killed after our read loop last looked (a write after its socket closed fails with
            // EPIPE / ECONNRESET): the message stays in the session and the next connect re-sends it (DUP = 1).
            // Not caught, this ended the test's publishing loop for good: no more acks from that publisher.
            lock (_gate)
            {
                _publishWriteFailures++;
                Record(message.SentOn, "out", "PUBLISH", message.Id, false, (int)qos, payload, $"write failed: {ex.GetType().Name}; re-sent on the next connect");
            }
        }
        finally
        {
            _sendLock.Release();
        }
    }

    /// <summary>DISCONNECT, then waits for the broker to close: the session stays (persistent), the client is offline.</summary>
    public async Task DisconnectAsync()
    {
        if (_connection is { } connection)
        {
            await SendAsync(connection, new MqttDisconnectPacket());
            await connection.Closed.Task.WaitAsync(TestClient.Timeout);
        }
    }

    public ValueTask DisposeAsync()
    {
        _connection?.Dispose();
        return ValueTask.CompletedTask;
    }

    /// <summary>
    /// The client's state for the report of a failed test: connected or not, connect attempts and the last failure,
    /// what waits for an acknowledgement in each direction, errors, and the last <paramref name="lastPackets"/> packets.
    /// </summary>
    public string Describe(int lastPackets = 15)
    {
        var text = new StringBuilder();
        lock (_gate)
        {
            var connection = _connection;
            var state = connection is null ? "never connected"
                : connection.Closed.Task.IsCompleted ? $"connection {connection.Number} CLOSED"
                : connection.Ready ? $"connection {connection.Number} open" : $"connection {connection.Number} connecting";
            var publishes = _outgoing.Values.Count(m => !m.Released);
            var released = _outgoing.Count - publishes;
            text.AppendLine($"{ClientId} ({Version}): {state}; {_connections} connections, {_connectAttempts} connect attempts" +
                $"{(_lastConnectFailure is null ? "" : $" (last failure: {_lastConnectFailure})")}");
            text.AppendLine($"  out: {publishes} PUBLISH unacknowledged, {released} PUBREL without PUBCOMP, window {_window.CurrentCount}/{Window} free, " +
                $"{_acknowledged.Count} acknowledged; oldest open: {string.Join(", ", _outgoing.Values.OrderBy(m => m.Order).Take(5).Select(m => $"id {m.Id} {m.Payload}{(m.Released ? " (PUBREL)" : "")} sent on {m.SentOn}"))}");
            text.AppendLine($"  in: {_deliveries.Count} delivered, {_held.Count} QoS 2 ids held ({string.Join(", ", _held.Take(5).Select(h => $"{h.Key} {h.Value}"))}); {_errors.Count} errors");
            foreach (var error in _errors.TakeLast(5))
            {
                text.AppendLine($"  error: {error}");
            }

            var last = _trace.LastOrDefault(t => t.Direction == "in");
            text.AppendLine($"  last packet in: {(last is null ? "none" : last.ToString())}");
            foreach (var line in _trace.TakeLast(lastPackets))
            {
                text.AppendLine($"    {line}");
            }
        }

        return text.ToString();
    }

    void ConnectFailed(int port, Exception ex)
    {
        lock (_gate)
        {
            _lastConnectFailure = $"{_clock.Elapsed.TotalSeconds:F3}s port {port}: {ex.GetType().Name} {ex.Message}";
        }
    }

    /// <summary>The trace lines about <paramref name="payload"/>: its PUBLISHes and the acks of the ids that carried it.</summary>
    public IEnumerable<string> TraceOf(string payload) => Trace.Where(t => t.Payload == payload).Select(t => $"{ClientId} {t}");

    async Task<MqttConnAckPacket?> TryConnectAsync(int port, bool expectSessionPresent)
    {
        int number;
        lock (_gate)
        {
            number = _connections + 1;
        }

        var connection = new Connection(number, Version);
        lock (_gate)
        {
            _connectAttempts++;
        }

        try
        {
            await connection.Tcp.ConnectAsync("127.0.0.1", port);
        }
        catch (SocketException ex)
        {
            ConnectFailed(port, ex);
            connection.Dispose();
            return null;
        }

        connection.Open();
        _ = Task.Run(() => ReadLoopAsync(connection));
        var connect = new MqttConnectPacket
        {
            ClientId = ClientId,
            Username = _user,
            Password = Encoding.UTF8.GetBytes(_user + "-pass"),
            CleanSession = false, // v3.1.1: a persistent session; v5: clean start 0 and ...
            SessionExpiryInterval = _sessionExpiry, // ... an expiry, so the session outlives the connection
            ReceiveMaximum = ReceiveMaximum,
            KeepAlivePeriod = 0, // a killed broker is noticed by the closed socket, and an idle client is never dropped
        };
        MqttConnAckPacket ack;
        try
        {
            await SendUnlockedAsync(connection, connect);
            ack = await connection.ConnAck.Task.WaitAsync(TestClient.Timeout);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or TimeoutException or ConnectionClosedException)
        {
            ConnectFailed(port, ex);
            connection.Dispose(); // the broker is not up yet or died again
            return null;
        }

        var accepted = Version == MqttProtocolVersion.V500 ? ack.ReasonCode == MqttConnectReasonCode.Success : ack.ReturnCode == MqttConnectReturnCode.ConnectionAccepted;
        if (!accepted)
        {
            ConnectFailed(port, new InvalidOperationException($"CONNACK {ack.ReasonCode} / {ack.ReturnCode}"));
            connection.Dispose();
            throw new InvalidOperationException($"{ClientId}: CONNACK {ack.ReasonCode} / {ack.ReturnCode}");
        }

        List<Outgoing> resend;
        lock (_gate)
        {
            _connections = number;
            Record(number, "in", "CONNACK", 0, false, 0, $"session present {ack.IsSessionPresent}");
            if (ack.IsSessionPresent != expectSessionPresent)
            {
                // A persistent session that the broker forgot after a crash breaks the contract (§6) even before
                // any message is counted; the client keeps its own state and goes on, so the counts still show.
                _errors.Add($"{ClientId} connection {number}: session present {ack.IsSessionPresent}, expected {expectSessionPresent}");
            }

            if (ack.UserProperties?.FirstOrDefault(p => p.Name == "ims-dropped") is { } dropped)
            {
                _errors.Add($"{ClientId} connection {number}: the broker dropped {dropped.Value} queued messages");
            }

            resend = [.. _outgoing.Values.OrderBy(m => m.Order)];
        }

        // [MQTT-4.4.0-1]: before anything new, every PUBLISH not yet PUBACKed / PUBRECed again (DUP = 1 when it
        // went out before, same packet id) and every PUBREL not yet PUBCOMPed, in their original order [MQTT-4.6.0-1].
        try
        {
            foreach (var message in resend)
            {
                await SendUnlockedAsync(connection, message.Released ? new MqttPubRelPacket { PacketIdentifier = message.Id } : ToPublish(message, number));
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
            // Killed again while re-sending: the next connect starts over.
        }

        connection.Ready = true;
        _connection = connection;
        _pulse.Fire();
        return ack;
    }

    MqttPublishPacket ToPublish(Outgoing message, int connection)
    {
        // Only under the send lock.
        var dup = message.SentOn != 0;
        message.SentOn = connection;
        return new MqttPublishPacket
        {
            Topic = message.Topic,
            Payload = new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(message.Payload)),
            QualityOfServiceLevel = message.Qos,
            PacketIdentifier = message.Id,
            Dup = dup,
        };
    }

    async Task ReadLoopAsync(Connection connection)
    {
        try
        {
            while (await connection.ReceiveAsync() is { } packet)
            {
                await HandleAsync(connection, packet);
                _pulse.Fire(); // whatever it changed, a waiting test looks again
            }
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException or EndOfStreamException or ConnectionClosedException)
        {
            // kill -9: the kernel closes the broker's sockets, a read ends with 0 bytes or a reset.
        }
        catch (Exception ex)
        {
            lock (_gate)
            {
                _errors.Add($"{ClientId} connection {connection.Number}: {ex}");
            }
        }
        finally
        {
            if (connection.ConnAck.Task.IsCompletedSuccessfully)
            {
                lock (_gate)
                {
                    Record(connection.Number, "in", "closed", 0, false, 0, null);
                }
            }

            connection.Dispose();
            connection.ConnAck.TrySetException(new ConnectionClosedException());
            connection.Closed.TrySetResult();
            _pulse.Fire();
        }
    }

    async Task HandleAsync(Connection connection, MqttPacket packet)
    {
        switch (packet)
        {
            case MqttConnAckPacket ack:
                if (!connection.ConnAck.TrySetResult(ack))
                {
                    Error(connection, "a second CONNACK");
                }

                break;

            case MqttPublishPacket publish:
                await OnPublishAsync(connection, publish);
                break;

            case MqttPubRelPacket pubRel:
                string? released;
                lock (_gate)
                {
                    // Releasing an id we do not hold (already released before a crash) is answered all the same
                    // [MQTT-4.3.3-11 / v5 4.3.3: PUBCOMP even when the id is unknown].
                    var known = _held.Remove(pubRel.PacketIdentifier, out released);
                    Record(connection.Number, "in", "PUBREL", pubRel.PacketIdentifier, false, 2, released, known ? null : "id not held");
                }

                await TrySendAsync(connection, new MqttPubCompPacket { PacketIdentifier = pubRel.PacketIdentifier }, released);
                break;

            case MqttPubAckPacket pubAck:
                lock (_gate)
                {
                    if (_outgoing.TryGetValue(pubAck.PacketIdentifier, out var message) && message.Qos == MqttQualityOfServiceLevel.AtLeastOnce)
                    {
                        _outgoing.Remove(message.Id);
                        Record(connection.Number, "in", "PUBACK", message.Id, false, 1, message.Payload, $"{pubAck.ReasonCode}");
                        Acknowledge(connection, message, (int)pubAck.ReasonCode);
                        _window.Release();
                    }
                    else
                    {
                        Error(connection, $"PUBACK {pubAck.PacketIdentifier} for no QoS 1 publish in flight");
                    }
                }

                _pulse.Fire();
                break;

            case MqttPubRecPacket pubRec:
                bool release;
                lock (_gate)
                {
                    release = _outgoing.TryGetValue(pubRec.PacketIdentifier, out var message) && message.Qos == MqttQualityOfServiceLevel.ExactlyOnce;
                    if (!release)
                    {
                        Error(connection, $"PUBREC {pubRec.PacketIdentifier} for no QoS 2 publish in flight");
                    }
                    else if (message!.Released)
                    {
                        // A second PUBREC (it re-sent what we re-sent): PUBREL again, nothing counted twice.
                        Record(connection.Number, "in", "PUBREC", message.Id, false, 2, message.Payload, "again");
                    }
                    else if ((int)pubRec.ReasonCode >= 0x80)
                    {
                        Record(connection.Number, "in", "PUBREC", message.Id, false, 2, message.Payload, $"{pubRec.ReasonCode}");
                        _outgoing.Remove(message.Id); // a refused flow ends here [MQTT-4.3.3 v5]
                        _window.Release();
                        Acknowledge(connection, message, (int)pubRec.ReasonCode);
                        release = false;
                    }
                    else
                    {
                        // From here the payload may be forgotten: only the id lives on, until PUBCOMP.
                        Record(connection.Number, "in", "PUBREC", message.Id, false, 2, message.Payload, $"{pubRec.ReasonCode}");
                        message.Released = true;
                        Acknowledge(connection, message, (int)pubRec.ReasonCode);
                    }
                }

                if (release)
                {
                    await TrySendAsync(connection, new MqttPubRelPacket { PacketIdentifier = pubRec.PacketIdentifier });
                }

                _pulse.Fire();
                break;

            case MqttPubCompPacket pubComp:
                lock (_gate)
                {
                    if (_outgoing.TryGetValue(pubComp.PacketIdentifier, out var message) && message.Released)
                    {
                        _outgoing.Remove(message.Id);
                        Record(connection.Number, "in", "PUBCOMP", message.Id, false, 2, message.Payload, null);
                        _window.Release();
                    }
                    else
                    {
                        Error(connection, $"PUBCOMP {pubComp.PacketIdentifier} for no released QoS 2 publish");
                    }
                }

                _pulse.Fire();
                break;

            case MqttSubAckPacket subAck:
                if (connection.SubAcks.TryRemove(subAck.PacketIdentifier, out var waiting))
                {
                    waiting.TrySetResult(subAck);
                }
                else
                {
                    Error(connection, $"SUBACK {subAck.PacketIdentifier} for no SUBSCRIBE");
                }

                break;

            case MqttDisconnectPacket disconnect:
                lock (_gate)
                {
                    Record(connection.Number, "in", "DISCONNECT", 0, false, 0, null, $"{disconnect.ReasonCode}");
                }

                break;

            default:
                Error(connection, $"unexpected {packet.GetType().Name}");
                break;
        }
    }

    async Task OnPublishAsync(Connection connection, MqttPublishPacket publish)
    {
        var payload = Encoding.UTF8.GetString(publish.Payload);
        var id = publish.PacketIdentifier;
        lock (_gate)
        {
            if (!connection.ConnAck.Task.IsCompleted)
            {
                Error(connection, $"PUBLISH {id} before CONNACK"); // [MQTT-3.2.0-1]: CONNACK is the first packet
            }

            switch (publish.QualityOfServiceLevel)
            {
                case MqttQualityOfServiceLevel.ExactlyOnce:
                    // Method B of [MQTT-4.3.3-9]: deliver on the first PUBLISH with an id we do not hold, hold it
                    // until PUBREL; a PUBLISH with a held id (the broker re-sending, DUP = 1) is not delivered again.
                    var fresh = _held.TryAdd(id, payload);
                    Record(connection.Number, "in", "PUBLISH", id, publish.Dup, 2, payload, fresh ? "delivered" : $"id held (for {_held[id]}): not delivered");
                    if (!fresh && _held[id] != payload)
                    {
                        // The broker reused an id we still hold for another message: that message is lost to us.
                        Error(connection, $"PUBLISH {id} '{payload}' reuses a held id (held for '{_held[id]}')");
                    }

                    if (fresh)
                    {
                        Deliver(connection, publish, payload);
                    }

                    break;

                default:
                    if (publish.QualityOfServiceLevel == MqttQualityOfServiceLevel.AtLeastOnce && _held.TryGetValue(id, out var holder))
                    {
                        // Delivered (QoS 1 has no receiver state), but the id is still in use by an open QoS 2 flow
                        // [MQTT-2.3.1-4 / v5 MQTT-2.2.1-4]: the broker forgot that flow.
                        Error(connection, $"QoS 1 PUBLISH {id} '{payload}' reuses an id held for QoS 2 '{holder}'");
                    }

                    Record(connection.Number, "in", "PUBLISH", id, publish.Dup, (int)publish.QualityOfServiceLevel, payload, "delivered");
                    Deliver(connection, publish, payload);
                    break;
            }
        }

        _pulse.Fire();
        switch (publish.QualityOfServiceLevel)
        {
            case MqttQualityOfServiceLevel.AtLeastOnce:
                await TrySendAsync(connection, new MqttPubAckPacket { PacketIdentifier = id }, payload);
                break;
            case MqttQualityOfServiceLevel.ExactlyOnce:
                await TrySendAsync(connection, new MqttPubRecPacket { PacketIdentifier = id });
                break;
        }
    }

    void Deliver(Connection connection, MqttPublishPacket publish, string payload)
    {
        _delivered.Add(payload);
        _deliveries.Add(new Delivery(connection.Number, publish.Topic, payload, publish.QualityOfServiceLevel, publish.Dup, publish.PacketIdentifier, _deliveries.Count));
    }

    void Acknowledge(Connection connection, Outgoing message, int reasonCode)
    {
        // v5: 0x10 "no matching subscribers" is a success too; anything from 0x80 is a refusal.
        if (reasonCode >= 0x80)
        {
            Error(connection, $"'{message.Payload}' refused: reason 0x{reasonCode:X2}");
        }
        else
        {
            _acknowledged.Add(message.Payload);
        }
    }

    void Error(Connection connection, string what)
    {
        lock (_gate)
        {
            _errors.Add($"{ClientId} connection {connection.Number}: {what}");
            Record(connection.Number, "in", "error", 0, false, 0, null, what);
        }
    }

    void Record(int connection, string direction, string type, ushort id, bool dup, int qos, string? payload, string? note = null) =>
        _trace.Add(new TraceEntry(_clock.Elapsed, connection, direction, type, id, dup, qos, payload, note));

    ushort NextId()
    {
        // Under _gate: never an id still in use by a flow of ours [MQTT-2.3.1-2].
        do
        {
            _lastId = _lastId == ushort.MaxValue ? (ushort)1 : (ushort)(_lastId + 1);
        }
        while (_outgoing.ContainsKey(_lastId) || _subscribing.Contains(_lastId));

        return _lastId;
    }

    async Task SendAsync(Connection connection, MqttPacket packet, string? about = null)
    {
        await _sendLock.WaitAsync();
        try
        {
            await SendUnlockedAsync(connection, packet, about);
        }
        finally
        {
            _sendLock.Release();
        }
    }

    /// <summary>An ack on a connection that may already be dead: the broker re-sends what it did not get.</summary>
    async Task TrySendAsync(Connection connection, MqttPacket packet, string? about = null)
    {
        try
        {
            await SendAsync(connection, packet, about);
        }
        catch (Exception ex) when (ex is IOException or SocketException or ObjectDisposedException)
        {
        }
    }

    /// <summary>Writes <paramref name="packet"/> and its trace line; <paramref name="about"/> names the payload an ack is for.</summary>
    async Task SendUnlockedAsync(Connection connection, MqttPacket packet, string? about = null)
    {
        lock (_gate)
        {
            switch (packet)
            {
                case MqttPublishPacket p:
                    Record(connection.Number, "out", "PUBLISH", p.PacketIdentifier, p.Dup, (int)p.QualityOfServiceLevel, Encoding.UTF8.GetString(p.Payload));
                    break;
                case MqttPubRelPacket r:
                    Record(connection.Number, "out", "PUBREL", r.PacketIdentifier, false, 2, _outgoing.TryGetValue(r.PacketIdentifier, out var m) ? m.Payload : null);
                    break;
                case MqttPubAckPacket a:
                    Record(connection.Number, "out", "PUBACK", a.PacketIdentifier, false, 1, about);
                    break;
                case MqttPubRecPacket rec:
                    Record(connection.Number, "out", "PUBREC", rec.PacketIdentifier, false, 2, _held.GetValueOrDefault(rec.PacketIdentifier));
                    break;
                case MqttPubCompPacket c:
                    Record(connection.Number, "out", "PUBCOMP", c.PacketIdentifier, false, 2, about);
                    break;
            }
        }

        var buffer = _encoder.Encode(packet).Join();
        await connection.Stream.WriteAsync(buffer);
    }

    sealed class Outgoing(ushort id, string topic, string payload, MqttQualityOfServiceLevel qos, long order)
    {
        public ushort Id { get; } = id;

        public string Topic { get; } = topic;

        public string Payload { get; } = payload;

        public MqttQualityOfServiceLevel Qos { get; } = qos;

        public long Order { get; } = order;

        /// <summary>The connection it last went out on; 0 = never sent (so DUP = 0 the first time).</summary>
        public int SentOn { get; set; }

        /// <summary>PUBREC came, PUBREL went: only the id waits for PUBCOMP.</summary>
        public bool Released { get; set; }
    }

    sealed class ConnectionClosedException : Exception
    {
    }

    /// <summary>One TCP connection: reads through a buffer, so packets that follow CONNACK in the same segment are kept.</summary>
    sealed class Connection(int number, MqttProtocolVersion version) : IDisposable
    {
        readonly MqttPacketFormatterAdapter _decoder = new(version, new MqttBufferWriter(4096, 65536));
        readonly byte[] _one = new byte[1];
        BufferedStream _reader = null!;

        public int Number { get; } = number;

        public TcpClient Tcp { get; } = new() { NoDelay = true };

        public NetworkStream Stream { get; private set; } = null!;

        public TaskCompletionSource<MqttConnAckPacket> ConnAck { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public TaskCompletionSource Closed { get; } = new(TaskCreationOptions.RunContinuationsAsynchronously);

        public System.Collections.Concurrent.ConcurrentDictionary<ushort, TaskCompletionSource<MqttSubAckPacket>> SubAcks { get; } = new();

        /// <summary>CONNACK read and the session's packets re-sent: new publishes may go.</summary>
        public bool Ready { get; set; }

        public void Open()
        {
            Stream = Tcp.GetStream();
            _reader = new BufferedStream(Stream, 64 * 1024);
        }

        /// <summary>The next packet, or null when the broker closed the connection.</summary>
        public async Task<MqttPacket?> ReceiveAsync()
        {
            if (await _reader.ReadAsync(_one.AsMemory()) == 0)
            {
                return null;
            }

            var header = _one[0];
            var length = 0;
            var multiplier = 1;
            do
            {
                if (await _reader.ReadAsync(_one.AsMemory()) == 0)
                {
                    return null;
                }

                length += (_one[0] & 0x7F) * multiplier;
                multiplier *= 128;
            }
            while ((_one[0] & 0x80) != 0);

            var body = new byte[length];
            await _reader.ReadExactlyAsync(body); // EndOfStreamException when cut in the middle
            return _decoder.Decode(new ReceivedMqttPacket(header, new ArraySegment<byte>(body), length + 2));
        }

        public void Dispose() => Tcp.Dispose();
    }
}

/// <summary>A message handed to the application, on which connection (1 = the first) and with which packet.</summary>
public sealed record Delivery(int Connection, string Topic, string Payload, MqttQualityOfServiceLevel Qos, bool Dup, ushort PacketId, int Index);

public sealed record TraceEntry(TimeSpan At, int Connection, string Direction, string Type, ushort PacketId, bool Dup, int Qos, string? Payload, string? Note)
{
    public override string ToString() =>
        $"{At.TotalSeconds,8:F3}s conn {Connection} {Direction,-3} {Type,-8} id {PacketId,5}{(Dup ? " DUP" : "    ")} q{Qos} {Payload}{(Note is null ? "" : $" ({Note})")}";
}

/// <summary>A signal fired on every change of any client's state, for waiting on a condition without sleeping.</summary>
public sealed class Pulse
{
    TaskCompletionSource _next = new(TaskCreationOptions.RunContinuationsAsynchronously);

    public void Fire() => Interlocked.Exchange(ref _next, new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously)).TrySetResult();

    /// <summary>Returns once <paramref name="condition"/> holds; false when <paramref name="timeout"/> passed first.</summary>
    public async Task<bool> WaitUntilAsync(Func<bool> condition, TimeSpan timeout)
    {
        var deadline = DateTime.UtcNow + timeout;
        while (true)
        {
            var next = Volatile.Read(ref _next).Task; // taken before the check, so a change in between is not missed
            if (condition())
            {
                return true;
            }

            var left = deadline - DateTime.UtcNow;
            if (left <= TimeSpan.Zero)
            {
                return false;
            }

            try
            {
                await next.WaitAsync(left);
            }
            catch (TimeoutException)
            {
            }
        }
    }
}
