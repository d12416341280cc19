namespace Broker.Engine.Routing;

/// <summary>
/// Finds the subscriptions matching a topic in O(levels + matches), whatever the number of
/// sessions: filters without wildcards sit in a hash map keyed by the topic itself; wildcard
/// filters in a tree with one node per level, a '+' child and a '#' bucket per node (mosquitto's
/// subs.c does the same). Shared subscriptions are one group entry per (name, filter).
/// Readers share a lock; subscribe and unsubscribe take it exclusively. Lookups go by span
/// (alternate lookup), so matching allocates nothing.
/// </summary>
public sealed class SubscriptionIndex
{
    readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    readonly Dictionary<string, Bucket> _exact = new(StringComparer.Ordinal);
    readonly Node _root = new();
    int _count;

    public int Count => Volatile.Read(ref _count);

    public void Add(Subscription subscription)
    {
        _lock.EnterWriteLock();
        try
        {
            var bucket = BucketFor(subscription.Filter, create: true)!;
            bucket.Add(subscription);
            _count++;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    public bool Remove(Subscription subscription)
    {
        _lock.EnterWriteLock();
        try
        {
            var bucket = BucketFor(subscription.Filter, create: false);
            if (bucket is null || !bucket.Remove(subscription))
            {
                return false;
            }

            if (bucket.IsEmpty && !MqttTopic.HasWildcard(subscription.Filter))
            {
                _exact.Remove(subscription.Filter);
            }

            _count--;
            return true;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>
    /// Adds the matching plain subscriptions to <paramref name="matches"/> and one pick per matching
    /// share group to <paramref name="sharedPicks"/>. Returns how many index entries were examined.
    /// </summary>
    public int Match(string topic, List<Subscription> matches, List<Subscription> sharedPicks)
    {
        var examined = 0;
        _lock.EnterReadLock();
        try
        {
            if (_exact.TryGetValue(topic, out var exact))
            {
                examined += exact.CollectInto(matches, sharedPicks);
            }

            var dollar = topic.Length > 0 && topic[0] == '$';
            examined += MatchNode(_root, topic, 0, isRoot: true, dollar, matches, sharedPicks);
        }
        finally
        {
            _lock.ExitReadLock();
        }

        return examined;
    }

    static int MatchNode(Node node, string topic, int start, bool isRoot, bool dollar, List<Subscription> matches, List<Subscription> sharedPicks)
    {
        // A leading wildcard never matches a '$' topic [MQTT-4.7.2-1].
        var wildcardsAllowed = !(isRoot && dollar);
        var examined = 0;
        if (wildcardsAllowed && node.Hash is { } hash)
        {
            // "a/#" matches "a/b/c" and "a" itself: '#' covers the parent level [MQTT-4.7.1-2].
            examined += hash.CollectInto(matches, sharedPicks);
        }

        if (start < 0)
        {
            return examined + (node.Here?.CollectInto(matches, sharedPicks) ?? 0);
        }

        var slash = topic.IndexOf('/', start);
        var level = slash < 0 ? topic.AsSpan(start) : topic.AsSpan(start, slash - start);
        var next = slash < 0 ? -1 : slash + 1;
        if (node.Children is { } children && children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var child))
        {
            examined += MatchNode(child, topic, next, isRoot: false, dollar, matches, sharedPicks);
        }

        if (wildcardsAllowed && node.Plus is { } plus)
        {
            examined += MatchNode(plus, topic, next, isRoot: false, dollar, matches, sharedPicks);
        }

        return examined;
    }

    Bucket? BucketFor(string filter, bool create)
    {
        if (!MqttTopic.HasWildcard(filter))
        {
            if (!_exact.TryGetValue(filter, out var exact) && create)
            {
                _exact[filter] = exact = new Bucket();
            }

            return exact;
        }

        var node = _root;
        foreach (var range in filter.AsSpan().Split('/'))
        {
            var level = filter.AsSpan(range);
            if (level is "#")
            {
                return create ? node.Hash ??= new Bucket() : node.Hash;
            }

            Node? next;
            if (level is "+")
            {
                next = create ? node.Plus ??= new Node() : node.Plus;
            }
            else
            {
                node.Children ??= new Dictionary<string, Node>(StringComparer.Ordinal);
                var key = level.ToString();
                if (!node.Children.TryGetValue(key, out next) && create)
                {
                    node.Children[key] = next = new Node();
                }
            }

            if (next is null)
            {
                return null;
            }

            node = next;
        }

        return create ? node.Here ??= new Bucket() : node.Here;
    }

    sealed class Node
    {
        public Dictionary<string, Node>? Children;
        public Node? Plus;
        public Bucket? Here;
        public Bucket? Hash;
    }

    /// <summary>The subscriptions of one filter: plain ones, and share groups by name.</summary>
    sealed class Bucket
    {
        readonly List<Subscription> _plain = [];
        Dictionary<string, SharedGroup>? _shared;

        public bool IsEmpty => _plain.Count == 0 && (_shared is null || _shared.Count == 0);

        public void Add(Subscription s)
        {
            if (s.ShareName is null)
            {
                _plain.Add(s);
                return;
            }

            _shared ??= new Dictionary<string, SharedGroup>(StringComparer.Ordinal);
            if (!_shared.TryGetValue(s.ShareName, out var group))
            {
                _shared[s.ShareName] = group = new SharedGroup(s.ShareName, s.Filter);
            }

            group.Add(s);
        }

        public bool Remove(Subscription s)
        {
            if (s.ShareName is null)
            {
                return _plain.Remove(s);
            }

            if (_shared is null || !_shared.TryGetValue(s.ShareName, out var group) || !group.Remove(s))
            {
                return false;
            }

            if (group.Count == 0)
            {
                _shared.Remove(s.ShareName);
            }

            return true;
        }

        public int CollectInto(List<Subscription> matches, List<Subscription> sharedPicks)
        {
            matches.AddRange(_plain);
            var examined = _plain.Count;
            if (_shared is not null)
            {
                foreach (var group in _shared.Values)
                {
                    examined++;
                    if (group.Pick() is { } pick)
                    {
                        sharedPicks.Add(pick);
                    }
                }
            }

            return examined;
        }
    }
}
