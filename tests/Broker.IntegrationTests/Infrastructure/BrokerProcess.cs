using System.Diagnostics;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Runs the built broker (Broker.dll next to the tests) as its own process, as an operator would.</summary>
public static class BrokerProcess
{
    public static string DllPath { get; } = Path.Combine(AppContext.BaseDirectory, "Broker.dll");

    public static async Task<(int ExitCode, string StdOut, string StdErr)> RunAsync(IDictionary<string, string>? environment = null, string? stdin = null, params string[] args)
    {
        var start = new ProcessStartInfo("dotnet")
        {
            RedirectStandardOutput = true,
            RedirectStandardError = true,
            RedirectStandardInput = true,
            WorkingDirectory = Directory.CreateTempSubdirectory("ims-broker-").FullName,
        };
        start.ArgumentList.Add(DllPath);
        foreach (var a in args)
        {
            start.ArgumentList.Add(a);
        }

        // Loopback and free ports, so a test that does start the broker never collides with another.
        start.Environment["Broker__Mqtt__Host"] = "127.0.0.1";
        start.Environment["Broker__Mqtt__Port"] = "0";
        start.Environment["Broker__Http__Port"] = "0";
        foreach (var (key, value) in environment ?? new Dictionary<string, string>())
        {
            start.Environment[key] = value;
        }

        using var process = Process.Start(start)!;
        if (stdin is not null)
        {
            await process.StandardInput.WriteLineAsync(stdin);
        }

        process.StandardInput.Close();
        using var cts = new CancellationTokenSource(TimeSpan.FromSeconds(30));
        var stdout = process.StandardOutput.ReadToEndAsync(cts.Token);
        var stderr = process.StandardError.ReadToEndAsync(cts.Token);
        await process.WaitForExitAsync(cts.Token);
        return (process.ExitCode, await stdout, await stderr);
    }
}
