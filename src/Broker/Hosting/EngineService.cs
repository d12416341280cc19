using Broker.Engine;
using Broker.Ims.Identity;
using Broker.Transport;

namespace Broker.Hosting;

/// <summary>
/// Starts the engine (restoring the store) before Kestrel accepts connections, logs one line per
/// endpoint once listening, and on SIGTERM tells every client the server is going away (v5 0x8B)
/// before Kestrel closes the sockets.
/// </summary>
public sealed partial class EngineService(BrokerEngine engine, DirectoryPersistence directories, Broker.Ims.Blocks.BlockLists blocks, ListenerEndpoints endpoints, IHostApplicationLifetime lifetime, ILogger<EngineService> logger) : IHostedService
{
    public async Task StartAsync(CancellationToken cancellationToken)
    {
        directories.Restore(); // users and groups changed through the admin API, over the configured ones
        blocks.Restore(); // block lists (contract §12)
        await engine.StartAsync(cancellationToken);
        lifetime.ApplicationStarted.Register(() =>
        {
            LogListening(logger, "MQTT over TCP", $"mqtt://{endpoints.MqttEndPoint}");
            LogListening(logger, "MQTT over WebSocket", $"ws://{endpoints.Http?.EndPoint}/mqtt");
            LogListening(logger, "HTTP health", $"http://{endpoints.Http?.EndPoint}/healthz");
            if (endpoints.MqttTls is not null)
            {
                LogListening(logger, "MQTT over TLS", $"mqtts://{endpoints.MqttTls.EndPoint}");
                LogListening(logger, "MQTT over secure WebSocket", $"wss://{endpoints.HttpTls?.EndPoint}/mqtt");
            }
        });
        lifetime.ApplicationStopping.Register(() => engine.StopAsync(CancellationToken.None).GetAwaiter().GetResult());
    }

    public Task StopAsync(CancellationToken cancellationToken) => Task.CompletedTask;

    [LoggerMessage(1000, LogLevel.Information, "Listening for {What} on {Endpoint}")]
    static partial void LogListening(ILogger logger, string what, string endpoint);
}
