using BenchmarkDotNet.Running;

namespace Broker.Microbench;

/// <summary>
/// Runs the microbenchmarks: <c>dotnet run -c Release --project tools/Broker.Microbench -- --filter '*' --job short</c>.
/// Every class has [MemoryDiagnoser], so the summary has bytes allocated per operation.
/// <c>-- index-memory</c> instead measures the subscription index's heap over subscribe/unsubscribe rounds.
/// </summary>
public static class Program
{
    public static void Main(string[] args)
    {
        if (args is ["index-memory"])
        {
            IndexMemory.Run();
            return;
        }

        BenchmarkSwitcher.FromAssembly(typeof(Program).Assembly).Run(args);
    }
}
