using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// A real redis-server as a child process on a free port, with AOF fsync on every write, so a
/// <see cref="KillAsync"/> (SIGKILL) keeps exactly what Redis acknowledged.
/// </summary>
public sealed class RedisServer : IAsyncDisposable
{
    const string Binary = "/usr/bin/redis-server";
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-redis-");
    readonly int _port;
    Process? _process;

    RedisServer(int port) => _port = port;

    public string Endpoint => $"127.0.0.1:{_port}";

    public static async Task<RedisServer> StartAsync()
    {
        var server = new RedisServer(FreePort());
        await server.LaunchAsync();
        return server;
    }

    /// <summary>SIGKILL: no shutdown save, no flush beyond what AOF already wrote.</summary>
    public async Task KillAsync()
    {
        if (_process is { HasExited: false } process)
        {
            process.Kill(entireProcessTree: true);
            await process.WaitForExitAsync();
        }

        _process?.Dispose();
        _process = null;
    }

    /// <summary>Starts again on the same port and directory (it reloads the AOF).</summary>
    public async Task RestartAsync()
    {
        await KillAsync();
        await LaunchAsync();
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _dir.Delete(recursive: true);
    }

    async Task LaunchAsync()
    {
        var start = new ProcessStartInfo(Binary) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var arg in new[]
        {
            "--port", _port.ToString(), "--bind", "127.0.0.1", "--dir", _dir.FullName,
            "--appendonly", "yes", "--appendfsync", "always", "--save", "", "--daemonize", "no",
        })
        {
            start.ArgumentList.Add(arg);
        }

        _process = Process.Start(start)!;
        _process.OutputDataReceived += (_, _) => { };
        _process.ErrorDataReceived += (_, _) => { };
        _process.BeginOutputReadLine();
        _process.BeginErrorReadLine();

        // Ready when it answers PING (it may still be loading the AOF before that: LOADING errors).
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        while (!await PingAsync(timeout.Token))
        {
            if (_process.HasExited)
            {
                throw new InvalidOperationException($"redis-server exited with {_process.ExitCode}");
            }

            await Task.Delay(20, timeout.Token);
        }
    }

    async Task<bool> PingAsync(CancellationToken cancellationToken)
    {
        try
        {
            using var client = new TcpClient();
            await client.ConnectAsync(IPAddress.Loopback, _port, cancellationToken);
            var stream = client.GetStream();
            await stream.WriteAsync("PING\r\n"u8.ToArray(), cancellationToken);
            var buffer = new byte[64];
            var n = await stream.ReadAsync(buffer, cancellationToken);
            return Encoding.ASCII.GetString(buffer, 0, n).StartsWith("+PONG", StringComparison.Ordinal);
        }
        catch (SocketException)
        {
            return false;
        }
        catch (IOException)
        {
            return false;
        }
    }

    static int FreePort()
    {
        using var listener = new TcpListener(IPAddress.Loopback, 0);
        listener.Start();
        return ((IPEndPoint)listener.LocalEndpoint).Port;
    }
}
