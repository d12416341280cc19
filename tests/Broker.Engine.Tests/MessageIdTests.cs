using Broker.Engine;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;

namespace Broker.Engine.Tests;

/// <summary>
/// Message ids never repeat, across restarts too (reliability issue, item 5): the store keys rows by
/// them, and a new message that took the id of an old one still on disk would be read back as the old
/// one. They also tell when the message was made (the offline queue's time to live reads it).
/// </summary>
public sealed class MessageIdTests : IDisposable
{
    readonly BrokerCounters _counters = new();

    public void Dispose() => _counters.Dispose();

    EngineContext NewEngine() => TestEngine.Create(_counters);

    [Fact]
    public void AfterARestart_NewIdsAreAboveEveryIdOnDisk_OrphansIncluded()
    {
        var before = NewEngine();
        var given = Enumerable.Range(0, 1000).Select(_ => before.Ids.Next()).ToList();
        Assert.Equal(given.Count, given.Distinct().Count());
        Assert.Equal(given.Order(), given); // increasing

        // The restarted engine learns the highest id on disk, e.g. an orphan message no row refers to.
        var after = NewEngine();
        var orphan = given[^1] + 5_000_000;
        after.Ids.Restore(orphan);
        Assert.True(after.Ids.Next() > orphan);
    }

    [Fact]
    public void AnIdTellsWhenItsMessageWasMade()
    {
        var engine = NewEngine();
        var now = DateTimeOffset.UtcNow.ToUnixTimeMilliseconds();
        var madeAt = MessageIds.MadeAtUnixMs(engine.Ids.Next());
        Assert.InRange(madeAt, now - 1000, now + 1000);
        Assert.Equal(0, MessageIds.MadeAtUnixMs(42)); // an id from before ids carried their time: no age
    }
}
