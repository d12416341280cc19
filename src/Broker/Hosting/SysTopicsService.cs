using System.Reflection;
using System.Text;
using Broker.Engine;
using Broker.Engine.Policy;
using MQTTnet.Protocol;

namespace Broker.Hosting;

/// <summary>
/// The usual <c>$SYS/broker/...</c> topics, as mosquitto publishes them: retained, refreshed every
/// <c>Broker:Sys:Interval</c> (0 turns them off). They are read-only for clients (the engine refuses publishes to $SYS).
/// </summary>
public sealed class SysTopicsService(BrokerEngine engine, TimeProvider time, IConfiguration configuration, ILogger<SysTopicsService> logger) : BackgroundService
{
    static readonly ClientPrincipal Broker = new("$SYS", "$SYS", "admin");
    static readonly string Version = typeof(SysTopicsService).Assembly.GetCustomAttribute<AssemblyInformationalVersionAttribute>()?.InformationalVersion ?? "0";

    protected override async Task ExecuteAsync(CancellationToken stoppingToken)
    {
        var interval = configuration.GetValue("Broker:Sys:Interval", TimeSpan.FromSeconds(10));
        if (interval == TimeSpan.Zero)
        {
            return; // off, as mosquitto's sys_interval 0
        }

        var started = time.GetUtcNow();
        using var timer = new PeriodicTimer(interval, time);
        try
        {
            do
            {
                var c = engine.Counters;
                await Publish("$SYS/broker/version", Version);
                await Publish("$SYS/broker/uptime", ((long)(time.GetUtcNow() - started).TotalSeconds).ToString());
                await Publish("$SYS/broker/clients/connected", c.Connections.ToString());
                await Publish("$SYS/broker/sessions/count", engine.SessionCount.ToString());
                await Publish("$SYS/broker/subscriptions/count", engine.SubscriptionCount.ToString());
                await Publish("$SYS/broker/retained/count", engine.RetainedCount.ToString());
                await Publish("$SYS/broker/messages/received", c.Received.ToString());
                await Publish("$SYS/broker/messages/sent", c.Sent.ToString());
                await Publish("$SYS/broker/messages/dropped", c.Dropped.ToString());
            }
            while (await timer.WaitForNextTickAsync(stoppingToken));
        }
        catch (OperationCanceledException)
        {
        }
        catch (Exception ex)
        {
            logger.LogError(ex, "Publishing $SYS topics failed");
        }
    }

    ValueTask Publish(string topic, string value) =>
        engine.PublishAsync(Broker, topic, Encoding.UTF8.GetBytes(value), MqttQualityOfServiceLevel.AtMostOnce, retain: true);
}
