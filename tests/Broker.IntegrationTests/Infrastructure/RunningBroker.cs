using System.Diagnostics;
using System.Text.RegularExpressions;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The broker as its own process with the durable (SQLite) store in a data directory of the test's,
/// so it can be killed for real: <see cref="KillAsync"/> is SIGKILL (kill -9), no shutdown code runs.
/// </summary>
public sealed partial class RunningBroker : IAsyncDisposable
{
    readonly Process _process;
    readonly TaskCompletionSource<int> _port = new(TaskCreationOptions.RunContinuationsAsynchronously);
    readonly System.Text.StringBuilder _log = new();

    RunningBroker(Process process)
    {
        _process = process;
        process.OutputDataReceived += (_, e) => OnLine(e.Data);
        process.ErrorDataReceived += (_, e) => OnLine(e.Data);
        process.BeginOutputReadLine();
        process.BeginErrorReadLine();
        process.EnableRaisingEvents = true;
        process.Exited += (_, _) => _port.TrySetException(new InvalidOperationException($"broker exited with {process.ExitCode}:\n{Log}"));
    }

    public int MqttPort { get; private set; }


    public int HttpPort { get; private set; }

    public string Log
    {
        get
        {
            lock (_log)
            {
                return _log.ToString();
            }
        }
    }

    /// <summary>Starts Broker.dll on free loopback ports with the demo users and the store in <paramref name="dataPath"/>; returns once it listens.</summary>
    public static async Task<RunningBroker> StartAsync(string dataPath, IDictionary<string, string>? settings = null)
    {
        var start = new ProcessStartInfo("dotnet") { RedirectStandardOutput = true, RedirectStandardError = true, WorkingDirectory = dataPath };
        start.ArgumentList.Add(BrokerProcess.DllPath);
        var config = new Dictionary<string, string?>
        {
            ["Broker:Mqtt:Host"] = "127.0.0.1",
            ["Broker:Mqtt:Port"] = "0",
            ["Broker:Http:Port"] = "0",
            ["Broker:DataPath"] = Path.Combine(dataPath, "data"),
        };
        TestBroker.AddDemoUsers(config);
        TestBroker.TurnOffUserRateLimits(config); // floods and crash loops test durability, not §13
        foreach (var (key, value) in settings ?? new Dictionary<string, string>())
        {
            config[key] = value;
        }

        foreach (var (key, value) in config)
        {
            start.Environment[key.Replace(":", "__", StringComparison.Ordinal)] = value;
        }

        var broker = new RunningBroker(Process.Start(start)!);
        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(60));
        await broker._port.Task.WaitAsync(timeout.Token);
        return broker;
    }

    /// <summary>kill -9: the process gets no chance to flush, checkpoint or say goodbye.</summary>
    public async Task KillAsync()
    {
        if (!_process.HasExited)
        {
            _process.Kill(entireProcessTree: true);
            await _process.WaitForExitAsync();
        }
    }

    /// <summary>SIGSTOP (<paramref name="stop"/>) or SIGCONT: a node that freezes (a long GC pause, a VM stall) and wakes up later.</summary>
    public async Task FreezeAsync(bool stop)
    {
        using var signal = Process.Start("kill", [stop ? "-STOP" : "-CONT", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]);
        await signal.WaitForExitAsync();
    }

    /// <summary>SIGTERM, as an orchestrator stops a node: the broker drains (v5 DISCONNECT 0x8B) and exits by itself.</summary>
    public async Task<int> TerminateAsync()
    {
        using (var kill = Process.Start("kill", ["-TERM", _process.Id.ToString(System.Globalization.CultureInfo.InvariantCulture)]))
        {
            await kill.WaitForExitAsync();
        }

        using var timeout = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        await _process.WaitForExitAsync(timeout.Token);
        return _process.ExitCode;
    }

    public async ValueTask DisposeAsync()
    {
        await KillAsync();
        _process.Dispose();
    }

    void OnLine(string? line)
    {
        if (line is null)
        {
            return;
        }

        lock (_log)
        {
            _log.AppendLine(line);
        }

        // The MQTT endpoint is logged first, the HTTP one last: ready when both are known.
        var match = ListeningLine().Match(line);
        if (match.Success)
        {
            MqttPort = int.Parse(match.Groups[1].Value);
        }

        var http = HttpLine().Match(line);
        if (http.Success)
        {
            HttpPort = int.Parse(http.Groups[1].Value);
            _port.TrySetResult(MqttPort);
        }
    }

    [GeneratedRegex(@"Listening for MQTT over TCP on mqtt://127\.0\.0\.1:(\d+)")]
    private static partial Regex ListeningLine();

    [GeneratedRegex(@"Listening for HTTP health on http://127\.0\.0\.1:(\d+)")]
    private static partial Regex HttpLine();
}
