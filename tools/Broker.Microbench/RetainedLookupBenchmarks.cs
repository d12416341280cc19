using System.Collections.Concurrent;
using BenchmarkDotNet.Attributes;
using Broker.Engine.Routing;

namespace Broker.Microbench;

/// <summary>
/// The retained lookup of one wildcard SUBSCRIBE with 100,000 retained topics (10,000 users × 10 topics,
/// <c>IMS/user{n}/s{k}</c>): the level tree of <see cref="RetainedMessages"/> against the scan of every
/// retained topic it replaced (<c>Scan*</c>, the old code: a concurrent map and <see cref="MqttTopic.Matches"/>).
/// </summary>
[MemoryDiagnoser]
public class RetainedLookupBenchmarks
{
    const int Users = 10_000;
    const int PerUser = 10;
    readonly List<BrokerMessage> _found = new(Users);
    readonly RetainedMessages _tree = new();
    readonly ConcurrentDictionary<string, BrokerMessage> _flat = new(StringComparer.Ordinal);

    [GlobalSetup]
    public void Setup()
    {
        for (var u = 0; u < Users; u++)
        {
            for (var k = 0; k < PerUser; k++)
            {
                var message = new BrokerMessage { Topic = $"IMS/user{u}/s{k}", Payload = new byte[16], Retain = true };
                _tree.TrySet(message);
                _flat[message.Topic] = message;
            }
        }
    }

    /// <summary>One user's topics: 10 of 100,000.</summary>
    [Benchmark]
    public int TreeOneUser() => Tree("IMS/user4242/#");

    [Benchmark]
    public int ScanOneUser() => Scan("IMS/user4242/#");

    /// <summary>One topic of every user: 10,000 of 100,000.</summary>
    [Benchmark]
    public int TreePlusLevel() => Tree("IMS/+/s3");

    [Benchmark]
    public int ScanPlusLevel() => Scan("IMS/+/s3");

    int Tree(string filter)
    {
        _found.Clear();
        _tree.CollectMatching(filter, _found);
        return _found.Count;
    }

    int Scan(string filter)
    {
        _found.Clear();
        foreach (var (topic, message) in _flat)
        {
            if (MqttTopic.Matches(filter, topic))
            {
                _found.Add(message);
            }
        }

        return _found.Count;
    }
}
