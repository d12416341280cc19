using Broker.Engine.Policy;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Ims.Acl;

/// <summary>
/// The ACL: an ordered list of compiled rules, first match wins, no match denies. Evaluation splits
/// the topic into level ranges on the stack and walks the patterns; it allocates nothing.
/// Filters (subscribe) are matched with one more rule: a wildcard level of the filter is matched only
/// by a wildcard level of the pattern, never by a literal or a token, so "IMS/+/Inbox/#" is not
/// "a few inboxes" but "every inbox" and only a rule that grants every inbox allows it.
/// </summary>
public sealed class AclRuleSet
{
    const int StackLevels = 64;
    readonly Rule[] _rules;
    readonly IUserDirectory _users;
    readonly IGroupDirectory _groups;
    readonly HashSet<string> _parents;

    AclRuleSet(Rule[] rules, IUserDirectory users, IGroupDirectory groups, IEnumerable<string> parentTopics)
    {
        _rules = rules;
        _users = users;
        _groups = groups;
        _parents = new HashSet<string>(parentTopics, StringComparer.Ordinal);
    }

    public int Count => _rules.Length;

    /// <summary>Compiles configured rules; a bad rule throws with every problem, each naming its configuration key.</summary>
    public static AclRuleSet Compile(IReadOnlyList<AclRuleOptions> rules, IUserDirectory users, IGroupDirectory groups, IEnumerable<string> parentTopics)
    {
        var errors = new List<string>();
        var compiled = new Rule[rules.Count];
        for (var i = 0; i < rules.Count; i++)
        {
            compiled[i] = CompileRule(rules[i], $"Broker:Acl:{i}", errors)!;
        }

        if (errors.Count > 0)
        {
            throw new AclConfigurationException(errors);
        }

        return new AclRuleSet(compiled, users, groups, parentTopics);
    }

    static Rule? CompileRule(AclRuleOptions r, string key, List<string> errors)
    {
        AclPattern? pattern = null;
        try
        {
            pattern = AclPattern.Parse(r.Topic);
        }
        catch (FormatException ex)
        {
            errors.Add($"{key}:Topic \"{r.Topic}\": {ex.Message}");
        }

        if (!AclAccessNames.TryParse(r.Access, out var access))
        {
            errors.Add($"{key}:Access \"{r.Access}\" must be publish, subscribe, receive, read, write or all");
        }

        var permission = r.Permission.ToLowerInvariant();
        if (permission is not "allow" and not "deny")
        {
            errors.Add($"{key}:Permission \"{r.Permission}\" must be allow or deny");
        }

        foreach (var role in r.Roles)
        {
            if (!Roles.IsKnown(role))
            {
                errors.Add($"{key}:Roles \"{role}\" must be user, service or admin");
            }
        }

        return pattern is null ? null : new Rule(pattern, access, permission == "allow", r.Roles.Count == 0 ? null : [.. r.Roles]);
    }

    /// <summary>Decides <paramref name="access"/> on a topic name (publish, receive) or a filter (subscribe).</summary>
    public bool IsAllowed(ClientPrincipal principal, string topic, AclAccess access, bool isFilter)
    {
        var count = topic.AsSpan().Count('/') + 1;
        Span<Range> ranges = count <= StackLevels ? stackalloc Range[StackLevels] : new Range[count];
        ranges = ranges[..topic.AsSpan().Split(ranges, '/')];
        var dollar = topic.Length > 0 && topic[0] == '$';
        foreach (var rule in _rules)
        {
            if ((rule.Access & access) == 0 || (rule.Roles is not null && Array.IndexOf(rule.Roles, principal.Role) < 0))
            {
                continue;
            }

            // As in MQTT, a leading wildcard does not reach '$' topics [MQTT-4.7.2-1].
            var levels = rule.Pattern.Levels;
            if (dollar && levels[0].Kind is AclPattern.LevelKind.Plus or AclPattern.LevelKind.Hash)
            {
                continue;
            }

            if (Match(levels, 0, topic, ranges, 0, principal, isFilter))
            {
                return rule.Allow;
            }
        }

        return false;
    }

    bool Match(AclPattern.Level[] pattern, int i, string topic, ReadOnlySpan<Range> levels, int j, ClientPrincipal principal, bool isFilter)
    {
        while (true)
        {
            if (i == pattern.Length)
            {
                return j == levels.Length;
            }

            var p = pattern[i];
            if (p.Kind == AclPattern.LevelKind.Hash)
            {
                // Zero or more levels, then the rest of the pattern.
                for (var k = j; k <= levels.Length; k++)
                {
                    if (Match(pattern, i + 1, topic, levels, k, principal, isFilter))
                    {
                        return true;
                    }
                }

                return false;
            }

            if (j == levels.Length)
            {
                return false;
            }

            var level = topic.AsSpan(levels[j]);
            if (isFilter && level is "#" or "+")
            {
                // A filter wildcard stands for every value: only a pattern wildcard covers it.
                if (!(level is "+" && p.Kind == AclPattern.LevelKind.Plus))
                {
                    return false;
                }
            }
            else if (!LevelMatches(p, level, principal))
            {
                return false;
            }

            i++;
            j++;
        }
    }

    bool LevelMatches(AclPattern.Level p, ReadOnlySpan<char> level, ClientPrincipal principal) => p.Kind switch
    {
        AclPattern.LevelKind.Literal => level.SequenceEqual(p.Literal),
        AclPattern.LevelKind.Plus => true,
        AclPattern.LevelKind.User => level.SequenceEqual(principal.UserId),
        AclPattern.LevelKind.Client => level.SequenceEqual(principal.ClientId),
        AclPattern.LevelKind.Parent => _parents.GetAlternateLookup<ReadOnlySpan<char>>().Contains(level),
        AclPattern.LevelKind.AnyUser => _users.Exists(level),
        AclPattern.LevelKind.MemberGroup => _groups.IsMember(level, principal.UserId),
        AclPattern.LevelKind.AnyGroup => _groups.Exists(level),
        _ => false,
    };

    sealed record Rule(AclPattern Pattern, AclAccess Access, bool Allow, string[]? Roles);
}

/// <summary>Configured rules that do not compile; <see cref="Errors"/> name their keys.</summary>
public sealed class AclConfigurationException(IReadOnlyList<string> errors) : Exception(string.Join(" ", errors))
{
    public IReadOnlyList<string> Errors { get; } = errors;
}
