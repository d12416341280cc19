using Broker.Hosting;

namespace Broker.IntegrationTests.Host;

/// <summary>When the broker gives memory back after a burst (Broker:Memory:IdleCollect, docs/performance.md).</summary>
public sealed class IdleCollectorTests
{
    const long MiB = 1 << 20;

    [Fact]
    public void QuietAfterABurst_Collects()
    {
        // The bench's 19,000 connects: 120 MB in the busiest interval, then idle connections' pings at 3 MB.
        Assert.True(IdleCollector.ShouldCollect(allocatedInInterval: 3 * MiB, busiestInterval: 120 * MiB, allocatedSinceCollected: 175 * MiB));
    }

    [Fact]
    public void SteadyTraffic_IsNeverCollected_AtAnyRate()
    {
        Assert.False(IdleCollector.ShouldCollect(allocatedInInterval: 500 * MiB, busiestInterval: 520 * MiB, allocatedSinceCollected: 5000 * MiB));
        Assert.False(IdleCollector.ShouldCollect(allocatedInInterval: 2 * MiB, busiestInterval: 3 * MiB, allocatedSinceCollected: 400 * MiB));
    }

    [Fact]
    public void QuietWithoutABurstSinceTheLastCollection_IsLeftAlone()
    {
        // After a collection the heap holds only what lives: a second one would cost a pause for nothing.
        Assert.False(IdleCollector.ShouldCollect(allocatedInInterval: 0, busiestInterval: 30 * MiB, allocatedSinceCollected: IdleCollector.BurstBytes - 1));
    }
}
