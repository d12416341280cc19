namespace Broker.Cluster.Redis;

/// <summary>Broker:Cluster. An empty <see cref="Redis"/> means one node alone (the embedded store).</summary>
public sealed class ClusterOptions
{
    /// <summary>A StackExchange.Redis configuration string, e.g. <c>127.0.0.1:6379</c> or several endpoints of a Redis Cluster.</summary>
    public string Redis { get; set; } = "";

    /// <summary>This node's name in logs, metrics and the admin API (default: the machine name).</summary>
    public string NodeId { get; set; } = "";

    /// <summary>How long a CONNECT waits for the node that had the session to let it go (then it goes on: that node's writes are fenced anyway).</summary>
    public TimeSpan ClaimWait { get; set; } = TimeSpan.FromSeconds(2);

    /// <summary>A node that has not renewed its liveness key for this long counts as dead.</summary>
    public TimeSpan NodeTtl { get; set; } = TimeSpan.FromSeconds(5);

    /// <summary>Topic levels that make a route key (one Redis channel and reader index per route): <c>IMS/Group123</c> for 2.</summary>
    public int RouteDepth { get; set; } = 2;

    public bool IsEnabled => !string.IsNullOrWhiteSpace(Redis);
}
