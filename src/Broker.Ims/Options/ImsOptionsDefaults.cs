namespace Broker.Ims.Options;

/// <summary>The defaults a fresh install gets (contract §9), applied where configuration says nothing.</summary>
public static class ImsOptionsDefaults
{
    public static readonly string[] ParentTopics = ["IMS"];

    public static readonly string[] GroupIds = ["GID_IMS"];

    /// <summary>Roles that may read <c>$SYS/...</c>.</summary>
    public static readonly string[] SysRoles = [Roles.Admin, Roles.Service];

    /// <summary>
    /// Contract §3 as data. First match wins; no match denies. Tokens: %p a parent topic, %u the
    /// user, %c the client id, %U any user, %m a group the user is a member of, %g any group.
    /// appsettings.json carries the same list so operators see what they may change.
    /// </summary>
    public static IReadOnlyList<AclRuleOptions> AclRules { get; } =
    [
        Rule("%p/+/Presence", "publish", "deny"),       // presence: only the broker publishes it (contract §10), the user included
        Rule("%p/+/Inbox/Receipt/Delivered/#", "publish", "deny"), // delivery receipts: only the broker (§11); services included
        Rule("%p/p2p/+", "publish"),                    // point to point: anyone may send to a device
        Rule("%p/p2p/%c", "receive"),                   // ... which receives it without subscribing
        Rule("%p/p2p/#", "all", "deny"),                // nobody subscribes to P2P topics
        Rule("%p/#", "all", roles: Roles.Service),      // backends, bots, assistants: anywhere
        Rule("%p/System/#", "publish", roles: Roles.Admin),
        Rule("%p/System/#", "read"),                    // broadcasts: everyone reads
        Rule("%p/System/#", "all", "deny"),
        Rule("%p/%u/Inbox/#", "read"),                  // own inbox, all devices
        Rule("%p/%U/Inbox/#/%u", "publish"),            // anyone's inbox, signed with the sender's id
        Rule("%p/+/Inbox/#", "all", "deny"),            // nobody else touches an inbox
        Rule("%p/%m/%u", "publish"),                    // group chat, signed
        Rule("%p/%m/#", "read"),                        // members read the group
        Rule("%p/%g/#", "all", "deny"),                 // non-members nothing
        Rule("%p/%u/#", "publish"),                     // own feed
        Rule("%p/%U/#", "read"),                        // anyone's feed
    ];

    public static void Apply(ImsOptions options)
    {
        if (options.ParentTopics.Count == 0)
        {
            options.ParentTopics.AddRange(ParentTopics);
        }

        if (options.GroupIds.Count == 0)
        {
            options.GroupIds.AddRange(GroupIds);
        }

        if (options.Sys.Roles.Count == 0)
        {
            options.Sys.Roles.AddRange(SysRoles);
        }

        if (options.Acl.Count == 0 && options.Conventions.Enabled)
        {
            options.Acl.AddRange(AclRules);
        }
    }

    static AclRuleOptions Rule(string topic, string access, string permission = "allow", string? roles = null) => new()
    {
        Topic = topic,
        Access = access,
        Permission = permission,
        Roles = roles is null ? [] : [roles],
    };
}
