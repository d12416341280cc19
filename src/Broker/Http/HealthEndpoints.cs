using Broker.Engine;

namespace Broker.Http;

/// <summary><c>/healthz</c>: the process answers. <c>/readyz</c>: the store is restored, the listeners are up and (cluster) Redis answers.</summary>
public static class HealthEndpoints
{
    public static void MapHealth(this WebApplication app)
    {
        app.MapGet("/healthz", () => Results.Text("ok"));
        app.MapGet("/readyz", (BrokerEngine engine, IHostApplicationLifetime lifetime) =>
            !engine.IsStarted || !lifetime.ApplicationStarted.IsCancellationRequested || lifetime.ApplicationStopping.IsCancellationRequested
                ? Results.Text("not ready", statusCode: StatusCodes.Status503ServiceUnavailable)
                : !engine.Cluster.IsReachable
                ? Results.Text("not ready: the cluster's Redis is out of reach", statusCode: StatusCodes.Status503ServiceUnavailable)
                : Results.Text("ready"));
    }
}
