using System.Buffers;
using System.Diagnostics;
using System.IO.Pipelines;
using System.Net;
using System.Net.Sockets;
using Microsoft.AspNetCore.Connections;

// Managed heap and RSS per idle connection of the transport alone, with no MQTT on top: the floor
// under the broker's own per-connection state. Each mode keeps one pending zero-byte read per
// connection, as the broker does. The clients live in another process (python3), so only the
// server side is counted.
//
//   dotnet run -c Release --project tools/Broker.TransportFloor -- 5000 kestrel|pipes|socket
if (args.Length != 2 || !int.TryParse(args[0], out var count) || count < 1 || args[1] is not ("kestrel" or "pipes" or "socket"))
{
    Console.Error.WriteLine("usage: Broker.TransportFloor <connections> kestrel|pipes|socket");
    return 2;
}

var mode = args[1];
await using var server = mode == "kestrel" ? await KestrelServer.StartAsync() : (IAsyncDisposable)new SocketServer(mode);
var port = ((IServer)server).Port;

// Warm-up connections first, so that code, pools and the runtime's own buffers are in the baseline.
const int WarmUp = 100;
using var clients = Process.Start(new ProcessStartInfo("python3", ["-c", Clients.Script, port.ToString(), WarmUp.ToString(), count.ToString()])
{
    RedirectStandardInput = true,
})!;
await ((IServer)server).WaitForAsync(WarmUp);
var (heap0, rss0) = Measure();
Console.Error.WriteLine($"{mode}: opening {count} more connections");
await clients.StandardInput.WriteLineAsync("go");
await clients.StandardInput.FlushAsync();
await ((IServer)server).WaitForAsync(WarmUp + count);
var (heap1, rss1) = Measure();
clients.Kill();
Console.WriteLine($"{mode}: {count} idle connections: managed heap {(heap1 - heap0) / (double)count:0} B per connection, RSS {(rss1 - rss0) / (double)count:0} B per connection");
return 0;

static (long Heap, long Rss) Measure()
{
    Thread.Sleep(500); // let the last reads go pending
    GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
    GC.WaitForPendingFinalizers();
    GC.Collect(2, GCCollectionMode.Forced, blocking: true, compacting: true);
    var heap = GC.GetTotalMemory(forceFullCollection: true);
    var rss = long.Parse(File.ReadAllText("/proc/self/statm").Split(' ')[1]) * Environment.SystemPageSize;
    return (heap, rss);
}

interface IServer
{
    int Port { get; }

    Task WaitForAsync(int connections);
}

/// <summary>Counts accepted connections that have a read pending.</summary>
abstract class CountingServer : IServer
{
    int _idle;

    public abstract int Port { get; }

    protected void Idle() => Interlocked.Increment(ref _idle);

    public async Task WaitForAsync(int connections)
    {
        while (Volatile.Read(ref _idle) < connections)
        {
            await Task.Delay(50);
        }
    }
}

/// <summary>Kestrel's socket transport with a connection handler that only awaits its input, as the broker's does.</summary>
sealed class KestrelServer : CountingServer, IAsyncDisposable
{
    readonly WebApplication _app;

    KestrelServer(WebApplication app) => _app = app;

    public override int Port => new Uri(_app.Urls.First()).Port;

    public static async Task<KestrelServer> StartAsync()
    {
        var builder = WebApplication.CreateSlimBuilder();
        builder.Logging.ClearProviders();
        var handler = new Handler();
        builder.Services.AddSingleton(handler);
        builder.WebHost.ConfigureKestrel(k => k.Listen(IPAddress.Loopback, 0, l => l.UseConnectionHandler<Handler>()));
        var app = builder.Build();
        var server = new KestrelServer(app);
        handler.Idle = server.Idle;
        await app.StartAsync();
        return server;
    }

    public async ValueTask DisposeAsync() => await _app.DisposeAsync();

    sealed class Handler : ConnectionHandler
    {
        public Action Idle { get; set; } = () => { };

        public override async Task OnConnectedAsync(ConnectionContext connection)
        {
            var first = connection.Transport.Input.ReadAsync();
            Idle();
            for (var result = await first; !result.IsCompleted; result = await connection.Transport.Input.ReadAsync())
            {
                connection.Transport.Input.AdvanceTo(result.Buffer.End);
            }
        }
    }
}

/// <summary>A socket of our own: "pipes" wraps it in PipeReader/PipeWriter over a NetworkStream, "socket" reads it bare.</summary>
sealed class SocketServer : CountingServer, IAsyncDisposable
{
    readonly Socket _listener = new(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp);
    readonly List<object> _connections = [];
    readonly Task _accepting;

    public SocketServer(string mode)
    {
        _listener.Bind(new IPEndPoint(IPAddress.Loopback, 0));
        _listener.Listen(4096);
        _accepting = AcceptAsync(mode);
    }

    public override int Port => ((IPEndPoint)_listener.LocalEndPoint!).Port;

    async Task AcceptAsync(string mode)
    {
        while (true)
        {
            Socket socket;
            try
            {
                socket = await _listener.AcceptAsync();
            }
            catch (Exception e) when (e is SocketException or ObjectDisposedException)
            {
                return;
            }

            socket.NoDelay = true;
            if (mode == "socket")
            {
                _connections.Add(socket);
                _ = ReadBareAsync(socket);
                continue;
            }

            var stream = new NetworkStream(socket, ownsSocket: true);
            var reader = PipeReader.Create(stream, new StreamPipeReaderOptions(bufferSize: 4096, minimumReadSize: 1024, leaveOpen: true, useZeroByteReads: true));
            var writer = PipeWriter.Create(stream, new StreamPipeWriterOptions(minimumBufferSize: 512, leaveOpen: true));
            _connections.Add((reader, writer));
            _ = ReadPipeAsync(reader);
        }
    }

    async Task ReadPipeAsync(PipeReader reader)
    {
        var first = reader.ReadAsync();
        Idle();
        for (var result = await first; !result.IsCompleted; result = await reader.ReadAsync())
        {
            reader.AdvanceTo(result.Buffer.End);
        }
    }

    async Task ReadBareAsync(Socket socket)
    {
        var first = socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None);
        Idle();
        await first;
        while (true)
        {
            // Data is there: only now is a buffer rented.
            var buffer = ArrayPool<byte>.Shared.Rent(4096);
            var read = await socket.ReceiveAsync(buffer, SocketFlags.None);
            ArrayPool<byte>.Shared.Return(buffer);
            if (read == 0)
            {
                return;
            }

            await socket.ReceiveAsync(Memory<byte>.Empty, SocketFlags.None);
        }
    }

    public async ValueTask DisposeAsync()
    {
        _listener.Dispose();
        await _accepting;
    }
}

static class Clients
{
    // Opens the warm-up connections, then the measured ones when told to, and holds them until killed.
    public const string Script = """
        import socket, sys, time
        port, warm_up, n = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(warm_up)]
        sys.stdin.readline()
        held += [socket.create_connection(("127.0.0.1", port)) for _ in range(n)]
        time.sleep(600)
        """;
}
