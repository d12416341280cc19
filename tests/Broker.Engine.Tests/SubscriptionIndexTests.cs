using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Protocol;

namespace Broker.Engine.Tests;

/// <summary>The subscription index: exact map, wildcard tree, '$' rule, share groups, and cost by matches.</summary>
public sealed class SubscriptionIndexTests
{
    readonly EngineContext _engine = new(new EngineOptions(), new AllowAllPolicy(), new InMemoryBrokerStore(), NullLoggerFactory.Instance, new BrokerCounters(), TimeProvider.System);
    readonly SubscriptionIndex _index = new();
    readonly Dictionary<string, Session> _sessions = [];

    Session SessionFor(string clientId)
    {
        if (!_sessions.TryGetValue(clientId, out var session))
        {
            _sessions[clientId] = session = new Session(_engine, clientId, new ClientPrincipal(clientId, clientId, "user"));
        }

        return session;
    }

    Subscription Add(string clientId, string key)
    {
        var shared = MqttTopic.TryParseShared(key, out var shareName, out var inner);
        var subscription = new Subscription
        {
            Session = SessionFor(clientId),
            Key = key,
            Filter = shared ? inner : key,
            ShareName = shared ? shareName : null,
            Qos = MqttQualityOfServiceLevel.AtLeastOnce,
        };
        _index.Add(subscription);
        return subscription;
    }

    (List<string> Plain, List<string> Shared, int Examined) Match(string topic)
    {
        var matches = new List<Subscription>();
        var picks = new List<Subscription>();
        var examined = _index.Match(topic, matches, picks);
        return (matches.Select(s => $"{s.Session.ClientId}:{s.Key}").Order().ToList(), picks.Select(s => s.Session.ClientId).ToList(), examined);
    }

    [Fact]
    public void Match_ExactFilter_OnlyThatTopic()
    {
        Add("c1", "a/b");
        Add("c2", "a/b");
        Add("c3", "a/c");

        Assert.Equal(["c1:a/b", "c2:a/b"], Match("a/b").Plain);
        Assert.Empty(Match("a/b/c").Plain);
        Assert.Empty(Match("a").Plain);
    }

    [Fact]
    public void Match_Plus_OneLevel()
    {
        // [MQTT-4.7.1-3]
        Add("c1", "a/+/c");
        Add("c2", "+/b/+");
        Add("c3", "+");

        Assert.Equal(["c1:a/+/c", "c2:+/b/+"], Match("a/b/c").Plain);
        Assert.Equal(["c3:+"], Match("a").Plain);
        Assert.Empty(Match("a/b/c/d").Plain);
        Assert.Equal(["c1:a/+/c"], Match("a//c").Plain);
    }

    [Fact]
    public void Match_Hash_ParentAndAllBelow()
    {
        // [MQTT-4.7.1-2]: "a/#" matches "a" too.
        Add("c1", "a/#");
        Add("c2", "#");
        Add("c3", "a/b/#");

        Assert.Equal(["c1:a/#", "c2:#"], Match("a").Plain);
        Assert.Equal(["c1:a/#", "c2:#", "c3:a/b/#"], Match("a/b").Plain);
        Assert.Equal(["c1:a/#", "c2:#", "c3:a/b/#"], Match("a/b/c/d").Plain);
        Assert.Equal(["c2:#"], Match("b").Plain);
    }

    [Fact]
    public void Match_DollarTopic_NotMatchedByLeadingWildcards()
    {
        // [MQTT-4.7.2-1]
        Add("c1", "#");
        Add("c2", "+/x");
        Add("c3", "$app/#");
        Add("c4", "$app/+");
        Add("c5", "$app/x");

        Assert.Equal(["c3:$app/#", "c4:$app/+", "c5:$app/x"], Match("$app/x").Plain);
        Assert.Equal(["c1:#", "c2:+/x"], Match("app/x").Plain);
    }

    [Fact]
    public void Match_SharedGroup_OnePickPerMessageInTurn()
    {
        // [MQTT-4.8.2]: one member of the group per message; plain subscribers of the filter are separate.
        Add("m1", "$share/g/t/#");
        Add("m2", "$share/g/t/#");
        Add("plain", "t/#");

        var picks = new List<string>();
        for (var i = 0; i < 4; i++)
        {
            var (plain, shared, _) = Match("t/x");
            Assert.Equal(["plain:t/#"], plain);
            picks.Add(Assert.Single(shared));
        }

        Assert.Equal(2, picks.Count(p => p == "m1"));
        Assert.Equal(2, picks.Count(p => p == "m2"));
        Assert.NotEqual(picks[0], picks[1]);
    }

    [Fact]
    public void Match_TwoShareGroupsSameFilter_OnePickEach()
    {
        Add("a1", "$share/a/t");
        Add("b1", "$share/b/t");
        Add("b2", "$share/b/t");

        Assert.Equal(2, Match("t").Shared.Count);
    }

    [Fact]
    public void Remove_Subscription_NoLongerMatched()
    {
        var exact = Add("c1", "a/b");
        var wild = Add("c1", "a/+");
        var shared = Add("c2", "$share/g/a/b");
        Assert.Equal(3, _index.Count);

        Assert.True(_index.Remove(exact));
        Assert.True(_index.Remove(wild));
        Assert.True(_index.Remove(shared));
        Assert.False(_index.Remove(exact)); // already gone

        var (plain, sharedPicks, examined) = Match("a/b");
        Assert.Empty(plain);
        Assert.Empty(sharedPicks);
        Assert.Equal(0, examined);
        Assert.Equal(0, _index.Count);
    }

    [Fact]
    public void Match_OnePublishToOneExactSubscriber_DoesNotVisitIdleSessions()
    {
        // Design invariant 3: routing cost follows matches, not population.
        for (var i = 0; i < 10_000; i++)
        {
            Add($"c{i}", $"devices/{i}/inbox");
        }

        Add("w1", "other/+/inbox");
        Add("w2", "devices/+/outbox");
        Add("w3", "status/#");
        Add("w4", "$share/g/devices/+/events");

        var (plain, shared, examined) = Match("devices/4242/inbox");

        Assert.Equal(["c4242:devices/4242/inbox"], plain);
        Assert.Empty(shared);
        Assert.Equal(1, examined);
    }
}
