using System.Globalization;
using System.Reflection;
using System.Text.Json;
using Broker.IntegrationTests.Infrastructure;
using Broker.Ims.Identity;
using Xunit.Abstractions;

namespace Broker.IntegrationTests.Operations;

/// <summary>
/// Issue #6: the load tool (tools/Broker.Bench, referenced by this project) runs its p2p scenario at QoS 1 for one
/// second against an in-process broker and prints a JSON line that says messages arrived and none was lost.
/// The tool's own entry point is called, with its real command line, so argument parsing and printing are covered.
/// </summary>
public sealed class BenchSmokeTests(ITestOutputHelper output)
{
    const string Password = "bench-pass";

    [Fact]
    public async Task P2pQos1_ForOneSecond_DeliversEveryAckedMessage()
    {
        // The bench's users are <prefix>0..N-1 with one password; p2p pairs sender i (user i) with receiver i (user i+1).
        var hash = PasswordVerifier.Hash(Password);
        await using var broker = await TestBroker.StartAsync(s =>
        {
            TestBroker.TurnOffUserRateLimits(s);
            for (var i = 0; i < 2; i++)
            {
                s[$"Broker:Users:{i}:Name"] = $"bench{i}";
                s[$"Broker:Users:{i}:Role"] = "user";
                s[$"Broker:Users:{i}:PasswordHash"] = hash;
            }
        });

        var (exit, stdout, stderr) = await RunBenchAsync(
            "p2p", "--port", broker.MqttPort.ToString(CultureInfo.InvariantCulture), "--qos", "1",
            "--clients", "2", "--users", "2", "--user-prefix", "bench", "--password", Password,
            "--rate", "200", "--duration", "1", "--warmup", "0", "--payload", "64",
            "--broker-pid", Environment.ProcessId.ToString(CultureInfo.InvariantCulture), "--label", "smoke");

        var line = stdout.Split('\n').Select(l => l.Trim()).LastOrDefault(l => l.StartsWith("{\"scenario\":", StringComparison.Ordinal));
        Assert.True(line is not null, $"no JSON line; exit {exit}\nstdout:\n{stdout}\nstderr:\n{stderr}");
        output.WriteLine(stdout);
        using var json = JsonDocument.Parse(line);
        var r = json.RootElement;
        Assert.True(exit == 0, $"exit {exit}: {line}\n{stderr}");
        Assert.Equal("p2p", r.GetProperty("scenario").GetString());
        Assert.Equal("ims", r.GetProperty("broker").GetString());
        Assert.Equal("smoke", r.GetProperty("label").GetString());
        Assert.Equal(1, r.GetProperty("qos").GetInt32());
        Assert.Equal(2, r.GetProperty("clients").GetInt32());
        Assert.True(r.GetProperty("ok").GetBoolean(), line);

        var published = r.GetProperty("published").GetInt64();
        Assert.True(published > 0, line);
        Assert.Equal(0, r.GetProperty("failed").GetInt64());
        Assert.Equal(published, r.GetProperty("acked").GetInt64());
        // Every acknowledged QoS 1 message of the window arrived: p2p has one recipient per message.
        Assert.Equal(published, r.GetProperty("expected").GetInt64());
        Assert.Equal(published, r.GetProperty("received").GetInt64());
        Assert.Equal(0, r.GetProperty("lost").GetInt64());
        Assert.True(r.GetProperty("p50_ms").GetDouble() >= 0, line);
        if (OperatingSystem.IsLinux())
        {
            // --broker-pid read /proc: here the broker is this process.
            Assert.True(r.GetProperty("rss_kib").GetInt64() > 0, line);
        }
    }

    /// <summary>Runs Broker.Bench's Main in this process, with its console output captured.</summary>
    static async Task<(int Exit, string Stdout, string Stderr)> RunBenchAsync(params string[] args)
    {
        var main = Assembly.Load("Broker.Bench").EntryPoint ?? throw new InvalidOperationException("Broker.Bench has no entry point");
        using var stdout = new StringWriter(CultureInfo.InvariantCulture);
        using var stderr = new StringWriter(CultureInfo.InvariantCulture);
        var (oldOut, oldErr) = (Console.Out, Console.Error);
        Console.SetOut(TextWriter.Synchronized(stdout));
        Console.SetError(TextWriter.Synchronized(stderr));
        try
        {
            // The synthesized Main blocks on the async one: run it off the test's thread.
            var exit = await Task.Run(() => (int)main.Invoke(null, [args])!);
            return (exit, stdout.ToString(), stderr.ToString());
        }
        finally
        {
            Console.SetOut(oldOut);
            Console.SetError(oldErr);
        }
    }
}
