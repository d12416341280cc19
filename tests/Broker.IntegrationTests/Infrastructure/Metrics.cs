namespace Broker.IntegrationTests.Infrastructure;

/// <summary>The broker's Prometheus exposition (<c>/metrics</c>), as an operator's scraper reads it.</summary>
public static class Metrics
{
    public static async Task<string> ReadAsync(TestBroker broker)
    {
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        return await http.GetStringAsync("/metrics");
    }

    /// <summary>The sum of a metric's samples over all label sets.</summary>
    public static double Value(string exposition, string name) =>
        exposition.Split('\n')
            .Where(line => !line.StartsWith('#') && line.LastIndexOf(' ') > 0)
            .Select(line => (Sample: line[..line.LastIndexOf(' ')], Value: line[(line.LastIndexOf(' ') + 1)..]))
            .Where(s => s.Sample == name || s.Sample.StartsWith(name + "{", StringComparison.Ordinal))
            .Sum(s => double.Parse(s.Value, System.Globalization.CultureInfo.InvariantCulture));
}
