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
    readonly EngineContext _engine = TestEngine.Create(new BrokerCounters());
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

    [Fact]
    public void Remove_ManyFilters_TreeAndExactMapShrinkToNothing()
    {
        // Reliability issue: 100,000 wildcard subscribe + unsubscribe used to leave every tree node behind.
        var added = new List<Subscription>();
        for (var i = 0; i < 5_000; i++)
        {
            added.Add(Add($"c{i % 50}", $"dev/{i}/+/in"));
            added.Add(Add($"c{i % 50}", $"+/{i}/#"));
            added.Add(Add($"c{i % 50}", $"u{i}/#"));
            added.Add(Add($"c{i % 50}", $"$share/g{i % 3}/grp/{i}/+"));
            added.Add(Add($"c{i % 50}", $"exact/{i}"));
        }

        var keep = Add("keep", "dev/7/+/in");
        var nodesWithKeep = _index.NodeCount;
        Assert.True(nodesWithKeep > 20_000, $"{nodesWithKeep} nodes");

        foreach (var s in added)
        {
            Assert.True(_index.Remove(s));
        }

        // Only the path of the one filter left remains: dev, 7, +, in.
        Assert.Equal(4, _index.NodeCount);
        Assert.Equal(0, _index.ExactCount);
        Assert.Equal(1, _index.Count);
        Assert.Equal(["keep:dev/7/+/in"], Match("dev/7/x/in").Plain);
        Assert.Empty(Match("dev/8/x/in").Plain);

        Assert.True(_index.Remove(keep));
        Assert.Equal(0, _index.NodeCount);
        Assert.Equal(0, _index.Count);

        // The pruned tree takes the same filters again.
        Add("again", "u3/#");
        Assert.Equal(["again:u3/#"], Match("u3/a/b").Plain);
    }

    [Fact]
    public void Remove_OneOfTwoFiltersSharingAPath_OtherStillMatches()
    {
        var deep = Add("c1", "a/+/c/#");
        Add("c2", "a/+");
        Add("c3", "a/#");
        var deepPlus = Add("c4", "a/+/c/+");

        Assert.True(_index.Remove(deep));
        Assert.Equal(["c2:a/+", "c3:a/#"], Match("a/b").Plain);
        Assert.Equal(["c3:a/#", "c4:a/+/c/+"], Match("a/b/c/d").Plain);
        Assert.True(_index.Remove(deepPlus));
        Assert.Equal(["c3:a/#"], Match("a/b/c/d").Plain);
        Assert.Equal(2, _index.NodeCount); // a, a/+
        Assert.False(_index.Remove(deep));
    }

    [Fact]
    public async Task ConcurrentAddRemoveMatch_StableFiltersAlwaysMatched_TreeShrinksBack()
    {
        // Writers churn filters that share paths with stable ones, so nodes are pruned and re-created
        // under the readers' feet; readers must always see every stable match and nothing that does not match.
        string[] shapes = ["s/{0}/+", "s/+/{0}", "s/#", "+/{0}/x", "s/{0}/x", "s/{0}/#", "$share/g/s/{0}/x", "#"];
        string[] topics = ["s/1/x", "s/2/x", "s/3/y", "t/1/x", "s/1", "$sys/1/x"];
        var stable = new List<Subscription>
        {
            Add("stable1", "s/1/x"),
            Add("stable2", "s/+/x"),
            Add("stable3", "+/1/x"),
        };
        var stableNodes = _index.NodeCount;
        var stop = false;
        var failures = new System.Collections.Concurrent.ConcurrentQueue<string>();
        void Writer(int seed)
        {
            // Own sessions per writer: a session holds one place per share group, as a client does.
            var sessions = Enumerable.Range(0, 8).Select(i => new Session(_engine, $"churn{seed}-{i}", new ClientPrincipal($"churn{seed}-{i}", "u", "user"))).ToArray();
            var random = new Random(seed);
            var mine = new List<Subscription>();
            for (var op = 0; op < 20_000; op++)
            {
                if (mine.Count > 0 && (random.Next(2) == 0 || mine.Count > 30))
                {
                    var at = random.Next(mine.Count);
                    if (!_index.Remove(mine[at]))
                    {
                        failures.Enqueue($"remove of {mine[at].Key} failed");
                    }

                    mine.RemoveAt(at);
                    continue;
                }

                var key = string.Format(System.Globalization.CultureInfo.InvariantCulture, shapes[random.Next(shapes.Length)], random.Next(4));
                var shared = MqttTopic.TryParseShared(key, out var shareName, out var inner);
                var session = sessions[random.Next(sessions.Length)];
                if (shared && mine.Exists(m => m.Session == session && m.Key == key))
                {
                    continue;
                }

                var s = new Subscription
                {
                    Session = session,
                    Key = key,
                    Filter = shared ? inner : key,
                    ShareName = shared ? shareName : null,
                };
                _index.Add(s);
                mine.Add(s);
            }

            foreach (var s in mine)
            {
                _index.Remove(s);
            }
        }

        void Reader(int seed)
        {
            var random = new Random(seed);
            var matches = new List<Subscription>();
            var picks = new List<Subscription>();
            while (!Volatile.Read(ref stop))
            {
                var topic = topics[random.Next(topics.Length)];
                matches.Clear();
                picks.Clear();
                _index.Match(topic, matches, picks);
                foreach (var s in stable)
                {
                    if (MqttTopic.Matches(s.Filter, topic) != matches.Contains(s))
                    {
                        failures.Enqueue($"{topic}: stable {s.Key} wrong");
                    }
                }

                foreach (var s in matches.Concat(picks))
                {
                    if (!MqttTopic.Matches(s.Filter, topic))
                    {
                        failures.Enqueue($"{topic}: {s.Key} does not match");
                    }
                }
            }
        }

        var readers = Enumerable.Range(0, 2).Select(i => Task.Run(() => Reader(1000 + i))).ToArray();
        var writers = Enumerable.Range(0, 2).Select(i => Task.Run(() => Writer(42 + i))).ToArray();
        await Task.WhenAll(writers).WaitAsync(TimeSpan.FromSeconds(60));
        Volatile.Write(ref stop, true);
        await Task.WhenAll(readers).WaitAsync(TimeSpan.FromSeconds(10));

        Assert.Empty(failures.Take(10));
        Assert.Equal(stable.Count, _index.Count);
        Assert.Equal(stableNodes, _index.NodeCount);
        Assert.Equal(1, _index.ExactCount);
    }
}
