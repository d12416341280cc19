namespace Broker.Engine.Routing;

/// <summary>
/// Message ids never repeat, across restarts and across the nodes of a cluster, and tell when the
/// message was made: the clock in milliseconds × 2^20, then the node's index (8 bits), then a
/// sequence (12 bits). Past 4,096 in one millisecond, or with a clock that went back, the next id
/// borrows the following millisecond. A new run starts past every id an earlier one gave, so an id
/// the store no longer shows (a message whose rows were all deleted) is never reused either.
/// </summary>
public sealed class MessageIds(int nodeIndex, TimeProvider time)
{
    const int SequenceBits = 12;
    const long SequenceMask = (1L << SequenceBits) - 1;
    const int NodeIndexMask = 0xFF;
    const int TimeShift = 20;

    // Ids from before they carried the time (a store written by an older broker) have no age.
    const long FirstTimedId = 1_577_836_800_000L << TimeShift; // 2020-01-01

    readonly long _nodeBits = (long)(nodeIndex & NodeIndexMask) << SequenceBits;
    long _last;

    /// <summary>When the message was made (Unix ms), read from its id; 0 when the id does not say.</summary>
    public static long MadeAtUnixMs(long id) => id < FirstTimedId ? 0 : id >> TimeShift;

    public long Next()
    {
        var now = (time.GetUtcNow().ToUnixTimeMilliseconds() << TimeShift) | _nodeBits;
        while (true)
        {
            var last = Volatile.Read(ref _last);
            var next = last + 1;
            if ((next & ~SequenceMask) != (last & ~SequenceMask))
            {
                // The sequence ran out (or the last id was another node's, from a restore): the next millisecond.
                next = (((last >> TimeShift) + 1) << TimeShift) | _nodeBits;
            }

            next = Math.Max(next, now);
            if (Interlocked.CompareExchange(ref _last, next, last) == last)
            {
                return next;
            }
        }
    }

    /// <summary>An id found in the store (at start, or in a session claimed from the cluster): the next id is past it, whoever gave it.</summary>
    public void Restore(long id)
    {
        var own = (id & ~((1L << TimeShift) - 1)) | _nodeBits | SequenceMask;
        own = own >= id ? own : own + (1L << TimeShift);
        long last;
        while ((last = Volatile.Read(ref _last)) < own && Interlocked.CompareExchange(ref _last, own, last) != last)
        {
        }
    }
}
