using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>SUBSCRIBE, UNSUBSCRIBE and DISCONNECT [MQTT-3.8 – 3.11, 3.14].</summary>
internal sealed partial class MqttConnection
{
    async ValueTask<bool> HandleSubscribeAsync(MqttSubscribePacket packet)
    {
        var session = _session!;
        var codes = new List<MqttSubscribeReasonCode>(packet.TopicFilters.Count);
        List<(Subscription Subscription, bool Existed)>? granted = null;

        // One reason code per filter, in the order of the request [MQTT-3.8.4-6, 3.9.3-1].
        foreach (var filter in packet.TopicFilters)
        {
            var key = filter.Topic ?? "";
            string? shareName = null;
            var inner = key;
            var decision = PolicyDecision.Allow;
            if (MqttTopic.IsShared(key) && !MqttTopic.TryParseShared(key, out shareName, out inner))
            {
                decision = PolicyDecision.TopicInvalid;
            }
            else if (shareName is not null && filter.NoLocal && IsV5)
            {
                return ProtocolError("No Local on a shared subscription [MQTT-3.8.3-4]");
            }

            if (decision == PolicyDecision.Allow)
            {
                decision = CheckFilter(inner);
            }

            if (decision == PolicyDecision.Allow)
            {
                decision = _engine.Policy.AuthorizeSubscribe(_principal!, inner);
            }

            // The policy's quota of subscriptions per session: a new filter beyond it is refused; replacing one is not.
            if (decision == PolicyDecision.Allow && _limits is { MaxSubscriptions: > 0 } limits
                && session.SubscriptionCount >= limits.MaxSubscriptions && !session.HasSubscription(key))
            {
                decision = PolicyDecision.QuotaExceeded;
            }

            if (decision != PolicyDecision.Allow)
            {
                _engine.Counters.SubscribeWasRefused(decision);
                EngineLog.SubscribeRefused(_engine.Logger, _clientId, _principal!.UserId, key, decision.ToString());
                codes.Add(ReasonCodes.ToSubAck(decision));
                continue;
            }

            var subscription = new Subscription
            {
                Session = session,
                Key = key,
                Filter = inner,
                ShareName = shareName,
                Qos = filter.QualityOfServiceLevel,
                NoLocal = filter.NoLocal,
                RetainAsPublished = filter.RetainAsPublished,
                RetainHandling = filter.RetainHandling,
                Identifier = packet.SubscriptionIdentifier,
            };
            var existed = session.Subscribe(subscription);
            codes.Add(ReasonCodes.Granted(filter.QualityOfServiceLevel));
            (granted ??= []).Add((subscription, existed));
        }

        // Retained messages are queued before the SUBACK goes out: once the client has its SUBACK, anything
        // published next must come after them. (The writer sends control packets first, so the SUBACK
        // normally still leads; no statement of the specification orders the two.)
        if (granted is not null)
        {
            foreach (var (subscription, existed) in granted)
            {
                // Retain Handling 0: always, 1: only for a new subscription, 2: never [MQTT-3.3.1-9, -10, -11];
                // none for shared subscriptions [MQTT-4.8.2].
                var send = subscription.ShareName is null && subscription.RetainHandling switch
                {
                    MqttRetainHandling.SendAtSubscribe => true,
                    MqttRetainHandling.SendAtSubscribeIfNewSubscriptionOnly => !existed,
                    _ => false,
                };
                if (send)
                {
                    _engine.Router.DeliverRetained(session, subscription);
                }
            }
        }

        if (granted is not null && session.IsPersistent)
        {
            // A granted subscription of a persistent session survives a crash once the client has its SUBACK.
            await _engine.Store.FlushAsync();
        }

        if (granted is not null)
        {
            // In a cluster: the other nodes route this subscription's messages here before the client has its SUBACK.
            await _engine.Cluster.SettledAsync();
        }

        return Send(new MqttSubAckPacket { PacketIdentifier = packet.PacketIdentifier, ReasonCodes = codes });
    }

    PolicyDecision CheckFilter(string filter)
    {
        var limits = _engine.Options.Limits;
        return MqttTopic.IsValidFilter(filter) && filter.Length <= limits.MaxTopicLength && MqttTopic.CountLevels(filter) <= limits.MaxTopicLevels
            ? PolicyDecision.Allow
            : PolicyDecision.TopicInvalid;
    }

    bool HandleUnsubscribe(MqttUnsubscribePacket packet)
    {
        var codes = new List<MqttUnsubscribeReasonCode>(packet.TopicFilters.Count);
        foreach (var filter in packet.TopicFilters)
        {
            codes.Add(_session!.Unsubscribe(filter)
                ? MqttUnsubscribeReasonCode.Success
                : MqttUnsubscribeReasonCode.NoSubscriptionExisted);
        }

        return Send(new MqttUnsubAckPacket { PacketIdentifier = packet.PacketIdentifier, ReasonCodes = codes });
    }

    bool HandleDisconnect(MqttDisconnectPacket packet)
    {
        if (IsV5 && packet.SessionExpiryInterval > 0)
        {
            if (_session!.ExpirySeconds == 0)
            {
                // Setting an expiry at DISCONNECT when CONNECT had none is a protocol error [MQTT-3.14.2-2]; such a
                // DISCONNECT is not valid, so it does not discard the will (checked before the will is cleared).
                return ProtocolError("session expiry set on DISCONNECT after 0 on CONNECT");
            }

            _session.SetExpiry(packet.SessionExpiryInterval);
        }

        // A normal DISCONNECT discards the will [MQTT-3.14.4-3]; v5 0x04 asks for it to be sent.
        if (!(IsV5 && packet.ReasonCode == MqttDisconnectReasonCode.DisconnectWithWillMessage))
        {
            _will = null;
        }

        _closeReason = IsV5 ? $"DISCONNECT 0x{(int)packet.ReasonCode:X2}" : "DISCONNECT";
        _writer.MarkClosing();
        return false;
    }
}
