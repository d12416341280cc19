using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Broker.Ims.Acl;
using Broker.Ims.Blocks;
using Broker.Ims.Identity;
using Broker.Ims.Limits;
using Broker.Ims.Options;
using Broker.Ims.Presence;
using Broker.Ims.Receipts;
using Broker.Ims.Stamping;
using Broker.Ims.Topics;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Ims;

/// <summary>
/// The IM conventions on the engine's seams: identity at CONNECT (§1), topic grammar (§2), the ACL
/// (§3) on publish, subscribe and every delivery, sender stamps (§4), P2P routing (§5), presence (§10,
/// following connections), message ids and delivery receipts (§11, following acknowledgements).
/// With <c>Broker:Conventions:Enabled = false</c> only authentication and configured ACL rules
/// remain: a plain MQTT broker (§8).
/// </summary>
public sealed class ImsPolicy : IBrokerPolicy, IConnectionObserver, IDeliveryObserver
{
    readonly ImsOptions _options;
    readonly KnownUsers _users;
    readonly Groups.IGroupDirectory _groups;
    readonly PasswordVerifier _passwords;
    readonly IClientIdBindings _store;
    readonly TopicRules _topics;
    readonly AclRuleSet _acl;
    readonly bool _conventions;
    readonly JwtAuthenticator? _jwt;
    readonly string[] _sysRoles;
    readonly bool _sysOpen;
    readonly BrokerVoice _voice;
    readonly PresenceTracker? _presence;
    readonly Action<string>? _deviceGone;
    readonly DeliveryReceipts? _receipts;
    readonly BlockLists _blocks;
    readonly UserLimits _limits;
    readonly string[] _parents;

    /// <param name="time">The clock tokens' exp and nbf are checked against, and presence and receipts read (tests swap it).</param>
    /// <param name="blocks">Block lists (§12); the host shares its instance with the admin API.</param>
    /// <param name="limits">Per-user limits (§13); made from <paramref name="options"/> when not given.</param>
    public ImsPolicy(ImsOptions options, IUserDirectory users, Groups.IGroupDirectory groups, PasswordVerifier passwords, IClientIdBindings store, TimeProvider? time = null,
        ILoggerFactory? loggerFactory = null, BlockLists? blocks = null, UserLimits? limits = null)
    {
        _blocks = blocks ?? new BlockLists((IPolicyRecords)store); // tests: one store keeps both
        _limits = limits ?? new UserLimits(options);
        _parents = [.. options.ParentTopics];
        _options = options;
        _users = new KnownUsers(users);
        _groups = groups;
        _passwords = passwords;
        _store = store;
        _conventions = options.Conventions.Enabled;
        _topics = new TopicRules(options.ParentTopics);
        _acl = AclRuleSet.Compile(options.Acl, _users, groups, options.ParentTopics);
        _jwt = options.Jwt.Enabled ? new JwtAuthenticator(options.Jwt, time) : null;
        _sysRoles = options.Sys.Roles.Count == 0 ? ImsOptionsDefaults.SysRoles : [.. options.Sys.Roles];

        // Plain mode with no rules is mosquitto without an acl_file: $SYS is open to everyone there too.
        _sysOpen = !_conventions && _acl.Count == 0;

        var clock = time ?? TimeProvider.System;
        _voice = new BrokerVoice((loggerFactory ?? NullLoggerFactory.Instance).CreateLogger("Broker.Ims"));
        _presence = options.Presence.IsEnabled(_conventions) && options.ParentTopics.Count > 0
            ? new PresenceTracker(options.ParentTopics[0], _voice, _limits.Devices, clock)
            : null;
        _deviceGone = _presence is null ? null : _presence.Changed;
        _receipts = _conventions ? new DeliveryReceipts(_voice, clock) : null;
    }

    public async ValueTask<AuthenticationResult> AuthenticateAsync(ConnectRequest request, CancellationToken cancellationToken)
    {
        // The password is a JWT: the token, not the user store, says who this is.
        var token = _jwt is not null && request.Password is { } password && JwtAuthenticator.LooksLikeJwt(password)
            ? await _jwt.ValidateAsync(password, request.UserName).ConfigureAwait(false)
            : (JwtIdentity?)null;
        return await AuthenticateAsync(request, token, cancellationToken).ConfigureAwait(false);
    }

    async ValueTask<AuthenticationResult> AuthenticateAsync(ConnectRequest request, JwtIdentity? token, CancellationToken cancellationToken)
    {
        var deviceId = request.ClientId;
        if (_conventions)
        {
            // §1: the client id carries the group, so the server cannot make one up.
            var problem = request.ClientIdAssigned
                ? "the client id is empty (it must be <GroupId>@@@<DeviceId>)"
                : Identifiers.ParseClientId(request.ClientId, out var groupId, out deviceId)
                  ?? (_options.GroupIds.Contains(groupId) ? null : $"the group id \"{groupId}\" is not registered (Broker:GroupIds)");
            if (problem is not null)
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.ClientIdentifierNotValid, problem);
            }
        }

        string userId;
        string role;
        if (token is { } jwt)
        {
            if (!jwt.Succeeded)
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.BadUserNameOrPassword, "JWT refused: " + jwt.Problem);
            }

            // Ids are unique across users and groups: a token must not make anyone a group.
            if (_groups.Exists(jwt.UserId))
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.BadUserNameOrPassword, "JWT refused: the token's sub claim names a chat group");
            }

            userId = jwt.UserId!;
            role = jwt.Role!;
            _users.Vouch(userId);
        }
        else if (string.IsNullOrEmpty(request.UserName))
        {
            if (!_options.AllowAnonymous)
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.NotAuthorized, "anonymous connections are off (Broker:AllowAnonymous)");
            }

            // The device id stands in for the user id, so it must not name someone who has an account.
            userId = deviceId;
            role = Roles.User;
            if (_users.Exists(userId) || Identifiers.IsReserved(userId) || (_conventions && !Identifiers.IsUserId(userId)))
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.NotAuthorized, "an anonymous device id must not name a registered user and must be a valid user id");
            }
        }
        else
        {
            if (!Identifiers.IsUserId(request.UserName))
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.BadUserNameOrPassword, "the user name is not a valid user id");
            }

            var check = _users.TryGet(request.UserName, out var account)
                ? await _passwords.VerifyAsync(account, request.Password ?? [], cancellationToken).ConfigureAwait(false)
                : PasswordCheck.Invalid;
            if (check == PasswordCheck.Busy)
            {
                // Says nothing about the password; the client may try again later (v5 0x89 Server busy, v3.1.1 0x03).
                return AuthenticationResult.Fail(MqttConnectReasonCode.ServerBusy, "too many password checks at once (Broker:Limits:MaxConcurrentPasswordChecks)");
            }

            if (check != PasswordCheck.Valid)
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.BadUserNameOrPassword, "unknown user or wrong password");
            }

            userId = account.Name;
            role = account.Role;
        }

        if (_conventions)
        {
            // §1: a client id belongs to the first user that connected with it; nobody takes over another's device.
            var owner = await _store.BindClientOwnerAsync(request.ClientId, userId);
            if (owner != userId)
            {
                return AuthenticationResult.Fail(MqttConnectReasonCode.NotAuthorized, $"the client id belongs to another user");
            }
        }

        return AuthenticationResult.Success(new ClientPrincipal(request.ClientId, userId, role));
    }

    public PolicyDecision AuthorizePublish(ClientPrincipal sender, string topic)
    {
        if (_conventions && _topics.Check(topic) is not null)
        {
            return PolicyDecision.TopicInvalid;
        }

        return Acl(sender, topic, AclAccess.Publish, isFilter: false);
    }

    public PolicyDecision AuthorizeSubscribe(ClientPrincipal subscriber, string filter)
    {
        if (IsSys(filter))
        {
            return MayReadSys(subscriber) ? PolicyDecision.Allow : PolicyDecision.NotAuthorized;
        }

        if (_conventions && _topics.Check(filter) is not null)
        {
            return PolicyDecision.TopicInvalid;
        }

        return Acl(subscriber, filter, AclAccess.Subscribe, isFilter: true);
    }

    public bool CanRead(ClientPrincipal recipient, BrokerMessage message)
    {
        var topic = message.Topic;
        if (IsSys(topic))
        {
            return MayReadSys(recipient);
        }

        if (Acl(recipient, topic, AclAccess.Receive, isFilter: false) != PolicyDecision.Allow)
        {
            return false;
        }

        if (_blocks.IsEmpty || !IsBlocked(recipient, message))
        {
            return true;
        }

        _blocks.CountWithheld(recipient.ClientId, topic, message.SenderUserId);
        return false;
    }

    /// <summary>
    /// §12: the recipient blocked the sender (inbox, P2P, group, feed: anything the sender published), or the
    /// message is on the feed (or presence) of a user who blocked the recipient: <c>P/o</c> and <c>P/o/...</c>
    /// outside <c>Inbox</c>, whoever published it (the broker publishes presence).
    /// </summary>
    bool IsBlocked(ClientPrincipal recipient, BrokerMessage message)
    {
        var me = recipient.UserId;
        if (message.SenderUserId is { } sender && sender != me && _blocks.Blocks(me, sender))
        {
            return true;
        }

        return _conventions && FeedOwner(message.Topic) is { IsEmpty: false } owner && !owner.SequenceEqual(me) && _blocks.Blocks(owner, me);
    }

    /// <summary>The second level of <c>P/o</c> or <c>P/o/...</c> outside <c>P/o/Inbox</c>; empty when the topic is no user's feed.</summary>
    ReadOnlySpan<char> FeedOwner(string topic)
    {
        var span = topic.AsSpan();
        var slash = span.IndexOf('/');
        if (slash <= 0 || !IsParent(span[..slash]))
        {
            return [];
        }

        var rest = span[(slash + 1)..];
        var next = rest.IndexOf('/');
        if (next < 0)
        {
            return rest;
        }

        var third = rest[(next + 1)..];
        var end = third.IndexOf('/');
        return (end < 0 ? third : third[..end]).SequenceEqual("Inbox") ? [] : rest[..next];
    }

    bool IsParent(ReadOnlySpan<char> level)
    {
        foreach (var parent in _parents)
        {
            if (level.SequenceEqual(parent))
            {
                return true;
            }
        }

        return false;
    }

    public long ReadRulesVersion => _blocks.Version;

    /// <summary>The command space of §12: <c>$IMS/block/&lt;user&gt;</c> and <c>$IMS/unblock/&lt;user&gt;</c>.</summary>
    public const string CommandSpace = "$IMS";

    public bool TryHandleCommand(ClientPrincipal sender, string topic, ReadOnlyMemory<byte> payload, out CommandResult result)
    {
        result = default;
        if (!_conventions || !(topic.StartsWith(CommandSpace + "/", StringComparison.Ordinal) || topic == CommandSpace))
        {
            return false; // plain mode: $IMS is an ordinary topic
        }

        var parts = topic.Split('/');
        var block = parts.Length == 3 && parts[1] == "block";
        if (parts.Length != 3 || !(block || parts[1] == "unblock") || BlockLists.TargetProblem(sender.UserId, parts[2], _groups) is not null)
        {
            result = new CommandResult(PolicyDecision.TopicInvalid); // v5 0x90: no such command, or not a user one may block
            return true;
        }

        result = new CommandResult(PolicyDecision.Allow, _blocks.SetAsync(sender.UserId, parts[2], block));
        return true;
    }

    /// <summary>§13 limits, and the device in the user's device list (quota and presence; every node of a cluster).</summary>
    public ValueTask<OpenedLimits> OpenLimitsAsync(ClientPrincipal principal) => _limits.OpenAsync(principal, listDevice: _presence is not null, _deviceGone);

    /// <summary><c>$SYS/...</c> is read-only, and readable by the roles of <c>Broker:Sys:Roles</c>.</summary>
    bool MayReadSys(ClientPrincipal principal) => _sysOpen || Array.IndexOf(_sysRoles, principal.Role) >= 0;

    public string? ResolveDirectRoute(string topic) => _conventions ? _topics.DirectTarget(topic) : null;

    public List<MqttUserProperty>? TransformUserProperties(ClientPrincipal sender, List<MqttUserProperty>? userProperties, long messageId)
    {
        if (!_conventions)
        {
            return userProperties;
        }

        // The stamp is made at the connection's first publish and kept for the others: an idle connection does not carry one.
        if (sender.PolicyState is not ValueTuple<MqttUserProperty, MqttUserProperty> stamp)
        {
            stamp = SenderStamp.For(sender.UserId, sender.ClientId);
            sender.PolicyState = stamp;
        }

        return SenderStamp.Apply(stamp, userProperties, messageId);
    }

    // ---- §10 presence: the engine's connection events -----------------------------------------------

    public Task BrokerStartedAsync(IBrokerPublisher broker, CancellationToken cancellationToken)
    {
        _voice.Attach(broker);
        _presence?.CorrectAfterRestart(_options.ParentTopics);
        return _voice.DrainAsync(cancellationToken); // corrected (and durable) before the first client connects
    }

    public void ClientConnected(ClientPrincipal client, long connection) => _presence?.Changed(client.UserId);

    /// <summary>Presence hears a close when the device leaves the user's device list (<see cref="OpenLimitsAsync"/>); a takeover leaves it there.</summary>
    public void ClientDisconnected(ClientPrincipal client, long connection, bool takenOver)
    {
    }

    public async Task BrokerStoppingAsync(CancellationToken cancellationToken)
    {
        using var bound = CancellationTokenSource.CreateLinkedTokenSource(cancellationToken);
        bound.CancelAfter(TimeSpan.FromSeconds(10));
        if (_presence is not null)
        {
            try
            {
                await _presence.StopAsync().WaitAsync(bound.Token).ConfigureAwait(false);
            }
            catch (OperationCanceledException)
            {
                // A cluster's shared store out of reach: the node that sweeps this one publishes these users.
            }
        }

        await _voice.DrainAsync(bound.Token).ConfigureAwait(false);
        _voice.Detach();
    }

    // ---- §11 delivery receipts: the engine's acknowledgements ---------------------------------------

    public bool ObservesAcknowledgements(BrokerMessage message) => _receipts is not null && DeliveryReceipts.Observes(message);

    public void Acknowledged(BrokerMessage message, ClientPrincipal recipient) => _receipts?.Acknowledged(message, recipient);

    /// <summary>Plain mode with no rules is mosquitto without an acl_file: everything allowed.</summary>
    PolicyDecision Acl(ClientPrincipal principal, string topic, AclAccess access, bool isFilter) =>
        _acl.Count == 0 || _acl.IsAllowed(principal, topic, access, isFilter) ? PolicyDecision.Allow : PolicyDecision.NotAuthorized;

    static bool IsSys(string topic) => topic.StartsWith("$SYS/", StringComparison.Ordinal) || topic == "$SYS";
}
