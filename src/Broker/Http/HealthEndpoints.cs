using Broker.Engine;

namespace Broker.Http;

/// <summary><c>/healthz</c>: the process answers. <c>/readyz</c>: the store is restored and the listeners are up.</summary>
public static class HealthEndpoints
{
    public static void MapHealth(this WebApplication app)
    {
        app.MapGet("/healthz", () => Results.Text("ok"));
        app.MapGet("/readyz", (BrokerEngine engine, IHostApplicationLifetime lifetime) =>
            engine.IsStarted && lifetime.ApplicationStarted.IsCancellationRequested && !lifetime.ApplicationStopping.IsCancellationRequested
                ? Results.Text("ready")
                : Results.Text("not ready", statusCode: StatusCodes.Status503ServiceUnavailable));
    }
}
