using System.Text;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Broker.Engine.Tests;

/// <summary>The retained set: the level tree answers as a scan with <see cref="MqttTopic.Matches"/> would, the bounds, pruning.</summary>
public sealed class RetainedMessagesTests
{
    static BrokerMessage Message(string topic, string payload = "x") => new() { Topic = topic, Payload = Encoding.UTF8.GetBytes(payload), Retain = true };

    static List<string> Collect(RetainedMessages retained, string filter)
    {
        var found = new List<BrokerMessage>();
        retained.CollectMatching(filter, found);
        return found.Select(m => m.Topic).Order(StringComparer.Ordinal).ToList();
    }

    [Fact]
    public void CollectMatching_SameAnswerAsMatchingEveryTopic()
    {
        var random = new Random(7);
        string[] levels = ["a", "b", "c", "", "$x", "dd"];
        var topics = new HashSet<string>(StringComparer.Ordinal);
        var retained = new RetainedMessages();
        for (var i = 0; i < 2_000; i++)
        {
            var topic = string.Join('/', Enumerable.Range(0, random.Next(1, 5)).Select(_ => levels[random.Next(levels.Length)]));
            topics.Add(topic);
            retained.TrySet(Message(topic));
        }

        string[] filters = ["#", "+", "+/#", "a/#", "a/+", "+/b", "+/+/c/#", "a/+/+/+", "/#", "$x/#", "$x/+", "+/$x", "a//#", "dd/b/c/a", "a/b/#", "$x/+/+/#"];
        foreach (var filter in filters)
        {
            var expected = topics.Where(t => MqttTopic.Matches(filter, t)).Order(StringComparer.Ordinal).ToList();
            Assert.Equal(expected, Collect(retained, filter));
        }
    }

    [Fact]
    public void CollectMatching_DollarTopics_NotMatchedByLeadingWildcard()
    {
        // [MQTT-4.7.2-1]
        var retained = new RetainedMessages();
        retained.TrySet(Message("$SYS/broker/uptime"));
        retained.TrySet(Message("a/$b"));
        retained.TrySet(Message("a"));

        Assert.Equal(["a", "a/$b"], Collect(retained, "#"));
        Assert.Equal(["a"], Collect(retained, "+"));
        Assert.Empty(Collect(retained, "+/broker/#"));
        Assert.Equal(["$SYS/broker/uptime"], Collect(retained, "$SYS/#"));
        Assert.Equal(["a/$b"], Collect(retained, "a/+"));
    }

    [Fact]
    public void TrySet_NewTopicBeyondMaxMessages_Refused_ReplaceAndDeleteAllowed()
    {
        var retained = new RetainedMessages(maxMessages: 2);
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/1")));
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/2")));
        Assert.Equal(RetainResult.RefusedMessages, retained.TrySet(Message("t/3")));
        Assert.Null(retained.Get("t/3"));
        Assert.Equal(["t/1", "t/2"], Collect(retained, "t/#"));

        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/1", "new")));
        Assert.True(retained.Remove("t/2"));
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/3")));
        Assert.Equal(2, retained.Count);
    }

    [Fact]
    public void TrySet_BeyondMaxBytes_Refused_GrowingReplacementToo()
    {
        // Size = topic + payload bytes (here 3 + 7 = 10 each).
        var retained = new RetainedMessages(maxBytes: 25);
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/1", "1234567")));
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/2", "1234567")));
        Assert.Equal(20, retained.Bytes);
        Assert.Equal(RetainResult.RefusedBytes, retained.TrySet(Message("t/3", "1234567")));
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/1", "123456789012"))); // 15 + 10 = 25: fits
        Assert.Equal(RetainResult.RefusedBytes, retained.TrySet(Message("t/2", "12345678"))); // would be 26
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("t/2", "1"))); // smaller: always
        Assert.Equal(19, retained.Bytes);
        Assert.True(retained.Remove("t/1"));
        Assert.Equal(4, retained.Bytes);
    }

    [Fact]
    public void Set_Restore_IgnoresBounds()
    {
        var retained = new RetainedMessages(maxMessages: 1);
        retained.Set(Message("a"));
        retained.Set(Message("b"));
        Assert.Equal(2, retained.Count);
        Assert.True(retained.IsOverLimits);
        Assert.Equal(RetainResult.RefusedMessages, retained.TrySet(Message("c")));
        Assert.Equal(RetainResult.Stored, retained.TrySet(Message("a", "y")));
    }

    [Fact]
    public void Remove_All_TreeShrinksToNothing()
    {
        var retained = new RetainedMessages();
        for (var i = 0; i < 3_000; i++)
        {
            retained.TrySet(Message($"r/{i % 40}/{i}/leaf"));
            retained.TrySet(Message($"r/{i % 40}"));
        }

        Assert.True(retained.NodeCount > 6_000);
        for (var i = 0; i < 3_000; i++)
        {
            retained.Remove($"r/{i % 40}/{i}/leaf");
            retained.Remove($"r/{i % 40}");
        }

        Assert.Equal(0, retained.Count);
        Assert.Equal(0, retained.Bytes);
        Assert.Equal(0, retained.NodeCount);
        Assert.Empty(Collect(retained, "#"));
    }

    [Fact]
    public async Task Restore_OverALoweredBound_KeepsEveryRetainedMessage()
    {
        // An operator who lowers Broker:Limits:MaxRetainedMessages loses nothing already retained (warning 4005).
        var store = new InMemoryBrokerStore();
        for (var i = 0; i < 3; i++)
        {
            await store.SetRetainedAsync(Message($"r/{i}").With(id: i + 1));
        }

        var options = new EngineOptions();
        options.Limits.MaxRetainedMessages = 1;
        using var counters = new BrokerCounters();
        await using var engine = new BrokerEngine(Microsoft.Extensions.Options.Options.Create(options), new AllowAllPolicy(), store, NullLoggerFactory.Instance, counters);
        await engine.StartAsync(CancellationToken.None);

        Assert.Equal(3, engine.RetainedCount);
    }
}
