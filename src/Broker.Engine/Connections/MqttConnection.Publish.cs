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
                return Send(new MqttPubRecPacket { PacketIdentifier = id });
            }

            if (IsV5 && session.InboundQos2Count > _engine.Options.Mqtt.ReceiveMaximum)
            {
                session.EndInboundQos2(id);
                EngineLog.ProtocolError(_engine.ConnectionLogger, Name, "more QoS 2 publishes in flight than Receive Maximum [MQTT-3.3.4-9]");
                Disconnect(MqttDisconnectReasonCode.ReceiveMaximumExceeded, "receive maximum exceeded");
                return false;
            }
        }

        var decision = CheckTopicName(topic);
        if (decision == PolicyDecision.Allow)
        {
            decision = _engine.Policy.AuthorizePublish(_principal!, topic);
        }

        if (decision != PolicyDecision.Allow)
        {
            // v5 says no with a reason code; v3.1.1 cannot, so it is acknowledged and dropped [contract §2].
            _engine.Counters.PublishWasRefused(decision);
            EngineLog.PublishRefused(_engine.Logger, _clientId, _principal!.UserId, topic, decision.ToString());
            var reason = ReasonCodes.ToPubAck(decision);
            if (qos == MqttQualityOfServiceLevel.AtLeastOnce)
            {
                Send(new MqttPubAckPacket { PacketIdentifier = id, ReasonCode = reason });
            }
            else if (qos == MqttQualityOfServiceLevel.ExactlyOnce)
            {
                if (IsV5)
                {
                    session.EndInboundQos2(id); // a PUBREC >= 0x80 ends the exchange [MQTT-4.3.3-?]
                }

                Send(new MqttPubRecPacket { PacketIdentifier = id, ReasonCode = (MqttPubRecReasonCode)reason });
            }

            return true;
        }

        var message = BuildMessage(packet, topic);
        try
        {
            await _engine.Router.RouteAsync(message);
        }
        catch (Exception ex)
        {
            // Not recorded means not acknowledged: v5 hears why, v3.1.1 loses the connection and re-sends.
            EngineLog.StoreFailed(_engine.Logger, topic, ex);
            if (qos == MqttQualityOfServiceLevel.ExactlyOnce)
            {
                session.EndInboundQos2(id);
            }

            if (IsV5 && qos != MqttQualityOfServiceLevel.AtMostOnce)
            {
                return Send(qos == MqttQualityOfServiceLevel.AtLeastOnce
                    ? new MqttPubAckPacket { PacketIdentifier = id, ReasonCode = MqttPubAckReasonCode.QuotaExceeded }
                    : new MqttPubRecPacket { PacketIdentifier = id, ReasonCode = MqttPubRecReasonCode.QuotaExceeded });
            }

            _closeReason = "store unavailable";
            return false;
        }

        return qos switch
        {
            MqttQualityOfServiceLevel.AtLeastOnce => Send(new MqttPubAckPacket { PacketIdentifier = id }),
            MqttQualityOfServiceLevel.ExactlyOnce => Send(new MqttPubRecPacket { PacketIdentifier = id }),
            _ => true,
        };
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

    BrokerMessage BuildMessage(MqttPublishPacket packet, string topic)
    {
        var payload = packet.Payload;
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
            UserProperties = _engine.Policy.TransformUserProperties(_principal!, packet.UserProperties),
            ExpiresAtUnixMs = packet.MessageExpiryInterval > 0 ? _engine.NowUnixMs + packet.MessageExpiryInterval * 1000L : 0,
            SenderClientId = _clientId,
            SenderUserId = _principal!.UserId,
            Id = _engine.NextMessageId(),
        };
    }

    bool HandlePubAck(MqttPubAckPacket packet)
    {
        _session!.Complete(packet.PacketIdentifier, DeliveryState.AwaitingAck);
        return true;
    }

    bool HandlePubRec(MqttPubRecPacket packet)
    {
        var id = packet.PacketIdentifier;
        if (IsV5 && (int)packet.ReasonCode >= 0x80)
        {
            // The receiver refused it: the exchange ends here, no PUBREL [MQTT-4.3.3-4 v5].
            _session!.Complete(id, DeliveryState.AwaitingAck);
            return true;
        }

        var known = _session!.Released(id);
        return Send(new MqttPubRelPacket
        {
            PacketIdentifier = id,
            ReasonCode = known ? MqttPubRelReasonCode.Success : MqttPubRelReasonCode.PacketIdentifierNotFound,
        });
    }

    bool HandlePubRel(MqttPubRelPacket packet)
    {
        var known = _session!.EndInboundQos2(packet.PacketIdentifier);
        return Send(new MqttPubCompPacket
        {
            PacketIdentifier = packet.PacketIdentifier,
            ReasonCode = known ? MqttPubCompReasonCode.Success : MqttPubCompReasonCode.PacketIdentifierNotFound,
        });
    }

    bool HandlePubComp(MqttPubCompPacket packet)
    {
        _session!.Complete(packet.PacketIdentifier, DeliveryState.AwaitingComp);
        return true;
    }
}
