using System.Buffers;
using System.IO.Pipelines;
using System.Net.Sockets;
using System.Threading.Tasks.Sources;

namespace Broker.Transport;

/// <summary>
/// A connected socket as the engine's <see cref="IDuplexPipe"/>, with no stream, no <see cref="Pipe"/> and
/// no receive or send loop in between: the engine's own reads and flushes go straight to the socket.
/// It is an idle connection's whole transport, so it is kept small (docs/performance.md):
/// <list type="bullet">
/// <item>An idle connection waits in one zero-byte receive and holds no buffer; a buffer is taken from the
/// shared pool when data is there and given back as soon as the engine has consumed all of it.</item>
/// <item>The socket is non-blocking: data already received is read and output is sent with plain
/// (synchronous) calls, which the kernel answers at once; only a client that stops reading makes a
/// flush wait, and only then does the socket get its asynchronous send state.</item>
/// <item>The reader completes its own <see cref="ValueTask"/> (<see cref="IValueTaskSource{TResult}"/>), so a
/// pending read costs no state machine and can be ended by <see cref="CancelPendingRead"/> without a
/// cancellation token.</item>
/// </list>
/// This type is the input and the duplex pipe at once (one object fewer per connection); the output is
/// <see cref="SocketOutput"/>. One reader and one writer at a time, as for any pipe; the cancel methods
/// may be called from any thread.
/// </summary>
internal sealed class SocketPipe : PipeReader, IDuplexPipe, IValueTaskSource<ReadResult>
{
    internal const int MinimumBufferSize = 4096; // Kestrel's block size; the output's too

    readonly Socket _socket;
    readonly SocketOutput _output;
    readonly Action _onReadable;
    ManualResetValueTaskSourceCore<ReadResult> _pending; // the read that waits for data
    ValueTask<int> _readable; // the pending zero-byte receive
    byte[]? _buffer; // received and not yet consumed: [_start, _end)
    int _start;
    int _end;
    bool _examinedAll; // the engine looked at everything it has: the next read needs new data
    bool _eof; // the peer closed its side, or the socket failed
    bool _drained; // the last receive took everything the kernel had
    int _receiving; // 1 while a zero-byte receive is pending on the socket
    int _waiting; // 1 while a ReadAsync waits; whoever sets it back to 0 completes that read
    volatile bool _cancelRead;

    public SocketPipe(Socket socket)
    {
        _socket = socket;
        _socket.Blocking = false; // reads of what is there, and sends, return at once instead of waiting
        _output = new SocketOutput(socket);
        _onReadable = OnReadable;
    }

    public PipeReader Input => this;

    public PipeWriter Output => _output;

    public override ValueTask<ReadResult> ReadAsync(CancellationToken cancellationToken = default)
    {
        // After a receive that did not fill the buffer the kernel had no more: wait for data at once, without
        // a receive that would only say "nothing" (one system call fewer per packet at a steady rate).
        if (_drained && !_cancelRead && (_examinedAll || _end == _start) && !_eof)
        {
            _drained = false;
        }
        else if (TryRead(out var result))
        {
            return new ValueTask<ReadResult>(result);
        }

        _pending.Reset();
        Interlocked.Exchange(ref _waiting, 1); // a full fence: see OnReadable
        if (_cancelRead || !StartReceive())
        {
            ContinueWaiting();
        }

        var read = new ValueTask<ReadResult>(this, _pending.Version);
        return cancellationToken.CanBeCanceled && !read.IsCompleted ? WithToken(read, cancellationToken) : read;
    }

    /// <summary>Only the CONNECT's read has a token (the connect timeout): a cancellation throws, as a pipe's does.</summary>
    async ValueTask<ReadResult> WithToken(ValueTask<ReadResult> read, CancellationToken cancellationToken)
    {
        ReadResult result;
        await using (cancellationToken.UnsafeRegister(static pipe => ((SocketPipe)pipe!).CancelPendingRead(), this))
        {
            result = await read;
        }

        if (result.IsCanceled && cancellationToken.IsCancellationRequested)
        {
            throw new OperationCanceledException(cancellationToken);
        }

        return result;
    }

    /// <summary>What is buffered and not yet examined, or what the kernel has received already, or the cancellation.</summary>
    public override bool TryRead(out ReadResult result)
    {
        if (_cancelRead)
        {
            _cancelRead = false;
            result = new ReadResult(Buffered(), isCanceled: true, isCompleted: false);
            return true;
        }

        if ((!_examinedAll && _end > _start) || _eof || Receive())
        {
            _examinedAll = false;
            result = new ReadResult(Buffered(), isCanceled: false, isCompleted: _eof);
            return true;
        }

        result = default;
        return false;
    }

    public override void AdvanceTo(SequencePosition consumed) => AdvanceTo(consumed, consumed);

    public override void AdvanceTo(SequencePosition consumed, SequencePosition examined)
    {
        if (_buffer is null)
        {
            return; // an empty result
        }

        _start = consumed.GetInteger();
        _examinedAll = examined.GetInteger() >= _end;
        if (_start == _end)
        {
            Release(); // all consumed: an idle connection holds no buffer
        }
    }

    public override void CancelPendingRead()
    {
        _cancelRead = true;
        if (Volatile.Read(ref _waiting) == 1)
        {
            // The waiting reader goes on on the thread pool, not inside the caller (a takeover, a close from
            // outside): it may hold locks the receive loop's close path takes.
            ThreadPool.UnsafeQueueUserWorkItem(static pipe => pipe.ContinueWaiting(), this, preferLocal: false);
        }
    }

    public override void Complete(Exception? exception = null)
    {
        _eof = true;
        Release();
    }

    ReadOnlySequence<byte> Buffered() => _buffer is null ? ReadOnlySequence<byte>.Empty : new ReadOnlySequence<byte>(_buffer, _start, _end - _start);

    /// <summary>Reads what the kernel has, without waiting; true when something came (or the end).</summary>
    bool Receive()
    {
        EnsureRoom();
        int received;
        SocketError error;
        try
        {
            received = _socket.Receive(_buffer.AsSpan(_end), SocketFlags.None, out error);
        }
        catch (ObjectDisposedException)
        {
            // Closed by the listener: this may run in the socket's callback, where a throw would end the process.
            _eof = true;
            return true;
        }

        if (error == SocketError.WouldBlock)
        {
            if (_end == _start)
            {
                Release();
            }

            return false;
        }

        if (error != SocketError.Success || received == 0)
        {
            _eof = true; // closed or reset by the peer: the engine sees the input complete
            return true;
        }

        _drained = received < _buffer!.Length - _end;
        _end += received;
        return true;
    }

    /// <summary>Free space after the data: moved to the front, or a larger buffer when one packet does not fit.</summary>
    void EnsureRoom()
    {
        if (_buffer is null)
        {
            _buffer = ArrayPool<byte>.Shared.Rent(MinimumBufferSize);
            _start = _end = 0;
            return;
        }

        if (_end < _buffer.Length)
        {
            return;
        }

        var length = _end - _start;
        if (_start > 0)
        {
            Buffer.BlockCopy(_buffer, _start, _buffer, 0, length);
        }
        else
        {
            // A packet larger than the buffer (its size is checked against Maximum Packet Size before it grows this far).
            var larger = ArrayPool<byte>.Shared.Rent(_buffer.Length * 2);
            Buffer.BlockCopy(_buffer, 0, larger, 0, length);
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = larger;
        }

        _start = 0;
        _end = length;
    }

    void Release()
    {
        if (_buffer is not null)
        {
            ArrayPool<byte>.Shared.Return(_buffer);
            _buffer = null;
        }

        _start = _end = 0;
        _examinedAll = false;
    }

    /// <summary>
    /// Waits for the socket to become readable in a zero-byte receive, which needs no buffer. True when it
    /// is pending (it goes on in <see cref="OnReadable"/>); false when it completed at once.
    /// </summary>
    bool StartReceive()
    {
        if (Volatile.Read(ref _receiving) == 1)
        {
            return true; // one is pending already (left by a cancelled read): it serves this read too
        }

        ValueTask<int> readable;
        try
        {
#pragma warning disable CA2012 // consumed exactly once: by Observe, here or in OnReadable
            readable = _socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None);
#pragma warning restore CA2012
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException)
        {
            _eof = true;
            return false;
        }

        if (readable.IsCompleted)
        {
            Observe(readable);
            return false;
        }

        _readable = readable;
        Volatile.Write(ref _receiving, 1); // before the callback can run
        readable.GetAwaiter().UnsafeOnCompleted(_onReadable);
        return true;
    }

    void OnReadable()
    {
        // A full fence: either this sees the _waiting a new ReadAsync set, or that ReadAsync sees no
        // receive pending and starts one.
        var readable = _readable;
        _readable = default;
        Interlocked.Exchange(ref _receiving, 0);
        Observe(readable); // gives the socket its receive state back for the next wait
        ContinueWaiting();
    }

    /// <summary>
    /// Takes the waiting read, if any (the socket's callback and a cancel may race for it), and completes it
    /// with what is there; with nothing there it waits again.
    /// </summary>
    void ContinueWaiting()
    {
        while (Interlocked.Exchange(ref _waiting, 0) == 1)
        {
            if (TryRead(out var result))
            {
                _pending.SetResult(result);
                return;
            }

            Interlocked.Exchange(ref _waiting, 1); // woken without data (a spurious wake-up)
            if (!_cancelRead && StartReceive())
            {
                return;
            }
        }
    }

    static void Observe(ValueTask<int> readable)
    {
        try
        {
            readable.GetAwaiter().GetResult();
        }
        catch (Exception ex) when (ex is ObjectDisposedException or SocketException or OperationCanceledException)
        {
            // Reset or closed: the receive that follows says so.
        }
    }

    ReadResult IValueTaskSource<ReadResult>.GetResult(short token) => _pending.GetResult(token);

    ValueTaskSourceStatus IValueTaskSource<ReadResult>.GetStatus(short token) => _pending.GetStatus(token);

    void IValueTaskSource<ReadResult>.OnCompleted(Action<object?> continuation, object? state, short token, ValueTaskSourceOnCompletedFlags flags) =>
        _pending.OnCompleted(continuation, state, token, flags);
}
