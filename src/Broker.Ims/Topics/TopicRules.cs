using Broker.Engine.Routing;

namespace Broker.Ims.Topics;

/// <summary>
/// The topic grammar of contract §2, on top of MQTT's: the first level is a registered parent topic,
/// no level is empty or holds a space. <c>$SYS/...</c> is the only other space (read-only: the engine
/// refuses publishes there).
/// </summary>
public sealed class TopicRules(IEnumerable<string> parentTopics)
{
    readonly HashSet<string> _parents = new(parentTopics, StringComparer.Ordinal);

    public IReadOnlyCollection<string> ParentTopics => _parents;

    public bool IsParent(ReadOnlySpan<char> level) => _parents.GetAlternateLookup<ReadOnlySpan<char>>().Contains(level);

    /// <summary>Why a topic name or filter breaks the conventions, or null when it does not.</summary>
    public string? Check(string topic)
    {
        if (topic.StartsWith("$SYS/", StringComparison.Ordinal) || topic == "$SYS")
        {
            return null;
        }

        var span = topic.AsSpan();
        var slash = span.IndexOf('/');
        var first = slash < 0 ? span : span[..slash];
        if (!IsParent(first))
        {
            return "the first level is not a registered parent topic (Broker:ParentTopics)";
        }

        foreach (var range in span.Split('/'))
        {
            var level = span[range];
            if (level.IsEmpty)
            {
                return "a level is empty";
            }

            if (level.Contains(' '))
            {
                return "a level contains a space";
            }
        }

        return null;
    }

    /// <summary>
    /// <c>P/p2p/&lt;clientId&gt;</c>: the client id the message goes to, or null for any other topic.
    /// Reserved second level "p2p" (contract §5).
    /// </summary>
    public string? DirectTarget(string topic)
    {
        var span = topic.AsSpan();
        var first = span.IndexOf('/');
        if (first <= 0 || !IsParent(span[..first]))
        {
            return null;
        }

        var rest = span[(first + 1)..];
        if (!rest.StartsWith("p2p/", StringComparison.Ordinal))
        {
            return null;
        }

        var target = rest[4..];
        return target.IsEmpty || target.Contains('/') || MqttTopic.HasWildcard(target) ? null : target.ToString();
    }
}
