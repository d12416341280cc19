using System.Diagnostics;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// Runs the real mosquitto_pub / mosquitto_sub binaries. CI installs mosquitto-clients; on a machine
/// without them the tests that need them say so and pass without running (never in CI).
/// </summary>
public static class Mosquitto
{
    public static bool Available { get; } = File.Exists("/usr/bin/mosquitto_pub") || Which("mosquitto_pub");

    /// <summary>Skips (returns false) only outside CI; in CI a missing binary fails the test.</summary>
    public static bool Require()
    {
        if (Available)
        {
            return true;
        }

        Assert.True(Environment.GetEnvironmentVariable("CI") is null, "mosquitto-clients must be installed in CI (.ci/run installs it)");
        Console.WriteLine("mosquitto_pub/mosquitto_sub not installed: test skipped locally (apt-get install mosquitto-clients)");
        return false;
    }

    public static async Task<(int ExitCode, string Output)> RunAsync(string tool, params string[] args)
    {
        var start = new ProcessStartInfo(tool) { RedirectStandardOutput = true, RedirectStandardError = true };
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }

        using var process = Process.Start(start)!;
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(20));
        var stdout = process.StandardOutput.ReadToEndAsync(cts.Token);
        var stderr = process.StandardError.ReadToEndAsync(cts.Token);
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await stdout + await stderr);
    }

    /// <summary>A running mosquitto_sub whose output lines arrive one by one.</summary>
    public sealed class Subscriber : IAsyncDisposable
    {
        readonly Process _process;
        readonly System.Threading.Channels.Channel<string> _lines = System.Threading.Channels.Channel.CreateUnbounded<string>();

        Subscriber(Process process)
        {
            _process = process;
            process.OutputDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    _lines.Writer.TryWrite(e.Data);
                }
            };
            process.ErrorDataReceived += (_, e) =>
            {
                if (e.Data is not null)
                {
                    _lines.Writer.TryWrite(e.Data);
                }
            };
            process.BeginOutputReadLine();
            process.BeginErrorReadLine();
        }

        /// <summary>Starts mosquitto_sub with -d so the SUBACK line tells when the subscription is in place.</summary>
        public static async Task<Subscriber> StartAsync(params string[] args)
        {
            // stdbuf: mosquitto_sub writes through stdio, which holds lines back when stdout is a pipe.
            var start = new ProcessStartInfo("stdbuf") { RedirectStandardOutput = true, RedirectStandardError = true };
            start.ArgumentList.Add("-oL");
            start.ArgumentList.Add("mosquitto_sub");
            start.ArgumentList.Add("-d");
            foreach (var a in args)
            {
                start.ArgumentList.Add(a);
            }

            var sub = new Subscriber(Process.Start(start)!);
            try
            {
                await sub.WaitForLineAsync(l => l.Contains("received SUBACK", StringComparison.Ordinal));
                return sub;
            }
            catch
            {
                await sub.DisposeAsync(); // never leave a mosquitto_sub behind
                throw;
            }
        }

        public async Task<string> WaitForLineAsync(Func<string, bool> predicate, TimeSpan? timeout = null)
        {
            using var cts = new CancellationTokenSource(timeout ?? TestClient.Timeout);
            try
            {
                while (true)
                {
                    var line = await _lines.Reader.ReadAsync(cts.Token);
                    if (predicate(line))
                    {
                        return line;
                    }
                }
            }
            catch (OperationCanceledException)
            {
                throw new TimeoutException("mosquitto_sub printed no matching line");
            }
        }

        /// <summary>The next message line (-v output "topic payload"), skipping -d debug lines.</summary>
        public Task<string> NextMessageAsync() =>
            WaitForLineAsync(l => !l.StartsWith("Client ", StringComparison.Ordinal) && !l.StartsWith("Subscribed", StringComparison.Ordinal));

        public async ValueTask DisposeAsync()
        {
            if (!_process.HasExited)
            {
                _process.Kill();
                await _process.WaitForExitAsync();
            }

            _process.Dispose();
        }
    }

    static bool Which(string tool) =>
        (Environment.GetEnvironmentVariable("PATH") ?? "").Split(':').Any(dir => File.Exists(Path.Combine(dir, tool)));
}
