using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>PUBLISH and its acknowledgements in both directions [MQTT-3.3 – 3.7, 4.3].</summary>
internal sealed partial class MqttConnection
{
    Dictionary<ushort, string>? _topicAliases;

    async ValueTask<bool> HandlePublishAsync(MqttPublishPacket packet)
    {
        // The user's publish rate: tokens taken at once on the fast path; otherwise this connection is not
        // read until they come back (slowed down, never dropped), up to RateGrace.
        if (_limits is { LimitsRate: true } limits && !TryTakeRate(limits, packet) && !await WaitForRateAsync(limits, packet))
        {
            return false;
        }

        // Store backpressure: while the store's write queue is at its bound (Broker:Store:MaxPendingWrites)
        // this publish waits, and with it the reading of this connection: TCP slows the publisher down.
        var room = _engine.Store.WaitForRoomAsync();
        if (!room.IsCompletedSuccessfully && !await WaitForStoreAsync(room))
        {
            return false; // closed meanwhile (kick, takeover, shutdown): not handled, so not acknowledged
        }

        _engine.Counters.MessageReceived(packet.QualityOfServiceLevel);
        var session = _session!;
        var qos = packet.QualityOfServiceLevel;
        var id = packet.PacketIdentifier;

        if (!TryResolveTopic(packet, out var topic))
        {
            return false;
        }

        if (qos == MqttQualityOfServiceLevel.ExactlyOnce)
        {
            // The same packet id before PUBREL is a re-send: acknowledge again, never route twice [MQTT-4.3.3-9].
            if (!session.BeginInboundQos2(id))
            {
                return await _acks.AcknowledgeAsync(null, new MqttPubRecPacket { PacketIdentifier = id }, qos, id, topic);
            }

            if (!TakeReceiveQuota())
            {
                session.EndInboundQos2(id);
                return false;
            }
        }
        else if (qos == MqttQualityOfServiceLevel.AtLeastOnce && !TakeReceiveQuota())
        {
            return false;
        }

        var decision = CheckTopicName(topic);
        if (decision == PolicyDecision.Allow && topic[0] == '$'
            && _engine.Policy.TryHandleCommand(_principal!, topic, PayloadOf(packet), out var command))
        {
            // A command in a $-space the policy owns: never routed, never retained; acknowledged once durable.
            if (command.Decision == PolicyDecision.Allow)
            {
                return await AcknowledgePublishAsync(command.Durable, qos, id, topic);
            }

            decision = command.Decision;
        }
        else if (decision == PolicyDecision.Allow)
        {
            decision = _engine.Policy.AuthorizePublish(_principal!, topic);
        }

        if (decision != PolicyDecision.Allow)
        {
            // v5 says no with a reason code; v3.1.1 cannot, so it is acknowledged and dropped [contract §2].
            _engine.Counters.PublishWasRefused(decision);
            EngineLog.PublishRefused(_engine.Logger, _clientId, _principal!.UserId, topic, decision.ToString());
            return await RefuseAsync(ReasonCodes.ToPubAck(decision), qos, id, topic);
        }

        var message = BuildMessage(packet, topic);
        ValueTask durable;
        HeldRoute? held = null;
        var retain = RetainResult.None;
        try
        {
            // QoS 2 reaches no queue before it is durable, and a persistent session's packet id is stored in
            // the same commit as the message: a re-send after a crash is then answered, never routed again.
            durable = qos == MqttQualityOfServiceLevel.ExactlyOnce
                ? _engine.Router.RouteHeld(message, session.IsPersistent ? new InboundPacket(_clientId, id) : null, out held, out retain, _limits?.MaxRetained ?? 0)
                : _engine.Router.RouteAsync(message, out retain, _limits?.MaxRetained ?? 0);
        }
        catch (Exception ex)
        {
            durable = ValueTask.FromException(ex);
        }

        if (retain.IsRefused())
        {
            // Over a broker-wide retained bound or the user's quota: nothing was routed; counted and logged by the router.
            return await RefuseAsync(MqttPubAckReasonCode.QuotaExceeded, qos, id, topic);
        }

        return await AcknowledgePublishAsync(durable, qos, id, topic, held: held);
    }

    /// <summary>
    /// A publish that was not taken: v5 hears why in its PUBACK / PUBREC; v3.1.1 cannot be told, so it is
    /// acknowledged as usual and the message is dropped [contract §2]. QoS 0 hears nothing.
    /// </summary>
    ValueTask<bool> RefuseAsync(MqttPubAckReasonCode reason, MqttQualityOfServiceLevel qos, ushort id, string topic)
    {
        if (qos == MqttQualityOfServiceLevel.ExactlyOnce && IsV5)
        {
            _session!.EndInboundQos2(id); // a PUBREC >= 0x80 ends the exchange [MQTT-4.3.3-4 v5]
        }

        return qos == MqttQualityOfServiceLevel.AtMostOnce ? ValueTask.FromResult(true) : AcknowledgePublishAsync(null, qos, id, topic, reason);
    }

    /// <summary>
    /// The answer to a PUBLISH by its QoS: PUBACK (1) or PUBREC (2) once <paramref name="durable"/> is (with
    /// <paramref name="reason"/>, v5), nothing for QoS 0 (a failed write is still logged). Acks go through
    /// the ack line (<see cref="AckSequencer"/>): after the store, in order, without stopping the receive loop.
    /// </summary>
    ValueTask<bool> AcknowledgePublishAsync(ValueTask? durable, MqttQualityOfServiceLevel qos, ushort id, string topic, MqttPubAckReasonCode reason = MqttPubAckReasonCode.Success, HeldRoute? held = null) => qos switch
    {
        MqttQualityOfServiceLevel.AtLeastOnce => _acks.AcknowledgeAsync(durable, new MqttPubAckPacket { PacketIdentifier = id, ReasonCode = reason }, qos, id, topic),
        MqttQualityOfServiceLevel.ExactlyOnce => _acks.AcknowledgeAsync(durable, new MqttPubRecPacket { PacketIdentifier = id, ReasonCode = (MqttPubRecReasonCode)reason }, qos, id, topic, held),
        _ => ValueTask.FromResult(durable is { } written ? Observe(written, topic) : true),
    };

    TaskCompletionSource? _storeWaitEnded;

    /// <summary>
    /// Waits for room in the store, or until the connection is closed from outside (which cannot wake a
    /// receive loop that is not reading). Meanwhile the keep-alive check leaves this connection alone: its
    /// client is not the one that is slow. False: closing, the publish is not handled.
    /// </summary>
    async ValueTask<bool> WaitForStoreAsync(ValueTask room)
    {
        var ended = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        Interlocked.Exchange(ref _storeWaitEnded, ended); // full fence, then the writer's closing flag is read (CloseFromOutside: the other way round)
        _waitingForStore = true;
        try
        {
            if (!_writer.IsClosing)
            {
                await Task.WhenAny(room.AsTask(), ended.Task);
            }
        }
        finally
        {
            _waitingForStore = false;
            Volatile.Write(ref _storeWaitEnded, null);
            Volatile.Write(ref _lastActivityMs, Environment.TickCount64);
        }

        return !_writer.IsClosing;
    }

    bool Observe(ValueTask durable, string topic)
    {
        _engine.Observe(durable, topic);
        return true;
    }

    // ---- Receive Maximum, the broker's side [MQTT-3.3.4-9, MQTT-4.9.0-3] ----------------------------
    //
    // _receiveQuotaUsed counts the QoS 1 and 2 PUBLISHes of a v5 client that the broker has not finished
    // answering: +1 when one is received, -1 when the writer puts out the packet that returns its quota
    // (a PUBACK; for QoS 2 a PUBCOMP, or a PUBREC with a reason >= 0x80) [MQTT-4.9.0-3 read from the receiver's side].
    // A PUBACK or PUBREC still waiting in the ack line (AckSequencer) for its commit has not been sent, so it still counts.
    // QoS 2 packet ids kept from an earlier connection of the session (waiting for their PUBREL) count from the
    // start, as mosquitto counts them. Receive loop: +1; writer: -1; hence interlocked.

    int _receiveQuotaUsed;

    /// <summary>One more unacknowledged QoS 1/2 PUBLISH; beyond our Receive Maximum the v5 client is disconnected with 0x93.</summary>
    bool TakeReceiveQuota()
    {
        if (!IsV5)
        {
            return true; // v3.1.1 was told no Receive Maximum; the ack line's backpressure bounds it instead
        }

        if (Volatile.Read(ref _receiveQuotaUsed) >= _engine.Options.Mqtt.ReceiveMaximum)
        {
            EngineLog.ProtocolError(_engine.ConnectionLogger, Name, "more unacknowledged QoS 1/2 publishes than Receive Maximum [MQTT-3.3.4-9]");
            Disconnect(MqttDisconnectReasonCode.ReceiveMaximumExceeded, "receive maximum exceeded");
            return false;
        }

        Interlocked.Increment(ref _receiveQuotaUsed);
        return true;
    }

    /// <summary>Writer: an ack that returns a v5 client's send quota is going out now.</summary>
    internal void ReturnReceiveQuota(MqttPacket packet)
    {
        if (IsV5 && packet is MqttPubAckPacket
                or MqttPubRecPacket { ReasonCode: >= MqttPubRecReasonCode.UnspecifiedError }
                or MqttPubCompPacket { ReasonCode: MqttPubCompReasonCode.Success })
        {
            Interlocked.Decrement(ref _receiveQuotaUsed);
        }
    }

    /// <summary>Inbound topic aliases [MQTT-3.3.2-7 .. -12]: a v5 client may send a topic once and an alias after.</summary>
    bool TryResolveTopic(MqttPublishPacket packet, out string topic)
    {
        topic = packet.Topic ?? "";
        if (!IsV5 || packet.TopicAlias == 0)
        {
            return true;
        }

        if (packet.TopicAlias > _engine.Options.Mqtt.TopicAliasMaximum)
        {
            EngineLog.ProtocolError(_engine.ConnectionLogger, Name, $"topic alias {packet.TopicAlias} above Topic Alias Maximum");
            Disconnect(MqttDisconnectReasonCode.TopicAliasInvalid, "topic alias invalid");
            return false;
        }

        _topicAliases ??= [];
        if (topic.Length > 0)
        {
            _topicAliases[packet.TopicAlias] = topic;
            return true;
        }

        if (_topicAliases.TryGetValue(packet.TopicAlias, out var known))
        {
            topic = known;
            return true;
        }

        return ProtocolError($"unknown topic alias {packet.TopicAlias}");
    }

    /// <summary>The engine's own topic rules: MQTT grammar, configured limits, read-only $SYS.</summary>
    PolicyDecision CheckTopicName(string topic)
    {
        var limits = _engine.Options.Limits;
        if (!MqttTopic.IsValidName(topic) || topic.Length > limits.MaxTopicLength || MqttTopic.CountLevels(topic) > limits.MaxTopicLevels)
        {
            return PolicyDecision.TopicInvalid;
        }

        return topic.StartsWith("$SYS", StringComparison.Ordinal) ? PolicyDecision.NotAuthorized : PolicyDecision.Allow;
    }

    static ReadOnlyMemory<byte> PayloadOf(MqttPublishPacket packet) =>
        packet.Payload.IsSingleSegment ? packet.Payload.First : System.Buffers.BuffersExtensions.ToArray(packet.Payload);

    // ---- publish rate limits (a policy's, per user over all its connections) ----------------------------
    //
    // The receive loop awaits each packet's handler, so waiting here for tokens stops reading this connection:
    // TCP pushes back on the client, nothing is dropped. _overRateSince: when this connection first had to
    // wait in the current stretch of waits (0: none); a stretch ends when a publish found its tokens at once
    // more than a second after the last wait. A stretch longer than RateGrace closes the connection (v5 0x96).

    long _overRateSince;
    long _lastRateWait;

    bool TryTakeRate(ClientLimits limits, MqttPublishPacket packet)
    {
        // Successful leases of a token bucket are one shared instance: no allocation on this path.
        if (limits.Publishes is { } count && !count.AttemptAcquire(1).IsAcquired)
        {
            return false;
        }

        if (limits.PublishBytes is { } bytes && BytesCost(limits, packet) is > 0 and var cost && !bytes.AttemptAcquire(cost).IsAcquired)
        {
            _rateBytesOnly = true; // the publish token is taken: only the bytes are still owed
            return false;
        }

        if (_overRateSince != 0 && Environment.TickCount64 - _lastRateWait > 1000)
        {
            _overRateSince = 0;
        }

        return true;
    }

    bool _rateBytesOnly;
    CancellationTokenSource? _rateWait;

    /// <summary>Wakes a receive loop waiting for rate tokens: the connection is closing.</summary>
    void EndRateWait()
    {
        try
        {
            Volatile.Read(ref _rateWait)?.Cancel();
        }
        catch (ObjectDisposedException)
        {
            // The wait ended meanwhile.
        }
    }

    static int BytesCost(ClientLimits limits, MqttPublishPacket packet) => (int)Math.Min(packet.Payload.Length, limits.PublishBytesBurst);

    async ValueTask<bool> WaitForRateAsync(ClientLimits limits, MqttPublishPacket packet)
    {
        var bytesOnly = _rateBytesOnly;
        _rateBytesOnly = false;
        var now = Environment.TickCount64;
        if (_overRateSince == 0 || now - _lastRateWait > 1000)
        {
            _overRateSince = now;
        }

        _engine.Counters.PublishWasThrottled();
        var left = limits.RateGrace - TimeSpan.FromMilliseconds(now - _overRateSince);
        using var grace = new CancellationTokenSource(left > TimeSpan.Zero ? left : TimeSpan.Zero);
        Volatile.Write(ref _rateWait, grace); // a close from outside (takeover, kick, shutdown) ends the wait
        try
        {
            if (_writer.IsClosing)
            {
                return false;
            }

            if (!bytesOnly && limits.Publishes is { } count)
            {
                using var lease = await count.AcquireAsync(1, grace.Token);
                if (!lease.IsAcquired)
                {
                    return RateTooHigh(limits);
                }
            }

            if (limits.PublishBytes is { } bytes && BytesCost(limits, packet) is > 0 and var cost)
            {
                using var lease = await bytes.AcquireAsync(cost, grace.Token);
                if (!lease.IsAcquired)
                {
                    return RateTooHigh(limits);
                }
            }
        }
        catch (OperationCanceledException)
        {
            return !_writer.IsClosing && RateTooHigh(limits);
        }
        finally
        {
            Volatile.Write(ref _rateWait, null);
        }

        _lastRateWait = Environment.TickCount64;
        return !_writer.IsClosing;
    }

    bool RateTooHigh(ClientLimits limits)
    {
        _engine.Counters.RateDisconnected();
        EngineLog.RateDisconnected(_engine.ConnectionLogger, _clientId, _principal!.UserId, limits.RateGrace.TotalSeconds);
        Disconnect(MqttDisconnectReasonCode.MessageRateTooHigh, "message rate too high");
        return false;
    }

    BrokerMessage BuildMessage(MqttPublishPacket packet, string topic)
    {
        var payload = packet.Payload;
        var id = _engine.Ids.Next();
        return new BrokerMessage
        {
            Topic = topic,
            Payload = payload.IsSingleSegment ? payload.First : System.Buffers.BuffersExtensions.ToArray(payload),
            Qos = packet.QualityOfServiceLevel,
            Retain = packet.Retain,
            ContentType = packet.ContentType,
            ResponseTopic = packet.ResponseTopic,
            CorrelationData = packet.CorrelationData,
            PayloadFormat = packet.PayloadFormatIndicator,
            UserProperties = _engine.Policy.TransformUserProperties(_principal!, packet.UserProperties, id),
            ExpiresAtUnixMs = packet.MessageExpiryInterval > 0 ? _engine.NowUnixMs + packet.MessageExpiryInterval * 1000L : 0,
            SenderClientId = _clientId,
            SenderUserId = _principal!.UserId,
            Id = id,
        };
    }

    bool HandlePubAck(MqttPubAckPacket packet)
    {
        _session!.Complete(packet.PacketIdentifier, DeliveryState.AwaitingAck);
        return true;
    }

    ValueTask<bool> HandlePubRecAsync(MqttPubRecPacket packet)
    {
        var id = packet.PacketIdentifier;
        if (IsV5 && (int)packet.ReasonCode >= 0x80)
        {
            // The receiver refused it: the exchange ends here, no PUBREL [MQTT-4.3.3-4 v5].
            _session!.Complete(id, DeliveryState.AwaitingAck, acknowledged: false);
            return ValueTask.FromResult(true);
        }

        // PUBREL only once "released pending" is durable: after a crash the session resumes with PUBREL,
        // never with a second PUBLISH of a message the client has already taken [engine invariant 2].
        var known = _session!.Released(id);
        var pubRel = new MqttPubRelPacket
        {
            PacketIdentifier = id,
            ReasonCode = known ? MqttPubRelReasonCode.Success : MqttPubRelReasonCode.PacketIdentifierNotFound,
        };
        if (!known)
        {
            return ValueTask.FromResult(Send(pubRel));
        }

        ValueTask? committed = new ValueTask(_session.Committed());
        return _acks.AcknowledgeAsync(committed, pubRel, MqttQualityOfServiceLevel.ExactlyOnce, id, "");
    }

    ValueTask<bool> HandlePubRelAsync(MqttPubRelPacket packet)
    {
        // PUBCOMP only once the packet id's release is durable: otherwise a crash brings the id back as
        // pending, and the client's next QoS 2 PUBLISH with that id would be answered and never routed.
        var id = packet.PacketIdentifier;
        var known = _session!.EndInboundQos2(id);
        var pubComp = new MqttPubCompPacket
        {
            PacketIdentifier = id,
            ReasonCode = known ? MqttPubCompReasonCode.Success : MqttPubCompReasonCode.PacketIdentifierNotFound,
        };
        if (!known)
        {
            return ValueTask.FromResult(Send(pubComp));
        }

        ValueTask? committed = new ValueTask(_session.Committed());
        return _acks.AcknowledgeAsync(committed, pubComp, MqttQualityOfServiceLevel.ExactlyOnce, id, "");
    }

    bool HandlePubComp(MqttPubCompPacket packet)
    {
        _session!.Complete(packet.PacketIdentifier, DeliveryState.AwaitingComp, acknowledged: false); // acknowledged at PUBREC
        return true;
    }
}
