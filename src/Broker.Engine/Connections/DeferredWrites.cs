namespace Broker.Engine.Connections;

/// <summary>
/// One write per recipient per wake-up instead of one per packet. While a receive loop works through packets
/// that are already read (a publisher's burst, a subscriber's PUBACKs), the writers it wakes on this thread
/// are noted here instead of writing at once; when the loop has nothing more to read without waiting, or
/// after <see cref="MaxPackets"/> packets, each writes everything it has in one flush. A message to a group
/// of 100 members then costs 100 sends per burst, not 100 per message (the kernel's send is most of a
/// fan-out's CPU). Nothing waits longer than the packets already read take to process.
/// <para>
/// A noted writer holds its writer role (see <see cref="ConnectionWriter.Signal"/>), so signals from other
/// threads meanwhile only count, and the drain here writes what they brought too. Thread-static and
/// only open during a synchronous stretch of a receive loop: the loop ends it before any await that waits.
/// </para>
/// </summary>
internal static class DeferredWrites
{
    /// <summary>Packets a receive loop handles before it lets its writers write, however much is buffered.</summary>
    public const int MaxPackets = 64;

    [ThreadStatic] static List<ConnectionWriter>? t_writers;
    [ThreadStatic] static bool t_open;

    /// <summary>Opens a stretch on this thread; false when one is already open (its opener ends it).</summary>
    public static bool Begin()
    {
        if (t_open)
        {
            return false;
        }

        t_open = true;
        return true;
    }

    /// <summary>Called by a writer that just took its role: true when it is to write at <see cref="End"/> instead of now.</summary>
    public static bool TryDefer(ConnectionWriter writer)
    {
        if (!t_open)
        {
            return false;
        }

        (t_writers ??= []).Add(writer);
        return true;
    }

    /// <summary>Closes the stretch: every writer noted in it writes now (a writer's fault stays in its connection).</summary>
    public static void End()
    {
        t_open = false; // a signal from inside a drain writes at once
        var writers = t_writers;
        if (writers is null || writers.Count == 0)
        {
            return;
        }

        t_writers = null; // a drain that opens a stretch of its own (it cannot today) would get a new list
        foreach (var writer in writers)
        {
            writer.DrainDeferred();
        }

        writers.Clear();
        t_writers ??= writers;
    }
}
