namespace Broker.Cluster.Redis;

/// <summary>
/// Persistent sessions' delivery changes, held back for one to two ticks and then written per session in
/// one script: the "sent, waiting for the ack" mark and the removal at the ack. Most deliveries are
/// acknowledged before their mark is due, and then only the removal is written; removals of one session
/// that fall in one tick share a script (5,000 acks a second over 50 sessions: 1,000 scripts, not 5,000),
/// as the SQLite store writes a commit's changes together.
/// <para>
/// What holding risks is bounded by at least once: if this node dies, a held mark lets a QoS 1 message go
/// out again under a new packet id, and a held removal lets an acknowledged one go out again. QoS 2 stays
/// exactly once: the engine holds a persistent session's QoS 2 PUBLISH until a flush, which writes the
/// held changes first, and PUBREC's state is not held. A page read of a session's queue, a claim of it, its
/// disconnect and its release to another node write that session's changes first, so in a running cluster
/// no reader sees a row that is in flight or acknowledged.
/// </para>
/// </summary>
internal sealed class DeliveryMarks(Action<string, object?, IReadOnlyList<DeliveryMarks.Change>> write)
{
    /// <summary>One delivery's new state: in flight under a packet id, or gone (acknowledged or dropped).</summary>
    public readonly record struct Change(long MessageId, ushort PacketId, bool Removed);

    /// <summary>Fence: the claim the change was made under (the store's, immutable; null when this node never claimed the client id).</summary>
    readonly record struct Held(Change Change, object? Fence, long Tick);

    readonly Dictionary<string, Dictionary<long, Held>> _held = new(StringComparer.Ordinal); // by client id, then message id; under _gate
    readonly Lock _gate = new();
    long _tick;

    public void Hold(string clientId, long messageId, ushort packetId, object? fence)
    {
        lock (_gate)
        {
            var session = Session(clientId);
            if (!session.TryGetValue(messageId, out var earlier) || !earlier.Change.Removed) // a removal is final
            {
                session[messageId] = new Held(new Change(messageId, packetId, false), fence, _tick);
            }
        }
    }

    /// <summary>The delivery was acknowledged: its removal replaces a mark not written yet, and is due when the mark would have been.</summary>
    public void Remove(string clientId, long messageId, object? fence)
    {
        lock (_gate)
        {
            var session = Session(clientId);
            var tick = session.TryGetValue(messageId, out var earlier) ? earlier.Tick : _tick;
            session[messageId] = new Held(new Change(messageId, 0, true), fence, tick);
        }
    }

    /// <summary>The delivery moved on to a state written at once (PUBREL): its held mark, if any, is never written.</summary>
    public void Drop(string clientId, long messageId)
    {
        lock (_gate)
        {
            if (_held.TryGetValue(clientId, out var session) && session.Remove(messageId) && session.Count == 0)
            {
                _held.Remove(clientId);
            }
        }
    }

    /// <summary>Every tick: the changes held since the tick before are written now.</summary>
    public void Tick()
    {
        lock (_gate)
        {
            var tick = _tick++;
            List<string>? emptied = null;
            foreach (var (clientId, session) in _held)
            {
                if (WriteLocked(clientId, session, tick))
                {
                    (emptied ??= []).Add(clientId);
                }
            }

            foreach (var clientId in emptied ?? [])
            {
                _held.Remove(clientId);
            }
        }
    }

    /// <summary>Writes the held changes now: all of them, or one session's.</summary>
    public void WriteNow(string? clientId = null)
    {
        lock (_gate)
        {
            if (clientId is null)
            {
                foreach (var (id, session) in _held)
                {
                    WriteLocked(id, session, long.MaxValue);
                }

                _held.Clear();
            }
            else if (_held.Remove(clientId, out var session))
            {
                WriteLocked(clientId, session, long.MaxValue);
            }
        }
    }

    Dictionary<long, Held> Session(string clientId)
    {
        if (!_held.TryGetValue(clientId, out var session))
        {
            _held[clientId] = session = [];
        }

        return session;
    }

    /// <summary>
    /// Under the lock (a page read that writes its session's changes first cannot overtake a tick that took
    /// them): writes the session's changes held before <paramref name="before"/>, one script per claim they
    /// were made under (almost always one); true when none is left.
    /// </summary>
    bool WriteLocked(string clientId, Dictionary<long, Held> session, long before)
    {
        List<(object? Fence, List<Change> Changes)>? taken = null;
        foreach (var (_, held) in session)
        {
            if (held.Tick >= before)
            {
                continue;
            }

            taken ??= [];
            var at = 0;
            while (at < taken.Count && !ReferenceEquals(taken[at].Fence, held.Fence))
            {
                at++;
            }

            if (at == taken.Count)
            {
                taken.Add((held.Fence, []));
            }

            taken[at].Changes.Add(held.Change);
        }

        foreach (var (fence, changes) in taken ?? [])
        {
            foreach (var change in changes)
            {
                session.Remove(change.MessageId);
            }

            write(clientId, fence, changes);
        }

        return session.Count == 0;
    }
}
