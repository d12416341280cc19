namespace Broker.Engine.Admission;

/// <summary>
/// Lets one log line through per interval, so that an attack yields one line a second (with running
/// totals), not one per refused attempt. Lock-free: of callers racing for the same slot, one wins.
/// </summary>
internal sealed class LogGate(TimeSpan interval)
{
    readonly long _intervalMs = (long)interval.TotalMilliseconds;
    long _nextMs = long.MinValue;

    public bool TryPass()
    {
        var now = Environment.TickCount64;
        var next = Volatile.Read(ref _nextMs);
        return now >= next && Interlocked.CompareExchange(ref _nextMs, now + _intervalMs, next) == next;
    }
}
