namespace Broker.Ims.Options;

/// <summary>
/// The IM conventions' settings, bound from the <c>Broker</c> section (contract §9). Lists start
/// empty because configuration binding appends to a list; <see cref="ImsOptionsDefaults"/> fills
/// the documented defaults in when configuration leaves one empty.
/// </summary>
public sealed class ImsOptions
{
    public ConventionsOptions Conventions { get; set; } = new();

    /// <summary>First topic level every topic must start with (default ["IMS"]).</summary>
    public List<string> ParentTopics { get; set; } = [];

    /// <summary>Registered group ids, the part of a client id before "@@@" (default ["GID_IMS"]).</summary>
    public List<string> GroupIds { get; set; } = [];

    /// <summary>Off by default: every connection names a user and proves it.</summary>
    public bool AllowAnonymous { get; set; }

    public List<UserOptions> Users { get; set; } = [];

    public List<GroupOptions> Groups { get; set; } = [];

    /// <summary>ACL rules, first match wins, no match denies. Empty: the rules of contract §3 with conventions on; allow all in plain mode.</summary>
    public List<AclRuleOptions> Acl { get; set; } = [];

    /// <summary>How long a P2P message to a client id that has no session yet is kept.</summary>
    public TimeSpan OfflineP2PTtl { get; set; } = TimeSpan.FromDays(3);

    /// <summary>JWT authentication (off by default).</summary>
    public JwtOptions Jwt { get; set; } = new();

    /// <summary>Read access to <c>$SYS/...</c>.</summary>
    public SysOptions Sys { get; set; } = new();

    /// <summary>The broker-kept presence of every user (contract §10).</summary>
    public PresenceOptions Presence { get; set; } = new();

    /// <summary>Per-user limits by role (contract §13), <c>Broker:Limits:Roles:&lt;role&gt;</c>; the engine's broker-wide limits share the section.</summary>
    public ImsLimitsOptions Limits { get; set; } = new();
}

public sealed class ImsLimitsOptions
{
    public Dictionary<string, RoleLimitsOptions> Roles { get; set; } = new(StringComparer.OrdinalIgnoreCase);
}

/// <summary>
/// Limits per user, over all of the user's devices together; a key left out takes its default (for role
/// <c>user</c> with conventions on: <see cref="UserDefaults"/>; otherwise unlimited). 0 = no limit.
/// </summary>
public sealed class RoleLimitsOptions
{
    /// <summary>Publishes per second (token bucket refill).</summary>
    public double? PublishRate { get; set; }

    /// <summary>Publishes in a burst (the bucket's size).</summary>
    public int? PublishBurst { get; set; }

    /// <summary>Payload bytes per second (a bucket of one second's worth).</summary>
    public long? PublishBytesRate { get; set; }

    /// <summary>Client ids connected at once.</summary>
    public int? MaxDevices { get; set; }

    /// <summary>Retained messages owned (published the current retained message of a topic).</summary>
    public int? MaxRetained { get; set; }

    /// <summary>Subscriptions per session.</summary>
    public int? MaxSubscriptions { get; set; }

    /// <summary>How long a connection may be kept waiting over the publish rate before it is disconnected.</summary>
    public double? RateGraceSeconds { get; set; }

    /// <summary>Contract §13's defaults for role <c>user</c>.</summary>
    public static readonly RoleLimitsOptions UserDefaults = new()
    {
        PublishRate = 20,
        PublishBurst = 100,
        PublishBytesRate = 256 * 1024,
        MaxDevices = 20,
        MaxRetained = 1000,
        MaxSubscriptions = 200,
        RateGraceSeconds = 10,
    };
}

public sealed class PresenceOptions
{
    /// <summary>
    /// <c>Broker:Presence:Enabled</c>: the broker keeps <c>P/u/Presence</c> (contract §10). Unset: on when the
    /// conventions are on, off in plain mode; true in plain mode is a configuration error.
    /// </summary>
    public bool? Enabled { get; set; }

    public bool IsEnabled(bool conventions) => Enabled ?? conventions;
}

public sealed class ConventionsOptions
{
    /// <summary>False turns the broker into a plain MQTT broker (contract §8).</summary>
    public bool Enabled { get; set; } = true;
}

public sealed class UserOptions
{
    public string Name { get; set; } = "";

    /// <summary>Made by <c>dotnet run --project src/Broker -- hash-password</c>; never a plain password.</summary>
    public string PasswordHash { get; set; } = "";

    public string Role { get; set; } = Roles.User;
}

public sealed class GroupOptions
{
    public string Id { get; set; } = "";

    public List<string> Members { get; set; } = [];
}

/// <summary>One ACL line, in the spirit of mosquitto's <c>pattern</c>: <c>{ "Topic": "%p/%u/#", "Access": "publish" }</c>.</summary>
public sealed class AclRuleOptions
{
    /// <summary>Levels split by '/': literals, '+' (one level), '#' (zero or more levels, anywhere), and the tokens of <see cref="Acl.AclPattern"/>.</summary>
    public string Topic { get; set; } = "";

    /// <summary>publish, subscribe, receive, read (= subscribe + receive), write (= publish), all.</summary>
    public string Access { get; set; } = "all";

    /// <summary>allow or deny.</summary>
    public string Permission { get; set; } = "allow";

    /// <summary>Roles the rule applies to; empty for everyone.</summary>
    public List<string> Roles { get; set; } = [];
}

public static class Roles
{
    public const string User = "user";
    public const string Service = "service";
    public const string Admin = "admin";

    public static bool IsKnown(string role) => role is User or Service or Admin;
}
