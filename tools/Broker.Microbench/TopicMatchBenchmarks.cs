using BenchmarkDotNet.Attributes;
using Broker.Engine;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Protocol;

namespace Broker.Microbench;

/// <summary>
/// <see cref="SubscriptionIndex.Match"/> on an index shaped like a chat deployment: 10,000 devices each on its
/// own inbox (<c>IMS/user{n}/Inbox/#</c>) and on <c>IMS/System/#</c>, 300 groups of 20 members
/// (<c>IMS/group{g}/#</c>), 5 exact friend-status filters per device, 200 devices on <c>IMS/+/status</c>,
/// and one service on <c>IMS/+/Inbox/#</c>. The result lists are reused, as the router reuses its per-thread scratch.
/// </summary>
[MemoryDiagnoser]
public class TopicMatchBenchmarks
{
    readonly List<Subscription> _matches = new(16_384);
    readonly List<Subscription> _picks = new(16);
    SubscriptionIndex _index = null!;
    BrokerCounters _counters = null!;

    [GlobalSetup]
    public void Setup()
    {
        _counters = new BrokerCounters();
        var engine = new EngineContext(new EngineOptions(), new AllowAllPolicy(), new InMemoryBrokerStore(), NullLoggerFactory.Instance, _counters, TimeProvider.System);
        _index = new SubscriptionIndex();
        var sessions = new Session[Data.Users];
        for (var i = 0; i < Data.Users; i++)
        {
            var user = Data.User(i);
            var session = sessions[i] = new Session(engine, Data.Device(i), new ClientPrincipal(Data.Device(i), user, "user"));
            Add(session, $"IMS/{user}/Inbox/#");
            Add(session, "IMS/System/#");
            for (var f = 1; f <= 5; f++)
            {
                Add(session, $"IMS/{Data.User((i + f * 7) % Data.Users)}/status");
            }

            if (i % 50 == 0)
            {
                Add(session, "IMS/+/status");
            }
        }

        for (var g = 0; g < Data.Groups; g++)
        {
            foreach (var m in Data.Members(g))
            {
                Add(sessions[m], $"IMS/{Data.Group(g)}/#");
            }
        }

        var service = new Session(engine, "GID_IMS@@@assistant-1", new ClientPrincipal("GID_IMS@@@assistant-1", "assistant", "service"));
        Add(service, "IMS/+/Inbox/#");
    }

    [GlobalCleanup]
    public void Cleanup() => _counters.Dispose();

    void Add(Session session, string filter) => _index.Add(new Subscription
    {
        Session = session,
        Key = filter,
        Filter = filter,
        Qos = MqttQualityOfServiceLevel.AtLeastOnce,
    });

    int Match(string topic)
    {
        _matches.Clear();
        _picks.Clear();
        _index.Match(topic, _matches, _picks);
        return _matches.Count;
    }

    /// <summary>A P2P topic: the router takes the direct route for these, so the index finds nothing (only '+' paths are walked).</summary>
    [Benchmark]
    public int P2pTopic() => Match("IMS/p2p/GID_IMS@@@user4711-phone");

    /// <summary>A direct message: the owner's inbox filter and the service's <c>IMS/+/Inbox/#</c>.</summary>
    [Benchmark]
    public int InboxTopic() => Match("IMS/user4711/Inbox/Msg/user42");

    /// <summary>A group message: 20 members.</summary>
    [Benchmark]
    public int GroupTopic() => Match("IMS/group17/user42");

    /// <summary>A status update: 5 exact friend filters and 200 <c>IMS/+/status</c>.</summary>
    [Benchmark]
    public int StatusTopic() => Match("IMS/user4711/status");

    /// <summary>A broadcast: all 10,000 devices (the cost is copying 10,000 references).</summary>
    [Benchmark]
    public int SystemBroadcast() => Match("IMS/System/Beijing");
}
