using System.Collections.Concurrent;

namespace Broker.Cluster.Redis;

/// <summary>
/// The writes sent to Redis and not yet answered: <see cref="FlushAsync"/> waits for those issued before
/// it, <see cref="WaitForRoomAsync"/> holds publishers while there are too many. A fire-and-forget
/// write that fails is reported by <paramref name="onFailure"/> and fails the next flush, since nobody
/// awaited it.
/// </summary>
sealed class WriteTracker(int maxPending, Action<Exception> onFailure)
{
    readonly ConcurrentDictionary<long, Task> _pending = new();
    readonly object _roomGate = new();
    TaskCompletionSource? _room;
    Exception? _unobservedFailure;
    long _nextId;
    long _count;

    public long Count => Interlocked.Read(ref _count);

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
            onFailure(ex);
            Volatile.Write(ref _unobservedFailure, ex); // before done: the flush that waits on it sees it
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

    public async ValueTask FlushAsync()
    {
        await Task.WhenAll(_pending.Values).ConfigureAwait(false);
        if (Interlocked.Exchange(ref _unobservedFailure, null) is { } failure)
        {
            throw new RedisStoreException("a write to Redis that nobody awaited failed", failure);
        }
    }

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

/// <summary>A write to the shared store failed: what depends on it is not acknowledged.</summary>
public sealed class RedisStoreException(string message, Exception? inner = null) : Exception(message, inner);
