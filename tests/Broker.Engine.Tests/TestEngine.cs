using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Broker.Engine.Tests;

/// <summary>The engine's parts wired as in plain mode (allow-all policy, in-memory store, system clock), without a host.</summary>
internal static class TestEngine
{
    public static EngineContext Create(BrokerCounters counters) =>
        new(new EngineOptions(), new AllowAllPolicy(), new InMemoryBrokerStore(), NullLoggerFactory.Instance, counters, TimeProvider.System);
}
