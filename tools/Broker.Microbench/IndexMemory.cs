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
/// <c>dotnet run -c Release --project tools/Broker.Microbench -- index-memory</c>: three rounds of 100,000
/// wildcard subscriptions added to the <see cref="SubscriptionIndex"/> and removed again, printing the
/// GC heap after each round. It should come back to where it started.
/// </summary>
internal static class IndexMemory
{
    public static void Run()
    {
        using var counters = new BrokerCounters();
        var engine = new EngineContext(new EngineOptions(), new AllowAllPolicy(), new InMemoryBrokerStore(), NullLoggerFactory.Instance, counters, TimeProvider.System);
        var session = new Session(engine, "c", new ClientPrincipal("c", "u", "user"));
        var index = new SubscriptionIndex();
        var subscriptions = new Subscription[100_000];
        var before = Heap();
        Console.WriteLine($"before: {before / 1024.0 / 1024.0:F1} MB");
        for (var round = 1; round <= 3; round++)
        {
            for (var i = 0; i < subscriptions.Length; i++)
            {
                var filter = $"bench/{round}/{i}/+/x/#";
                index.Add(subscriptions[i] = new Subscription { Session = session, Key = filter, Filter = filter, Qos = MqttQualityOfServiceLevel.AtLeastOnce });
            }

            var full = Heap();
            foreach (var s in subscriptions)
            {
                index.Remove(s);
            }

            Array.Clear(subscriptions);
            Console.WriteLine($"round {round}: with 100,000 filters {full / 1024.0 / 1024.0:F1} MB, after removing them {Heap() / 1024.0 / 1024.0:F1} MB");
        }

        var after = Heap();
        Console.WriteLine($"growth after 3 rounds (index still alive): {(after - before) / 1024.0 / 1024.0:F2} MB");
        GC.KeepAlive(index);
    }

    static long Heap()
    {
        GC.Collect();
        GC.WaitForPendingFinalizers();
        GC.Collect();
        return GC.GetTotalMemory(forceFullCollection: true);
    }
}
