using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;

namespace Broker.Transport;

/// <summary>
/// The output half of <see cref="SocketPipe"/>: what the engine writes collects in buffers from the shared
/// pool, and a flush sends it with non-blocking sends, which the kernel takes at once unless the client
/// has stopped reading. Only then does the flush wait (<see cref="FlushSlowAsync"/>), and only then does
/// the socket get its asynchronous send state. Between flushes no buffer is held.
/// </summary>
internal sealed class SocketOutput(Socket socket) : PipeWriter
{
    List<(byte[] Buffer, int Length)>? _filled; // written before _buffer, waiting for the flush (rare: one flush larger than a buffer)
    byte[]? _buffer;
    int _written; // of _buffer
    int _sent; // of the oldest buffer not yet sent in full
    bool _flushing; // a flush waits for the client (FlushSlowAsync owns the buffers)
    volatile bool _cancelFlush;
    CancellationTokenSource? _flushCancel; // only for a flush that waits

    enum Sent
    {
        All,
        Blocked, // the kernel's send buffer is full: the client reads slower than we write
        Failed, // reset or closed
    }

    public override Memory<byte> GetMemory(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsMemory(_written);
    }

    public override Span<byte> GetSpan(int sizeHint = 0)
    {
        Ensure(sizeHint);
        return _buffer.AsSpan(_written);
    }

    public override void Advance(int bytes) => _written += bytes;

    public override ValueTask<FlushResult> FlushAsync(CancellationToken cancellationToken = default)
    {
        if (_cancelFlush)
        {
            _cancelFlush = false;
            return new ValueTask<FlushResult>(new FlushResult(isCanceled: true, isCompleted: false));
        }

        return SendBuffered() switch
        {
            Sent.All => new ValueTask<FlushResult>(default(FlushResult)),
            Sent.Blocked => FlushSlowAsync(),
            _ => new ValueTask<FlushResult>(Gone()),
        };
    }

    /// <summary>Ends a flush that waits for a client that does not read (the engine is closing the connection).</summary>
    public override void CancelPendingFlush()
    {
        _cancelFlush = true;
        try
        {
            Volatile.Read(ref _flushCancel)?.Cancel();
        }
        catch (ObjectDisposedException)
        {
        }
    }

    /// <summary>What is left goes out if the kernel takes it now; a client that stopped reading already had the engine's two seconds.</summary>
    public override void Complete(Exception? exception = null)
    {
        if (!_flushing && SendBuffered() != Sent.All)
        {
            Drop(); // (a flush that still waits lets go of its buffers when the socket is closed)
        }
    }

    void Ensure(int sizeHint)
    {
        sizeHint = Math.Max(sizeHint, 1);
        if (_buffer is not null && _buffer.Length - _written >= sizeHint)
        {
            return;
        }

        if (_buffer is not null && _written > 0)
        {
            (_filled ??= []).Add((_buffer, _written));
        }
        else if (_buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
        }

        _buffer = ArrayPool<byte>.Shared.Rent(Math.Max(sizeHint, SocketPipe.MinimumBufferSize));
        _written = 0;
    }

    /// <summary>Sends, oldest buffer first, as much as the kernel takes now; every buffer sent in full goes back to the pool.</summary>
    Sent SendBuffered()
    {
        while (_filled is { Count: > 0 })
        {
            var (buffer, length) = _filled[0];
            var sent = SendFrom(buffer, length);
            if (sent != Sent.All)
            {
                return sent;
            }

            _filled.RemoveAt(0);
            ArrayPool<byte>.Shared.Return(buffer);
        }

        if (_buffer is not null)
        {
            var sent = SendFrom(_buffer, _written);
            if (sent != Sent.All)
            {
                return sent;
            }

            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = null;
            _written = 0;
        }

        return Sent.All;
    }

    Sent SendFrom(byte[] buffer, int length)
    {
        while (_sent < length)
        {
            var sent = socket.Send(buffer.AsSpan(_sent, length - _sent), SocketFlags.None, out var error);
            if (error == SocketError.WouldBlock)
            {
                return Sent.Blocked;
            }

            if (error != SocketError.Success)
            {
                return Sent.Failed;
            }

            _sent += sent;
        }

        _sent = 0;
        return Sent.All;
    }

    /// <summary>The client reads slower than we write: wait until the kernel takes the oldest buffer, then go on without waiting.</summary>
    async ValueTask<FlushResult> FlushSlowAsync()
    {
        _flushing = true;
        var cancel = new CancellationTokenSource();
        Volatile.Write(ref _flushCancel, cancel);
        try
        {
            while (true)
            {
                if (_cancelFlush)
                {
                    _cancelFlush = false;
                    return new FlushResult(isCanceled: true, isCompleted: false);
                }

                var (buffer, length) = _filled is { Count: > 0 } ? _filled[0] : (_buffer!, _written);
                _sent += await socket.SendAsync(buffer.AsMemory(_sent, length - _sent), SocketFlags.None, cancel.Token);
                switch (SendBuffered())
                {
                    case Sent.All:
                        return default;
                    case Sent.Failed:
                        return Gone();
                }
            }
        }
        catch (OperationCanceledException)
        {
            _cancelFlush = false;
            return new FlushResult(isCanceled: true, isCompleted: false);
        }
        catch (Exception ex) when (ex is SocketException or ObjectDisposedException)
        {
            return Gone();
        }
        finally
        {
            Volatile.Write(ref _flushCancel, null);
            cancel.Dispose();
            _flushing = false;
        }
    }

    /// <summary>The client is gone: what it did not get is dropped, and the engine sees the output completed.</summary>
    FlushResult Gone()
    {
        Drop();
        return new FlushResult(isCanceled: false, isCompleted: true);
    }

    void Drop()
    {
        if (_filled is not null)
        {
            foreach (var (buffer, _) in _filled)
            {
                ArrayPool<byte>.Shared.Return(buffer);
            }

            _filled.Clear();
        }

        if (_buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = null;
        }

        _written = 0;
        _sent = 0;
    }
}
