namespace Broker.Cluster.Redis;

/// <summary>
/// "Sent, waiting for the ack" marks of persistent sessions' deliveries, held back for one to two ticks
/// before they go to Redis. Most deliveries are acknowledged sooner, and then only the removal is written:
/// one script per delivery instead of two, as the SQLite store elides a mark and its removal inside one
/// commit. What a held mark risks is a QoS 1 message sent again under a new packet id if this node dies
/// (at least once allows it); QoS 2 deliveries of persistent sessions are safe, because the engine holds
/// their PUBLISH until a flush, and a flush writes the marks first. A page read of a session's queue
/// writes that session's marks first too, so it never reads back a row that is already in flight.
/// </summary>
internal sealed class DeliveryMarks(Action<DeliveryMarks.Mark> write)
{
    /// <summary>Fence: the claim the mark was made under (the store's, immutable; null when this node never claimed the client id).</summary>
    public readonly record struct Mark(string ClientId, long MessageId, ushort PacketId, object? Fence);

    readonly Dictionary<(string ClientId, long MessageId), (Mark Mark, long Tick)> _held = new(); // under _gate
    readonly Lock _gate = new();
    long _tick;

    public void Hold(Mark mark)
    {
        lock (_gate)
        {
            _held[(mark.ClientId, mark.MessageId)] = (mark, _tick);
        }
    }

    /// <summary>The delivery was acknowledged (or moved on): its held mark, if any, is never written.</summary>
    public void Drop(string clientId, long messageId)
    {
        lock (_gate)
        {
            _held.Remove((clientId, messageId));
        }
    }

    /// <summary>Every tick: the marks held since the tick before are written now.</summary>
    public void Tick()
    {
        lock (_gate)
        {
            var tick = _tick++;
            WriteLocked(held => held.Tick < tick);
        }
    }

    /// <summary>Writes the held marks now: all of them, or one session's.</summary>
    public void WriteNow(string? clientId = null)
    {
        lock (_gate)
        {
            WriteLocked(held => clientId is null || held.Mark.ClientId == clientId);
        }
    }

    /// <summary>Under the lock: a page read that writes its session's marks first cannot overtake a tick that took them.</summary>
    void WriteLocked(Func<(Mark Mark, long Tick), bool> due)
    {
        List<Mark>? taken = null;
        foreach (var (_, held) in _held)
        {
            if (due(held))
            {
                (taken ??= []).Add(held.Mark);
            }
        }

        foreach (var mark in taken ?? [])
        {
            _held.Remove((mark.ClientId, mark.MessageId));
            write(mark);
        }
    }
}
