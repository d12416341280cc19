namespace Broker.Hosting;

/// <summary>
/// Gives memory back to the system once the broker goes quiet after a burst (a connect storm, a backlog
/// worked off). The .NET GC collects only when the process allocates, so a broker that falls idle keeps
/// the last burst's garbage and free space in its RSS for as long as it stays idle: after 19,000 connects,
/// a third of the heap's growth (docs/performance.md). As the JVM's G1 does for the same reason (JEP 346,
/// periodic collections of an idle VM), every <c>Broker:Memory:IdleCollect</c> this looks at how much was
/// allocated: when the broker was quiet for a whole interval after a burst, it runs one full, compacting
/// collection that returns the free memory. A busy broker is never collected by this.
/// </summary>
public sealed partial class IdleCollector(IConfiguration configuration, ILogger<IdleCollector> logger) : BackgroundService
{
    /// <summary>Allocated since the last collection that makes one worth its pause (about a thousand connects).</summary>
    internal const long BurstBytes = 64L << 20;

    /// <summary>
    /// True when a burst came since the last collection and the last interval was quiet: it allocated less
    /// than a tenth of the busiest interval since that collection. Steady traffic, at any rate, is never
    /// quiet; the pings of 19,000 idle connections after their connect storm are (3 MB against 120 MB).
    /// </summary>
    internal static bool ShouldCollect(long allocatedInInterval, long busiestInterval, long allocatedSinceCollected) =>
        allocatedSinceCollected >= BurstBytes && allocatedInInterval * 10 < busiestInterval;

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = configuration.GetValue("Broker:Memory:IdleCollect", TimeSpan.FromSeconds(10));
        if (interval == TimeSpan.Zero)
        {
            return; // off
        }

        using var timer = new PeriodicTimer(interval);
        var last = GC.GetTotalAllocatedBytes();
        var collectedAt = last;
        var busiest = 0L;
        try
        {
            while (await timer.WaitForNextTickAsync(stoppingToken))
            {
                var now = GC.GetTotalAllocatedBytes();
                busiest = Math.Max(busiest, now - last);
                if (ShouldCollect(now - last, busiest, now - collectedAt))
                {
                    var before = Environment.WorkingSet;
                    GC.Collect(GC.MaxGeneration, GCCollectionMode.Aggressive, blocking: true, compacting: true);
                    LogCollected(logger, before >> 20, Environment.WorkingSet >> 20, GC.GetGCMemoryInfo().HeapSizeBytes >> 20);
                    now = GC.GetTotalAllocatedBytes();
                    collectedAt = now;
                    busiest = 0;
                }

                last = now;
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    [LoggerMessage(1201, LogLevel.Information, "Quiet after a burst: a full collection took the working set from {BeforeMiB} to {AfterMiB} MiB (heap {HeapMiB} MiB)")]
    static partial void LogCollected(ILogger logger, long beforeMiB, long afterMiB, long heapMiB);
}
