using System.Buffers;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Broker.IntegrationTests.Infrastructure;
using Broker.Transport;

namespace Broker.IntegrationTests.Host;

/// <summary>
/// The own listener's transport (<see cref="SocketPipe"/>, <see cref="SocketOutput"/>) over a real loopback
/// socket pair: what the engine relies on from a pipe. The MQTT behaviour over it is in TcpTransportTests.
/// </summary>
public sealed class SocketPipeTests : IAsyncLifetime
{
    Socket _server = null!; // the broker's end, under test
    Socket _client = null!; // the peer
    SocketPipe _pipe = null!;

    public async Task InitializeAsync()
    {
        using var listener = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        listener.Listen(1);
        _client = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
        var accepted = listener.AcceptAsync();
        await _client.ConnectAsync(listener.LocalEndPoint!);
        _server = await accepted;
        _pipe = new SocketPipe(_server);
    }

    public Task DisposeAsync()
    {
        _pipe.Complete();
        _pipe.Output.Complete();
        _server.Dispose();
        _client.Dispose();
        return Task.CompletedTask;
    }

    [Fact]
    public async Task APacketLargerThanOneBuffer_IsReadWhole_AndWhatIsNotConsumedIsReadAgain()
    {
        var sent = Pattern(10_000);
        await _client.SendAsync(sent);

        // As the engine's frame reader does while a packet is incomplete: nothing consumed, everything examined.
        ReadResult result;
        while (true)
        {
            result = await _pipe.ReadAsync();
            if (result.Buffer.Length == sent.Length)
            {
                break;
            }

            _pipe.AdvanceTo(result.Buffer.Start, result.Buffer.End);
        }

        Assert.Equal(sent, result.Buffer.ToArray());
        _pipe.AdvanceTo(result.Buffer.GetPosition(4_000)); // one packet taken: the rest is there without a receive
        Assert.True(_pipe.TryRead(out result));
        Assert.Equal(sent[4_000..], result.Buffer.ToArray());
        _pipe.AdvanceTo(result.Buffer.End);
        Assert.False(_pipe.TryRead(out _)); // all consumed, nothing more sent
    }

    [Fact]
    public async Task CancelPendingRead_EndsTheWaitingRead_AndDataSentLaterIsStillRead()
    {
        var read = _pipe.ReadAsync();
        Assert.False(read.IsCompleted);

        _pipe.CancelPendingRead();
        var result = await read;
        Assert.True(result.IsCanceled);
        Assert.False(result.IsCompleted);
        _pipe.AdvanceTo(result.Buffer.End);

        await _client.SendAsync(new byte[] { 0xC0, 0x00 });
        result = await _pipe.ReadAsync();
        Assert.False(result.IsCanceled);
        Assert.Equal([0xC0, 0x00], result.Buffer.ToArray());
    }

    [Fact]
    public async Task CancelPendingRead_WithNoReadWaiting_CancelsTheNextOne()
    {
        _pipe.CancelPendingRead();
        Assert.True((await _pipe.ReadAsync()).IsCanceled);
    }

    [Fact]
    public async Task ACancelledToken_EndsTheRead_WithOperationCanceled()
    {
        // The engine reads the CONNECT with the connect timeout's token.
        using var timeout = new CancellationTokenSource();
        var read = _pipe.ReadAsync(timeout.Token);
        await timeout.CancelAsync();
        await Assert.ThrowsAnyAsync<OperationCanceledException>(async () => await read);
    }

    [Fact]
    public async Task ThePeerClosing_CompletesTheInput_AfterWhatItSentLast()
    {
        await _client.SendAsync(new byte[] { 0xE0, 0x00 }); // a DISCONNECT, then FIN
        _client.Shutdown(SocketShutdown.Send);

        var data = new List<byte>();
        ReadResult result;
        do
        {
            result = await _pipe.ReadAsync();
            data.AddRange(result.Buffer.ToArray());
            _pipe.AdvanceTo(result.Buffer.End);
        }
        while (!result.IsCompleted);

        Assert.Equal([0xE0, 0x00], data);
    }

    [Fact]
    public async Task AWaitingRead_WhenTheListenerClosesTheSocket_CompletesTheInput()
    {
        // The wake-up runs in the socket's callback: a throw there would end the process, not one connection.
        var read = _pipe.ReadAsync();
        Assert.False(read.IsCompleted);
        _server.Dispose();

        Assert.True((await read.AsTask().WaitAsync(TestClient.Timeout)).IsCompleted);
        Assert.True(_pipe.TryRead(out var again) && again.IsCompleted);
    }

    [Fact]
    public async Task AFlushOfSeveralBuffers_ArrivesWhole_AndInOrder()
    {
        var expected = Pattern(100 + 5_000 + 70_000);
        var at = 0;
        foreach (var size in new[] { 100, 5_000, 70_000 })
        {
            var span = _pipe.Output.GetSpan(size);
            expected.AsSpan(at, size).CopyTo(span);
            _pipe.Output.Advance(size);
            at += size;
        }

        var received = ReceiveAsync(expected.Length);
        var flush = await _pipe.Output.FlushAsync();
        Assert.False(flush.IsCanceled || flush.IsCompleted);
        Assert.Equal(expected, await received);
    }

    [Fact]
    public async Task AFlushToAPeerThatDoesNotRead_Waits_UntilCancelPendingFlush()
    {
        _server.SendBufferSize = 4096;
        _client.ReceiveBufferSize = 4096;
        var chunk = Pattern(64 * 1024);
        ValueTask<FlushResult> flush;
        var written = 0;
        do
        {
            _pipe.Output.Write(chunk);
            written += chunk.Length;
            flush = _pipe.Output.FlushAsync();
        }
        while (flush.IsCompletedSuccessfully && written < 64 * 1024 * 1024);

        Assert.False(flush.IsCompleted); // the kernel's buffers are full: the flush waits for the peer
        _pipe.Output.CancelPendingFlush();
        Assert.True((await flush).IsCanceled);
    }

    [Fact]
    public async Task AFlushToAPeerThatReadsSlowly_CompletesWhenItHasReadEverything()
    {
        var expected = Pattern(32 * 1024 * 1024); // more than loopback's socket buffers hold (tcp_wmem + tcp_rmem)
        _pipe.Output.Write(expected);
        var flush = _pipe.Output.FlushAsync();
        Assert.False(flush.IsCompleted);

        Assert.Equal(expected, await ReceiveAsync(expected.Length));
        Assert.False((await flush).IsCanceled);
    }

    [Fact]
    public async Task AFlushAfterThePeerReset_CompletesTheOutput()
    {
        _client.LingerState = new LingerOption(true, 0); // close with RST
        _client.Close();
        var result = await _pipe.ReadAsync(); // the reset is seen as the end of the input
        Assert.True(result.IsCompleted);

        // The first send after a reset may still be taken by the kernel; the next fails.
        var flush = default(FlushResult);
        for (var i = 0; i < 10 && !flush.IsCompleted; i++)
        {
            _pipe.Output.Write(Pattern(1_000));
            flush = await _pipe.Output.FlushAsync();
        }

        Assert.True(flush.IsCompleted);
    }

    /// <summary>Allocation budget of the transport (docs/performance.md): bytes per packet read and packet flushed.</summary>
    const int ReadAndFlushBudget = 16; // measured 0: buffers come from the pool and go back to it

    [Fact]
    public void APacketReadAndAPacketFlushed_AllocateNothing_OnceWarm()
    {
        // The per-packet path of an idle-then-busy connection: the packet arrives, is read (from the kernel, with
        // a buffer from the pool), consumed (the buffer goes back), and one packet is written and flushed.
        var packet = new byte[] { 0x30, 0x0A, 0x00, 0x03, (byte)'I', (byte)'M', (byte)'S', (byte)'h', (byte)'e', (byte)'l', (byte)'l', (byte)'o' };
        var echo = new byte[packet.Length];
        void RoundTrip()
        {
            _client.Send(packet);
            _server.Poll(-1, SelectMode.SelectRead); // the packet is there: the read completes at once, on this thread
#pragma warning disable CA2012 // each consumed once, below: completing at once is what this checks
            var read = _pipe.ReadAsync();
            Assert.True(read.IsCompletedSuccessfully);
            var result = read.GetAwaiter().GetResult();
            Assert.True(result.Buffer.Length == packet.Length); // (Assert.Equal allocates a comparer per call)
            _pipe.AdvanceTo(result.Buffer.End);
            _pipe.Output.Write(packet);
            var flush = _pipe.Output.FlushAsync();
            Assert.True(flush.IsCompletedSuccessfully);
            Assert.False(flush.GetAwaiter().GetResult().IsCompleted);
#pragma warning restore CA2012
            var at = 0;
            while (at < echo.Length)
            {
                at += _client.Receive(echo, at, echo.Length - at, SocketFlags.None);
            }
        }

        for (var i = 0; i < 200; i++)
        {
            RoundTrip(); // warm-up: JIT, the pool's per-thread cache
        }

        const int Rounds = 2_000;
        var before = GC.GetAllocatedBytesForCurrentThread();
        for (var i = 0; i < Rounds; i++)
        {
            RoundTrip();
        }

        var perPacket = (GC.GetAllocatedBytesForCurrentThread() - before) / (double)Rounds;
        Assert.True(perPacket <= ReadAndFlushBudget, $"{perPacket} B per packet read and flushed (budget {ReadAndFlushBudget})");
    }

    async Task<byte[]> ReceiveAsync(int length)
    {
        var received = new byte[length];
        var at = 0;
        while (at < length)
        {
            var n = await _client.ReceiveAsync(received.AsMemory(at));
            Assert.NotEqual(0, n);
            at += n;
        }

        return received;
    }

    static byte[] Pattern(int length)
    {
        var bytes = new byte[length];
        for (var i = 0; i < length; i++)
        {
            bytes[i] = (byte)(i * 7 + (i >> 8));
        }

        return bytes;
    }
}
