using Broker.Engine.Admission;
using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Engine.Connections;

/// <summary>CONNECT: identity, will, keep-alive, session, CONNACK [MQTT-3.1, 3.2].</summary>
internal sealed partial class MqttConnection
{
    /// <summary>Reads the first packet within the connect timeout and answers it. False: the connection ends.</summary>
    async Task<bool> ConnectAsync()
    {
        MqttPacket? first;
        using (var timeout = new CancellationTokenSource(_engine.Options.Mqtt.ConnectTimeout))
        {
            try
            {
                first = await ReadFirstPacketAsync(timeout.Token);
            }
            catch (OperationCanceledException)
            {
                Reject("no CONNECT within Broker:Mqtt:ConnectTimeout");
                return false;
            }
            catch (UnsupportedProtocolException ex)
            {
                // [MQTT-3.1.2-2]: answer with "unacceptable protocol version" and close. Sent as v3.1.1,
                // which every client can read.
                _version = MqttProtocolVersion.V311;
                await _writer.WriteDirectAsync(new MqttConnAckPacket { ReturnCode = MqttConnectReturnCode.ConnectionRefusedUnacceptableProtocolVersion });
                Reject($"unsupported protocol: {ex.Message}");
                return false;
            }
            catch (MalformedPacketException ex) when (ex.Message.Contains("3.1.3-7", StringComparison.Ordinal))
            {
                // v3.1.1: an empty client id needs clean session = 1 [MQTT-3.1.3-7, -8].
                await RefuseAsync(MqttConnectReasonCode.ClientIdentifierNotValid, "empty client id with clean session = 0", "", null);
                return false;
            }
            catch (MalformedPacketException ex)
            {
                _engine.Counters.MalformedPacket();
                Reject($"malformed CONNECT: {ex.Message}");
                return false;
            }
            catch (PacketTooLargeException ex)
            {
                _engine.Counters.OversizedPacket();
                Reject($"CONNECT of {ex.Size} bytes above Broker:Mqtt:MaxPacketSize");
                return false;
            }
        }

        if (first is not MqttConnectPacket connect)
        {
            return false;
        }

        return await HandleConnectAsync(connect);
    }

    async Task<bool> HandleConnectAsync(MqttConnectPacket connect)
    {
        var options = _engine.Options;

        var clientId = connect.ClientId ?? "";
        var assigned = false;
        if (clientId.Length == 0)
        {
            if (!IsV5 && (_version == MqttProtocolVersion.V310 || !connect.CleanSession))
            {
                await RefuseAsync(MqttConnectReasonCode.ClientIdentifierNotValid, "empty client id", clientId, connect.Username);
                return false;
            }

            // v3.1.1 with clean session [MQTT-3.1.3-6] and v5 [MQTT-3.1.3-6]: the server assigns one.
            clientId = "auto-" + Guid.NewGuid().ToString("N");
            assigned = true;
        }

        var request = new ConnectRequest
        {
            ClientId = clientId,
            ClientIdAssigned = assigned,
            UserName = connect.Username,
            Password = connect.Password,
            ProtocolVersion = _version,
            RemoteEndPoint = _meta.RemoteEndPoint,
        };

        // Off the socket thread: a password hash takes milliseconds on purpose, and with Broker:Mqtt:InlineIo
        // this thread serves other connections' packets. Failed logins are throttled around it (Admission/).
        AuthenticationResult auth;
        try
        {
            auth = await _engine.Logins.CheckAsync(request, SourceAddress.Of(_meta.RemoteEndPoint),
                () => Task.Run(() => _engine.Policy.AuthenticateAsync(request, CancellationToken.None).AsTask()));
        }
        catch (Exception ex)
        {
            // The policy could not decide (e.g. the cluster's store is out of reach while it checks the client id's owner).
            EngineLog.ConnectCheckFailed(_engine.ConnectionLogger, clientId, ex.Message);
            await RefuseAsync(MqttConnectReasonCode.ServerUnavailable, "the broker cannot check this login now", clientId, connect.Username);
            return false;
        }

        if (!auth.Succeeded)
        {
            await RefuseAsync(auth.ReasonCode, auth.ReasonText ?? "refused", clientId, connect.Username);
            return false;
        }

        var principal = auth.Principal!;
        if (connect.WillFlag && !PrepareWill(connect, principal, out var willRefusal))
        {
            await RefuseAsync(willRefusal, "will message not allowed", clientId, connect.Username);
            return false;
        }

        // The policy's limits for this principal (devices at once, publish rate, quotas); held until the connection closes.
        OpenedLimits opened;
        try
        {
            opened = await _engine.Policy.OpenLimitsAsync(principal);
        }
        catch (Exception ex)
        {
            // In a cluster the user's devices are counted in the shared store, which may be out of reach.
            EngineLog.ConnectCheckFailed(_engine.ConnectionLogger, clientId, ex.Message);
            await RefuseAsync(MqttConnectReasonCode.ServerUnavailable, "the broker cannot count this user's devices now", clientId, connect.Username);
            return false;
        }

        _limits = opened.Limits;
        if (opened.QuotaExceeded)
        {
            await RefuseAsync(MqttConnectReasonCode.QuotaExceeded, "the user has as many devices connected as its quota allows (MaxDevices)", clientId, connect.Username);
            return false;
        }

        _keepAliveSeconds = connect.KeepAlivePeriod;
        ushort serverKeepAlive = 0;
        var cap = options.Mqtt.KeepAliveCap;
        if (cap > 0 && (_keepAliveSeconds == 0 || _keepAliveSeconds > cap))
        {
            if (!IsV5)
            {
                // v3.1.x has no Server Keep Alive: such a client would ping too rarely and be cut off at 1.5 × the cap
                // without knowing why. mosquitto (max_keepalive) refuses it with "identifier rejected"; so do we.
                await RefuseAsync(MqttConnectReasonCode.ClientIdentifierNotValid, $"keep-alive {_keepAliveSeconds} s above Broker:Mqtt:ServerKeepAlive ({cap} s)", clientId, connect.Username);
                return false;
            }

            // The client must use the Server Keep Alive we send [MQTT-3.2.2-21, MQTT-3.1.2-21]; one asking for less keeps its own [MQTT-3.2.2-22].
            _keepAliveSeconds = cap;
            serverKeepAlive = (ushort)cap;
        }

        // v3.1.1 cannot say how long its session should live: clean session 0 gets the configured default.
        var expiry = IsV5 ? connect.SessionExpiryInterval : connect.CleanSession ? 0u : (uint)Math.Min(uint.MaxValue, options.DefaultSessionExpiry.TotalSeconds);
        var clientReceiveMaximum = IsV5 && connect.ReceiveMaximum > 0 ? connect.ReceiveMaximum : ushort.MaxValue;
        var sendQuota = Math.Min(options.Mqtt.MaxInflightMessages, clientReceiveMaximum);
        var clientMaxPacketSize = IsV5 && connect.MaximumPacketSize > 0 ? connect.MaximumPacketSize : uint.MaxValue;

        // Aliases towards the client: at most what it accepts [MQTT-3.3.2-11], and at most our own Topic Alias Maximum,
        // which bounds the topics a connection remembers (a client may announce 65,535).
        _writer.SetClientLimits(clientMaxPacketSize, IsV5 ? Math.Min(connect.TopicAliasMaximum, options.Mqtt.TopicAliasMaximum) : 0);
        _clientId = clientId;
        _principal = principal;

        await TakeOverPreviousAsync(clientId);

        // In a cluster the session may live on another node or only in the shared store: claim it first.
        try
        {
            if (await _engine.Cluster.ClaimAsync(principal, connect.CleanSession, expiry, CancellationToken.None) is { } claimed)
            {
                _engine.Sessions.Adopt(clientId, claimed);
            }
        }
        catch (Exception ex)
        {
            EngineLog.ConnectCheckFailed(_engine.ConnectionLogger, clientId, ex.Message);
            await RefuseAsync(MqttConnectReasonCode.ServerUnavailable, "the cluster's shared state is out of reach", clientId, connect.Username);
            return false;
        }

        var (session, present) = _engine.Sessions.Open(this, principal, connect.CleanSession, expiry, sendQuota);
        var dropped = session.TakeDroppedCount();
        _writer.Enqueue(new MqttConnAckPacket
        {
            // Contract §6: what the offline queue's limits dropped since the client was last here.
            UserProperties = dropped > 0 && IsV5 ? [new MqttUserProperty(DroppedProperty, System.Text.Encoding.UTF8.GetBytes(dropped.ToString(System.Globalization.CultureInfo.InvariantCulture)))] : null,
            ReturnCode = MqttConnectReturnCode.ConnectionAccepted,
            ReasonCode = MqttConnectReasonCode.Success,
            IsSessionPresent = present,
            AssignedClientIdentifier = assigned && IsV5 ? clientId : null,
            ReceiveMaximum = (ushort)options.Mqtt.ReceiveMaximum,
            MaximumPacketSize = (uint)options.Mqtt.MaxPacketSize,
            TopicAliasMaximum = (ushort)options.Mqtt.TopicAliasMaximum,
            MaximumQoS = MqttQualityOfServiceLevel.ExactlyOnce,
            RetainAvailable = true,
            WildcardSubscriptionAvailable = true,
            SharedSubscriptionAvailable = true,
            SubscriptionIdentifiersAvailable = true,
            ServerKeepAlive = serverKeepAlive,
        });
        _receiveQuotaUsed = IsV5 ? session.InboundQos2Count : 0; // QoS 2 exchanges this session still has open count [MQTT-4.9.0-3]
        _session = session; // after the CONNACK is queued: a DISCONNECT may follow it, never precede it
        if (session.IsPersistent)
        {
            _engine.Mailbox.DeliverTo(session);

            // "Session present" is a promise: the session (and the client id binding) must be on disk first.
            await _engine.Store.FlushAsync();
        }

        // In a cluster: messages for this session are routed to this node before the client has its CONNACK.
        await _engine.Cluster.SettledAsync();

        if (_engine.ConnectionObserver is { } observer)
        {
            _connectionNumber = _engine.NextConnectionNumber();
            try
            {
                observer.ClientConnected(principal, _connectionNumber);
            }
            catch (Exception ex)
            {
                EngineLog.ObserverFailed(_engine.Logger, "connection", ex);
            }
        }

        if (_will is not null)
        {
            // Published when the delay passes or the session ends, whichever comes first [MQTT-3.1.3-9].
            _engine.Cluster.WillArmed(principal, _will, Math.Min(_willDelaySeconds, expiry), _willExpirySeconds);
            _willArmed = true;
        }

        _engine.Counters.ConnectionOpened();
        EngineLog.ClientConnected(_engine.ConnectionLogger, clientId, principal.UserId, RemoteEndPoint, VersionName(_version), _meta.Transport, present);
        return true;
    }

    /// <summary>
    /// Takeover [MQTT-3.1.4-3]: the connection holding this client id is closed, and the packets it had
    /// already received (acks sent just before the client reconnected) are processed, before the new
    /// connection takes the session, so nothing acknowledged is sent again.
    /// </summary>
    async Task TakeOverPreviousAsync(string clientId)
    {
        if (_engine.Sessions.Get(clientId)?.Connection is { } previous && !ReferenceEquals(previous, this))
        {
            previous.TakeOver();
            await Task.WhenAny(previous.Closed, Task.Delay(TimeSpan.FromSeconds(2)));
        }
    }

    /// <summary>A will is checked like a publish when the client connects, so it cannot reach a topic its client could not.</summary>
    bool PrepareWill(MqttConnectPacket connect, ClientPrincipal principal, out MqttConnectReasonCode refusal)
    {
        refusal = MqttConnectReasonCode.Success;
        var topic = connect.WillTopic ?? "";
        var decision = CheckTopicName(topic);
        if (decision == PolicyDecision.Allow)
        {
            decision = _engine.Policy.AuthorizePublish(principal, topic);
        }

        if (decision != PolicyDecision.Allow)
        {
            EngineLog.WillRefused(_engine.Logger, principal.ClientId, principal.UserId, topic, decision.ToString());
            refusal = decision == PolicyDecision.TopicInvalid ? MqttConnectReasonCode.TopicNameInvalid : MqttConnectReasonCode.NotAuthorized;
            return false;
        }

        _will = new BrokerMessage
        {
            Topic = topic,
            Payload = connect.WillMessage ?? [],
            Qos = connect.WillQoS,
            Retain = connect.WillRetain,
            ContentType = connect.WillContentType,
            ResponseTopic = connect.WillResponseTopic,
            CorrelationData = connect.WillCorrelationData,
            PayloadFormat = connect.WillPayloadFormatIndicator,
            // The will's id for the policy is given now, once; it is routed under a fresh engine id when it goes out.
            UserProperties = _engine.Policy.TransformUserProperties(principal, connect.WillUserProperties, _engine.Ids.Next()),
            SenderClientId = principal.ClientId,
            SenderUserId = principal.UserId,
        };
        _willDelaySeconds = IsV5 ? connect.WillDelayInterval : 0;
        _willExpirySeconds = IsV5 ? connect.WillMessageExpiryInterval : 0;
        return true;
    }

    /// <summary>The CONNACK user property that counts the messages dropped from a persistent session's queue while its client was away.</summary>
    public const string DroppedProperty = "ims-dropped";

    BrokerMessage? _will;
    bool _willArmed; // the cluster holds a copy of the will (IClusterLink.WillArmed)
    uint _willDelaySeconds;
    uint _willExpirySeconds;

    /// <summary>
    /// The Will Message Expiry Interval is "sent as the Publication Expiry Interval when the Server publishes
    /// the Will Message" (v5 §3.1.3.2.4): the will's lifetime starts at publication, not at CONNECT.
    /// </summary>
    internal static BrokerMessage WillAsPublished(BrokerMessage will, uint expirySeconds, long nowUnixMs) =>
        expirySeconds == 0 ? will : will.With(expiresAtUnixMs: nowUnixMs + expirySeconds * 1000L);

    /// <summary>
    /// The will goes out on any close but a normal DISCONNECT [MQTT-3.1.2-8, -10]; a v5 Will Delay
    /// holds it until the delay passes or the session ends [MQTT-3.1.3-9]. After a takeover the
    /// session lives on in the new connection, so a delayed will is cancelled.
    /// </summary>
    void ScheduleWill(bool takenOver)
    {
        var will = _will!;
        var session = _session!;
        var now = _engine.NowUnixMs;
        if (_willDelaySeconds == 0 || session.IsDiscarded)
        {
            _ = _engine.Router.PublishWillAsync(WillAsPublished(will, _willExpirySeconds, now), _principal!);
            _engine.Cluster.WillDisarmed(_principal!.ClientId);
        }
        else if (!takenOver)
        {
            // Delayed: the cluster keeps its copy until the delay passes here (SessionManager.Sweep) or the session resumes.
            session.PendingWill = (will, _principal!, now + _willDelaySeconds * 1000L, _willExpirySeconds);
        }
    }

    async Task RefuseAsync(MqttConnectReasonCode reason, string text, string clientId, string? userName)
    {
        _engine.Counters.ConnectionRefused();
        EngineLog.ConnectRefused(_engine.Logger, clientId, userName, RemoteEndPoint, $"0x{(int)reason:X2}", text);
        // [MQTT-3.2.2-4] (v3.1.1) / [MQTT-3.2.2-6] (v5): a refusal has session present = 0, then the connection closes.
        await _writer.WriteDirectAsync(new MqttConnAckPacket
        {
            ReasonCode = reason,
            ReturnCode = ReasonCodes.ToV3(reason),
            IsSessionPresent = false,
            MaximumQoS = MqttQualityOfServiceLevel.ExactlyOnce,
            RetainAvailable = true,
            WildcardSubscriptionAvailable = true,
            SharedSubscriptionAvailable = true,
            SubscriptionIdentifiersAvailable = true,
        });
    }

    void Reject(string reason)
    {
        _engine.Counters.ConnectionRefused();
        EngineLog.ConnectionRejected(_engine.ConnectionLogger, _meta.ConnectionId, RemoteEndPoint, reason);
    }

    static string VersionName(MqttProtocolVersion version) => version switch
    {
        MqttProtocolVersion.V500 => "5.0",
        MqttProtocolVersion.V311 => "3.1.1",
        _ => "3.1",
    };
}
