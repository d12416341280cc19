using Broker.Engine.Diagnostics;
using Broker.Engine.Routing;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>
/// A connection's line of acknowledgements (PUBACK, PUBREC, PUBREL, PUBCOMP) that wait for a store write:
/// each goes to the writer only once its write is durable, and in the order the receive loop handed them
/// in [MQTT-4.6.0-2..4].
/// <para>
/// A QoS 1/2 publish is acknowledged only once the store has it [engine invariant 1]. Waiting for each
/// commit before reading the next packet would cap a publisher at one message per fsync, so the receive
/// loop goes on: acks whose commit is pending wait here, and the commit's completion (on the store's
/// thread) sends every ack at the head of the line that is durable now. No task or channel per
/// connection. With more than Receive Maximum acks waiting, <see cref="AcknowledgeAsync"/> does not
/// complete until one goes out, so the receive loop stops reading (a v5 client is disconnected before
/// that: MqttConnection.TakeReceiveQuota counts the acks waiting here as unsent).
/// </para>
/// <para>
/// Interface: <see cref="AcknowledgeAsync"/>, called by the receive loop only. A held QoS 2 route
/// (<see cref="HeldRoute"/>) reaches its recipients' queues when its PUBREC leaves the line, not before.
/// A write that failed is answered here (<see cref="StoreFailed"/>). It uses its connection's writer, and
/// from the connection <see cref="MqttConnection.Session"/>, <see cref="MqttConnection.IsV5"/>,
/// <see cref="MqttConnection.Name"/> and <see cref="MqttConnection.CloseFromOutside"/>.
/// </para>
/// </summary>
internal sealed class AckSequencer
{
    readonly MqttConnection _connection;
    readonly EngineContext _engine;
    readonly ConnectionWriter _writer;
    Queue<PendingAck>? _pending; // created at the first ack that has to wait
    int _pendingCount; // _pending.Count as of the last change under its lock, for the lock-free fast path
    TaskCompletionSource? _room;
    Action? _sendDurableAcks; // one delegate per connection, for every commit it waits on

    public AckSequencer(MqttConnection connection, EngineContext engine, ConnectionWriter writer)
    {
        _connection = connection;
        _engine = engine;
        _writer = writer;
    }

    /// <summary>
    /// Sends <paramref name="ack"/> once <paramref name="durable"/> has completed (null: nothing to wait
    /// for) and every ack handed in before it has gone; releases <paramref name="held"/> just before. Completes
    /// at once unless more than Receive Maximum acks are waiting. Always true (the receive loop goes on).
    /// </summary>
    public async ValueTask<bool> AcknowledgeAsync(ValueTask? durable, MqttPacket ack, MqttQualityOfServiceLevel qos, ushort id, string topic, HeldRoute? held = null)
    {
        var queue = _pending;
        if ((queue is null || Volatile.Read(ref _pendingCount) == 0) && (durable is null || durable.Value.IsCompletedSuccessfully))
        {
            // Nothing pending ahead of it, and already durable (memory store, or no persistent recipient;
            // or a held QoS 2 message whose commit finished since it was routed: released here).
            durable?.GetAwaiter().GetResult();
            held?.Release();
            _writer.Send(ack);
            return true;
        }

        queue ??= _pending = new Queue<PendingAck>();
        var commit = durable?.AsTask();
        Task? room = null;
        lock (queue)
        {
            queue.Enqueue(new PendingAck(commit, ack, qos, id, topic, held));
            _pendingCount = queue.Count;
            if (queue.Count > _engine.Options.Mqtt.ReceiveMaximum) // ">": one more is read, so a v5 client beyond it is seen (0x93)
            {
                _room = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
                room = _room.Task;
            }
        }

        if (commit is { IsCompleted: false })
        {
            commit.GetAwaiter().UnsafeOnCompleted(_sendDurableAcks ??= SendDurableAcks);
        }
        else
        {
            SendDurableAcks();
        }

        if (room is not null)
        {
            await room;
        }

        return true;
    }

    /// <summary>
    /// Sends the acks at the head of the line whose commit is done, in order; stops at the first still
    /// pending. Runs on whichever thread completed a commit (the store's), so it must never throw: a
    /// fault closes this connection and stays here.
    /// </summary>
    void SendDurableAcks()
    {
        try
        {
            SendDurableAcksCore();
        }
        catch (Exception ex)
        {
            EngineLog.ConnectionFailed(_engine.ConnectionLogger, _connection.Name, ex);
            _connection.CloseFromOutside(MqttDisconnectReasonCode.UnspecifiedError, "internal error");
        }
    }

    void SendDurableAcksCore()
    {
        var queue = _pending!;
        var sent = false;
        TaskCompletionSource? room = null;
        lock (queue)
        {
            // Under the lock, so two threads finishing commits cannot reorder acks (nor held QoS 2
            // deliveries); the writer's control queue keeps the order.
            while (queue.TryPeek(out var head) && head.Durable is null or { IsCompleted: true })
            {
                queue.Dequeue();
                if (head.Durable is { IsCompletedSuccessfully: false } failed)
                {
                    head.Held?.Abandon();
                    StoreFailed(head, failed.Exception?.InnerException ?? new OperationCanceledException());
                }
                else
                {
                    head.Held?.Release();
                    _writer.Enqueue(head.Ack);
                    sent = true;
                }
            }

            _pendingCount = queue.Count;
            if (_room is not null && queue.Count <= _engine.Options.Mqtt.ReceiveMaximum)
            {
                room = _room;
                _room = null;
            }
        }

        room?.TrySetResult();
        if (sent)
        {
            _writer.Signal();
        }
    }

    /// <summary>
    /// Not recorded means not acknowledged: v5 hears why (0x97), v3.1.1 loses the connection and re-sends.
    /// A PUBREL or PUBCOMP whose state change did not reach the disk is not sent either: the connection
    /// closes and the client resumes the exchange from what it last saw.
    /// </summary>
    void StoreFailed(in PendingAck pending, Exception ex)
    {
        EngineLog.StoreFailed(_engine.Logger, pending.Topic, ex);
        if (pending.Ack is MqttPubRelPacket or MqttPubCompPacket)
        {
            _connection.CloseFromOutside(MqttDisconnectReasonCode.UnspecifiedError, "store unavailable");
            return;
        }

        if (pending.Qos == MqttQualityOfServiceLevel.ExactlyOnce)
        {
            _connection.Session?.EndInboundQos2(pending.PacketId);
        }

        if (_connection.IsV5)
        {
            _writer.Send(pending.Qos == MqttQualityOfServiceLevel.AtLeastOnce
                ? new MqttPubAckPacket { PacketIdentifier = pending.PacketId, ReasonCode = MqttPubAckReasonCode.QuotaExceeded }
                : new MqttPubRecPacket { PacketIdentifier = pending.PacketId, ReasonCode = MqttPubRecReasonCode.QuotaExceeded });
            return;
        }

        _connection.CloseFromOutside(MqttDisconnectReasonCode.UnspecifiedError, "store unavailable"); // v3.1.1: no DISCONNECT is sent
    }

    readonly record struct PendingAck(Task? Durable, MqttPacket Ack, MqttQualityOfServiceLevel Qos, ushort PacketId, string Topic, HeldRoute? Held);
}
