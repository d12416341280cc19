namespace Broker.Engine.Routing;

/// <summary>
/// Finds the subscriptions matching a topic in O(levels + matches), whatever the number of
/// sessions: filters without wildcards sit in a hash map keyed by the topic itself; wildcard
/// filters in a tree with one node per level, a '+' child and a '#' bucket per node (mosquitto's
/// subs.c does the same). Shared subscriptions are one group entry per (name, filter).
/// Readers share a lock; subscribe and unsubscribe take it exclusively. Lookups go by span
/// (alternate lookup), so matching allocates nothing.
/// Memory follows the filters present, not those ever seen: removing a filter's last subscription
/// removes its exact-map entry, or prunes the tree nodes left empty on its path (under the write
/// lock, so no reader sees the tree while a node is detached; a reader that still held a detached
/// node would find it empty, which is a correct answer for a filter just removed). Maps that
/// emptied out are trimmed, so a burst of subscriptions leaves no oversized tables behind.
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
            var filter = subscription.Filter;
            if (!MqttTopic.HasWildcard(filter))
            {
                if (!_exact.TryGetValue(filter, out var exact) || !exact.Remove(subscription))
                {
                    return false;
                }

                if (exact.IsEmpty)
                {
                    _exact.Remove(filter);
                    TrimIfSparse(_exact);
                }
            }
            else if (!RemoveFromTree(_root, filter, 0, subscription, out _))
            {
                return false;
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

    /// <summary>Wildcard filters' tree nodes, root excluded (tests: the tree shrinks back to nothing).</summary>
    internal int NodeCount
    {
        get
        {
            _lock.EnterReadLock();
            try
            {
                return CountNodes(_root) - 1;
            }
            finally
            {
                _lock.ExitReadLock();
            }
        }
    }

    /// <summary>Exact filters in the hash map (tests).</summary>
    internal int ExactCount
    {
        get
        {
            _lock.EnterReadLock();
            try
            {
                return _exact.Count;
            }
            finally
            {
                _lock.ExitReadLock();
            }
        }
    }

    static int CountNodes(Node node)
    {
        var n = 1;
        if (node.Plus is { } plus)
        {
            n += CountNodes(plus);
        }

        if (node.Children is { } children)
        {
            foreach (var child in children.Values)
            {
                n += CountNodes(child);
            }
        }

        return n;
    }

    /// <summary>
    /// Removes a wildcard subscription below <paramref name="node"/> (the filter's levels from
    /// <paramref name="start"/>), then detaches what it left empty on the way back up. Write lock held.
    /// </summary>
    static bool RemoveFromTree(Node node, string filter, int start, Subscription subscription, out bool nodeEmpty)
    {
        nodeEmpty = false;
        var slash = filter.IndexOf('/', start);
        var level = slash < 0 ? filter.AsSpan(start) : filter.AsSpan(start, slash - start);
        bool removed;
        if (level is "#")
        {
            if (node.Hash is not { } hash || !hash.Remove(subscription))
            {
                return false;
            }

            if (hash.IsEmpty)
            {
                node.Hash = null;
            }
        }
        else if (level is "+")
        {
            if (node.Plus is not { } plus)
            {
                return false;
            }

            removed = slash < 0 ? RemoveHere(plus, subscription, out var empty) : RemoveFromTree(plus, filter, slash + 1, subscription, out empty);
            if (!removed)
            {
                return false;
            }

            if (empty)
            {
                node.Plus = null;
            }
        }
        else
        {
            if (node.Children is not { } children || !children.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var child))
            {
                return false;
            }

            removed = slash < 0 ? RemoveHere(child, subscription, out var empty) : RemoveFromTree(child, filter, slash + 1, subscription, out empty);
            if (!removed)
            {
                return false;
            }

            if (empty)
            {
                children.GetAlternateLookup<ReadOnlySpan<char>>().Remove(level);
                if (children.Count == 0)
                {
                    node.Children = null;
                }
                else
                {
                    TrimIfSparse(children);
                }
            }
        }

        nodeEmpty = node.IsEmpty;
        return true;
    }

    static bool RemoveHere(Node node, Subscription subscription, out bool nodeEmpty)
    {
        nodeEmpty = false;
        if (node.Here is not { } here || !here.Remove(subscription))
        {
            return false;
        }

        if (here.IsEmpty)
        {
            node.Here = null;
        }

        nodeEmpty = node.IsEmpty;
        return true;
    }

    /// <summary>A dictionary keeps its table after removals; give it back once it is mostly empty.</summary>
    static void TrimIfSparse<TValue>(Dictionary<string, TValue> map)
    {
        if (map.Capacity > 64 && map.Count < map.Capacity / 4)
        {
            map.TrimExcess();
        }
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

        public bool IsEmpty => Children is null && Plus is null && Here is null && Hash is null;
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
