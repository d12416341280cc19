using Broker.Engine.Sessions;
using MQTTnet.Protocol;

namespace Broker.Engine.Routing;

/// <summary>One granted filter of one session, as the index holds it.</summary>
public sealed class Subscription
{
    public required Session Session { get; init; }

    /// <summary>The filter as the client sent it, <c>$share/name/</c> included: the session's key for it.</summary>
    public required string Key { get; init; }

    /// <summary>The filter matched against topics (without the share prefix).</summary>
    public required string Filter { get; init; }

    /// <summary>Share group name for <c>$share/{name}/{filter}</c>, else null.</summary>
    public string? ShareName { get; init; }

    public MqttQualityOfServiceLevel Qos { get; init; }

    public bool NoLocal { get; init; }

    public bool RetainAsPublished { get; init; }

    public MqttRetainHandling RetainHandling { get; init; }

    /// <summary>v5 Subscription Identifier, 0 when none.</summary>
    public uint Identifier { get; init; }
}

/// <summary>
/// The members of one <c>$share/{name}/{filter}</c>: each message goes to one of them, in turn,
/// preferring members that are online [MQTT-4.8.2]. One entry in the index however many members.
/// </summary>
public sealed class SharedGroup(string name, string filter)
{
    readonly List<Subscription> _members = [];
    int _next;

    public string Name { get; } = name;

    public string Filter { get; } = filter;

    public int Count => _members.Count;

    internal void Add(Subscription s)
    {
        _members.RemoveAll(m => ReferenceEquals(m.Session, s.Session));
        _members.Add(s);
    }

    internal bool Remove(Subscription s) => _members.Remove(s);

    /// <summary>Round-robin over online members; an offline persistent member only when nobody is online. Called under the index read lock.</summary>
    public Subscription? Pick()
    {
        var count = _members.Count;
        if (count == 0)
        {
            return null;
        }

        var start = (int)((uint)Interlocked.Increment(ref _next) % (uint)count);
        for (var i = 0; i < count; i++)
        {
            var candidate = _members[(start + i) % count];
            if (candidate.Session.IsConnected)
            {
                return candidate;
            }
        }

        return _members[start];
    }
}
