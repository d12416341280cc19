using System.Collections.Concurrent;

namespace Broker.Cluster.Redis;

/// <summary>
/// The writes sent to Redis and not yet answered: <see cref="FlushAsync"/> waits for those issued before
/// it, <see cref="WaitForRoomAsync"/> holds publishers while there are too many. A fire-and-forget
/// write that fails is reported by <paramref name="onFailure"/> and counted (<see cref="Failed"/>); it does
/// not fail a later flush, whose caller (often another session's CONNECT after Redis came back) it is not
/// about — as the SQLite store, which logs such a loss and goes on.
/// </summary>
sealed class WriteTracker(int maxPending, Action<Exception> onFailure)
{
    readonly ConcurrentDictionary<long, Task> _pending = new();
    readonly object _roomGate = new();
    TaskCompletionSource? _room;
    long _failed;
    long _nextId;
    long _count;

    public long Count => Interlocked.Read(ref _count);

    /// <summary>Fire-and-forget writes that failed so far.</summary>
    public long Failed => Interlocked.Read(ref _failed);

    /// <summary>Tracks <paramref name="write"/>; its own exceptions still reach whoever awaits it.</summary>
    public void Track(Task write, bool awaited)
    {
        var id = Interlocked.Increment(ref _nextId);
        var done = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        _pending[id] = done.Task; // before the write can finish, so a flush never misses it
        Interlocked.Increment(ref _count);
        _ = Observe(id, write, awaited, done);
    }

    async Task Observe(long id, Task write, bool awaited, TaskCompletionSource done)
    {
        try
        {
            await write.ConfigureAwait(false);
        }
        catch (Exception ex) when (!awaited)
        {
            Interlocked.Increment(ref _failed);
            onFailure(ex);
        }
        catch
        {
            // The caller awaits this write and hears of it there.
        }
        finally
        {
            _pending.TryRemove(id, out _);
            if (Interlocked.Decrement(ref _count) < maxPending && Volatile.Read(ref _room) is not null)
            {
                ReleaseRoom();
            }

            done.TrySetResult();
        }
    }

    public async ValueTask FlushAsync() => await Task.WhenAll(_pending.Values).ConfigureAwait(false);

    public ValueTask WaitForRoomAsync() => Interlocked.Read(ref _count) < maxPending ? ValueTask.CompletedTask : WaitSlow();

    ValueTask WaitSlow()
    {
        TaskCompletionSource room;
        lock (_roomGate)
        {
            room = _room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        // _room is published before the count is read again, and Observe lowers the count before it
        // looks at _room: one of the two sees the other, so no wake-up is lost.
        Interlocked.MemoryBarrier();
        if (Interlocked.Read(ref _count) < maxPending)
        {
            ReleaseRoom();
        }

        return new ValueTask(room.Task);
    }

    public void ReleaseRoom()
    {
        TaskCompletionSource? room;
        lock (_roomGate)
        {
            room = _room;
            _room = null;
        }

        room?.TrySetResult();
    }
}
