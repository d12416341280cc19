using System.Diagnostics;
using System.Net;
using System.Net.Sockets;
using System.Text;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>The Redis a broker cluster shares: one redis-server, or a Redis Cluster of several.</summary>
public interface IRedisFixture : IAsyncDisposable
{
    /// <summary>A StackExchange.Redis configuration string (Broker:Cluster:Redis).</summary>
    string Endpoint { get; }

    /// <summary>SIGKILL of every redis-server.</summary>
    Task KillAsync();

    /// <summary>Every redis-server again, on the same ports and directories, ready to serve.</summary>
    Task RestartAsync();
}

/// <summary>
/// A real redis-server as a child process on a free port, with AOF fsync on every write, so a
/// <see cref="KillAsync"/> (SIGKILL) keeps exactly what Redis acknowledged.
/// </summary>
public sealed class RedisServer : IRedisFixture
{
    const string Binary = "/usr/bin/redis-server";
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-redis-");
    readonly int _port;
    readonly string[] _extraArgs;
    Process? _process;

    RedisServer(int port, string[] extraArgs)
    {
        _port = port;
        _extraArgs = extraArgs;
    }

    public int Port => _port;

    public string Endpoint => $"127.0.0.1:{_port}";

    public static Task<RedisServer> StartAsync() => StartAsync(FreePorts(1)[0]);

    /// <summary>On a given port, with more redis-server arguments (a Redis Cluster's nodes).</summary>
    internal static async Task<RedisServer> StartAsync(int port, params string[] extraArgs)
    {
        var server = new RedisServer(port, extraArgs);
        try
        {
            await server.LaunchAsync();
        }
        catch
        {
            await server.DisposeAsync();
            throw;
        }

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
        }.Concat(_extraArgs))
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

    /// <summary>Distinct free loopback ports: all listeners stay open until every port is picked.</summary>
    internal static int[] FreePorts(int count)
    {
        var listeners = new List<TcpListener>(count);
        try
        {
            for (var i = 0; i < count; i++)
            {
                var listener = new TcpListener(IPAddress.Loopback, 0);
                listeners.Add(listener);
                listener.Start();
            }

            return [.. listeners.Select(l => ((IPEndPoint)l.LocalEndpoint).Port)];
        }
        finally
        {
            foreach (var listener in listeners)
            {
                listener.Stop();
                listener.Dispose();
            }
        }
    }
}
