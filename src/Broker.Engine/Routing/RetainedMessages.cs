using System.Collections.Concurrent;
using System.Text;

namespace Broker.Engine.Routing;

/// <summary>What became of a retained PUBLISH (see <see cref="RetainedMessages.TrySet"/>).</summary>
public enum RetainResult : byte
{
    /// <summary>Not a retained publish, or one that deleted its topic's message.</summary>
    None,

    /// <summary>Kept: a new topic, or the previous message of the topic replaced.</summary>
    Stored,

    /// <summary>Not kept: a new topic while <c>Broker:Limits:MaxRetainedMessages</c> are retained.</summary>
    RefusedMessages,

    /// <summary>Not kept: it would take the retained messages above <c>Broker:Limits:MaxRetainedBytes</c>.</summary>
    RefusedBytes,

    /// <summary>Not kept: its publisher owns as many retained messages as its quota allows (a policy's limit per user).</summary>
    RefusedOwnerQuota,
}

public static class RetainResults
{
    /// <summary>Not kept, for any of the bounds: the publish is refused as a whole (not delivered either).</summary>
    public static bool IsRefused(this RetainResult result) => result >= RetainResult.RefusedMessages;
}

/// <summary>
/// The last retained message per topic [MQTT-3.3.1-5], bounded broker-wide by a number of messages and
/// a number of bytes. An exact filter is one lookup in a concurrent map, without a lock. Wildcard
/// filters walk a tree with one node per topic level, so a SUBSCRIBE visits only the branches its
/// filter can match (a leading '+' or '#' skips the '$' topics [MQTT-4.7.2-1]) instead of every
/// retained message; that happens once per SUBSCRIBE, never per publish. Changes take the tree's
/// write lock, wildcard lookups its read lock; emptied nodes are pruned, so the tree follows the
/// retained set down as well as up.
/// </summary>
public sealed class RetainedMessages(long maxMessages = long.MaxValue, long maxBytes = long.MaxValue)
{
    /// <summary>Above this many children a node looks them up in a hash map; below, a short array scan is cheaper in memory.</summary>
    const int FewChildren = 8;

    readonly ConcurrentDictionary<string, BrokerMessage> _byTopic = new(StringComparer.Ordinal);
    readonly ReaderWriterLockSlim _lock = new(LockRecursionPolicy.NoRecursion);
    readonly Node _root = new("");
    readonly Dictionary<string, int> _byOwner = new(StringComparer.Ordinal); // under _lock
    int _count;
    long _bytes;

    public long MaxMessages { get; } = maxMessages;

    public long MaxBytes { get; } = maxBytes;

    public int Count => Volatile.Read(ref _count);

    /// <summary>Topic, payload and properties of every retained message (see <see cref="SizeOf"/>).</summary>
    public long Bytes => Interlocked.Read(ref _bytes);

    /// <summary>Above a bound: only after a restore, when the operator lowered it (nothing restored is dropped).</summary>
    public bool IsOverLimits => Count > MaxMessages || Bytes > MaxBytes;

    /// <summary>
    /// Keeps <paramref name="message"/> as its topic's retained message, within the bounds: a new topic
    /// when <see cref="MaxMessages"/> are kept, or a message that would take the total above
    /// <see cref="MaxBytes"/>, is refused and nothing changes. Replacing a message with one no larger,
    /// and deleting, always succeed. <paramref name="withinLimits"/> false keeps it whatever the bounds
    /// (restore at start, the broker's own <c>$SYS</c> topics).
    /// </summary>
    /// <param name="ownerQuota">
    /// When above 0, the most retained messages the publisher (<see cref="BrokerMessage.SenderUserId"/>, the
    /// owner of a topic's current retained message) may own: taking one more topic beyond it is refused;
    /// replacing its own is not.
    /// </param>
    public RetainResult TrySet(BrokerMessage message, bool withinLimits = true, int ownerQuota = 0)
    {
        var size = SizeOf(message);
        _lock.EnterWriteLock();
        try
        {
            var growth = size;
            var isNew = !_byTopic.TryGetValue(message.Topic, out var previous);
            if (!isNew)
            {
                growth -= SizeOf(previous!);
            }

            if (withinLimits)
            {
                if (isNew && _count >= MaxMessages)
                {
                    return RetainResult.RefusedMessages;
                }

                if (growth > 0 && _bytes + growth > MaxBytes)
                {
                    return RetainResult.RefusedBytes;
                }
            }

            var owner = message.SenderUserId ?? "";
            var previousOwner = previous?.SenderUserId ?? "";
            if (isNew || previousOwner != owner)
            {
                if (ownerQuota > 0 && _byOwner.GetValueOrDefault(owner) >= ownerQuota)
                {
                    return RetainResult.RefusedOwnerQuota;
                }

                _byOwner[owner] = _byOwner.GetValueOrDefault(owner) + 1;
                if (!isNew)
                {
                    Disown(previousOwner);
                }
            }

            _byTopic[message.Topic] = message;
            if (isNew)
            {
                NodeFor(message.Topic).Message = message;
                _count++;
            }
            else
            {
                FindNode(message.Topic)!.Message = message;
            }

            Interlocked.Add(ref _bytes, growth);
            return RetainResult.Stored;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>Keeps it whatever the bounds (restore).</summary>
    public void Set(BrokerMessage message) => TrySet(message, withinLimits: false);

    public bool Remove(string topic)
    {
        _lock.EnterWriteLock();
        try
        {
            if (!_byTopic.TryRemove(topic, out var removed))
            {
                return false;
            }

            _count--;
            Disown(removed.SenderUserId ?? "");
            Interlocked.Add(ref _bytes, -SizeOf(removed));
            RemoveFromTree(topic);
            return true;
        }
        finally
        {
            _lock.ExitWriteLock();
        }
    }

    /// <summary>Retained messages whose current message <paramref name="userId"/> published.</summary>
    public int OwnedBy(string userId)
    {
        _lock.EnterReadLock();
        try
        {
            return _byOwner.GetValueOrDefault(userId);
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    void Disown(string owner)
    {
        if (_byOwner.TryGetValue(owner, out var n))
        {
            if (n <= 1)
            {
                _byOwner.Remove(owner);
            }
            else
            {
                _byOwner[owner] = n - 1;
            }
        }
    }

    public BrokerMessage? Get(string topic) => _byTopic.TryGetValue(topic, out var m) ? m : null;

    /// <summary>Adds the retained messages whose topic <paramref name="filter"/> matches [MQTT-3.3.1-6].</summary>
    public void CollectMatching(string filter, List<BrokerMessage> into)
    {
        if (!MqttTopic.HasWildcard(filter))
        {
            if (_byTopic.TryGetValue(filter, out var exact))
            {
                into.Add(exact);
            }

            return;
        }

        _lock.EnterReadLock();
        try
        {
            Collect(_root, filter, 0, atRoot: true, into);
        }
        finally
        {
            _lock.ExitReadLock();
        }
    }

    /// <summary>
    /// What a retained message counts against <c>MaxRetainedBytes</c>: its topic, payload and properties
    /// (content type, response topic, correlation data, user properties), in bytes as sent on the wire.
    /// </summary>
    public static long SizeOf(BrokerMessage m)
    {
        long size = Encoding.UTF8.GetByteCount(m.Topic) + m.Payload.Length + (m.CorrelationData?.Length ?? 0);
        if (m.ContentType is { } contentType)
        {
            size += Encoding.UTF8.GetByteCount(contentType);
        }

        if (m.ResponseTopic is { } responseTopic)
        {
            size += Encoding.UTF8.GetByteCount(responseTopic);
        }

        if (m.UserProperties is { } properties)
        {
            foreach (var p in properties)
            {
                size += Encoding.UTF8.GetByteCount(p.Name) + p.ValueBuffer.Length;
            }
        }

        return size;
    }

    /// <summary>Tree nodes below the root (tests: deleting every retained message leaves none).</summary>
    internal int NodeCount
    {
        get
        {
            _lock.EnterReadLock();
            try
            {
                var n = 0;
                var stack = new Stack<Node>();
                stack.Push(_root);
                while (stack.TryPop(out var node))
                {
                    node.ForEachChild(stack, static (s, child) => s.Push(child));
                    n++;
                }

                return n - 1;
            }
            finally
            {
                _lock.ExitReadLock();
            }
        }
    }

    /// <summary>
    /// Matches the filter's levels from <paramref name="start"/> below <paramref name="node"/>. Recursion
    /// is bounded by the filter's levels (Broker:Limits:MaxTopicLevels); a '#' walks its subtree with a stack.
    /// </summary>
    static void Collect(Node node, string filter, int start, bool atRoot, List<BrokerMessage> into)
    {
        var slash = filter.IndexOf('/', start);
        var level = slash < 0 ? filter.AsSpan(start) : filter.AsSpan(start, slash - start);
        if (level is "#")
        {
            // "a/#" matches "a" itself [MQTT-4.7.1-2]; a leading '#' no '$' topic [MQTT-4.7.2-1].
            if (node.Message is { } parent)
            {
                into.Add(parent);
            }

            var stack = new Stack<Node>();
            node.ForEachChild(stack, atRoot ? PushUnlessDollar : Push);
            while (stack.TryPop(out var below))
            {
                if (below.Message is { } m)
                {
                    into.Add(m);
                }

                below.ForEachChild(stack, Push);
            }

            return;
        }

        if (level is "+")
        {
            var rest = slash < 0 ? -1 : slash + 1;
            node.ForEachChild((filter, rest, atRoot, into), static (state, child) =>
            {
                if (state.atRoot && child.IsDollar)
                {
                    return; // [MQTT-4.7.2-1]
                }

                Matched(child, state.filter, state.rest, state.into);
            });
            return;
        }

        if (node.Find(level) is { } next)
        {
            Matched(next, filter, slash < 0 ? -1 : slash + 1, into);
        }
    }

    /// <summary>A child matched one filter level: the filter ends here, or goes on below it.</summary>
    static void Matched(Node child, string filter, int rest, List<BrokerMessage> into)
    {
        if (rest < 0)
        {
            if (child.Message is { } m)
            {
                into.Add(m);
            }

            return;
        }

        Collect(child, filter, rest, atRoot: false, into);
    }

    static readonly Action<Stack<Node>, Node> Push = static (stack, child) => stack.Push(child);

    static readonly Action<Stack<Node>, Node> PushUnlessDollar = static (stack, child) =>
    {
        if (!child.IsDollar)
        {
            stack.Push(child);
        }
    };

    Node NodeFor(string topic)
    {
        var node = _root;
        foreach (var range in topic.AsSpan().Split('/'))
        {
            node = node.GetOrAdd(topic, range);
        }

        return node;
    }

    Node? FindNode(string topic)
    {
        var node = _root;
        foreach (var range in topic.AsSpan().Split('/'))
        {
            if (node.Find(topic.AsSpan(range)) is not { } next)
            {
                return null;
            }

            node = next;
        }

        return node;
    }

    /// <summary>Clears the topic's node, then detaches every node on its path left with neither message nor children.</summary>
    void RemoveFromTree(string topic)
    {
        var path = new List<Node>(MqttTopic.CountLevels(topic) + 1) { _root };
        foreach (var range in topic.AsSpan().Split('/'))
        {
            if (path[^1].Find(topic.AsSpan(range)) is not { } next)
            {
                return;
            }

            path.Add(next);
        }

        path[^1].Message = null;
        for (var i = path.Count - 1; i > 0 && path[i].IsEmpty; i--)
        {
            path[i - 1].RemoveChild(path[i]);
        }
    }

    /// <summary>One topic level: the message whose topic ends here, and the levels below.</summary>
    sealed class Node(string level)
    {
        Node[]? _few;
        int _fewCount;
        Dictionary<string, Node>? _many;

        public string Level { get; } = level;

        public BrokerMessage? Message;

        public bool IsDollar => Level.Length > 0 && Level[0] == '$';

        public bool IsEmpty => Message is null && _fewCount == 0 && _many is null;

        public Node? Find(ReadOnlySpan<char> level)
        {
            if (_many is not null)
            {
                return _many.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(level, out var found) ? found : null;
            }

            for (var i = 0; i < _fewCount; i++)
            {
                if (level.SequenceEqual(_few![i].Level))
                {
                    return _few[i];
                }
            }

            return null;
        }

        public Node GetOrAdd(string topic, Range range)
        {
            if (Find(topic.AsSpan(range)) is { } existing)
            {
                return existing;
            }

            var child = new Node(topic[range]);
            if (_many is not null)
            {
                _many[child.Level] = child;
            }
            else if (_fewCount < FewChildren)
            {
                _few ??= new Node[2];
                if (_fewCount == _few.Length)
                {
                    Array.Resize(ref _few, _few.Length * 2);
                }

                _few[_fewCount++] = child;
            }
            else
            {
                _many = new Dictionary<string, Node>(FewChildren * 2, StringComparer.Ordinal);
                for (var i = 0; i < _fewCount; i++)
                {
                    _many[_few![i].Level] = _few[i];
                }

                _many[child.Level] = child;
                _few = null;
                _fewCount = 0;
            }

            return child;
        }

        public void RemoveChild(Node child)
        {
            if (_many is not null)
            {
                _many.Remove(child.Level);
                if (_many.Count == 0)
                {
                    _many = null;
                }
                else if (_many.Capacity > 64 && _many.Count < _many.Capacity / 4)
                {
                    _many.TrimExcess(); // give back the table a burst of topics left behind
                }

                return;
            }

            var at = Array.IndexOf(_few!, child, 0, _fewCount);
            if (at < 0)
            {
                return;
            }

            _few![at] = _few[--_fewCount];
            _few[_fewCount] = null!;
            if (_fewCount == 0)
            {
                _few = null;
            }
        }

        public void ForEachChild<TState>(TState state, Action<TState, Node> visit)
        {
            if (_many is not null)
            {
                foreach (var child in _many.Values)
                {
                    visit(state, child);
                }

                return;
            }

            for (var i = 0; i < _fewCount; i++)
            {
                visit(state, _few![i]);
            }
        }
    }
}
