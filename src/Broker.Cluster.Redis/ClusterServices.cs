using Broker.Engine.Cluster;
using Broker.Engine.Store;
using Microsoft.Extensions.Configuration;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Logging;
using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>Cluster mode in the host's services: the shared store and the link replace the embedded store and <see cref="SingleNode"/>.</summary>
public static class ClusterServices
{
    public const string SectionName = "Broker:Cluster";

    /// <summary>Broker:Cluster bound and checked; errors name their key.</summary>
    public static ClusterOptions Load(IConfiguration configuration, List<string> errors)
    {
        ClusterOptions options;
        try
        {
            options = configuration.GetSection(SectionName).Get<ClusterOptions>() ?? new ClusterOptions();
        }
        catch (InvalidOperationException ex)
        {
            errors.Add(ex.Message);
            return new ClusterOptions();
        }

        if (options.RouteDepth is < 1 or > 8)
        {
            errors.Add($"Broker:Cluster:RouteDepth must be between 1 and 8 (was {options.RouteDepth}).");
        }

        if (options.ClaimWait < TimeSpan.Zero || options.ClaimWait > TimeSpan.FromSeconds(30))
        {
            errors.Add($"Broker:Cluster:ClaimWait must be between 00:00:00 and 00:00:30 (was {options.ClaimWait}).");
        }

        if (options.NodeTtl < TimeSpan.FromSeconds(2) || options.NodeTtl > TimeSpan.FromMinutes(5))
        {
            errors.Add($"Broker:Cluster:NodeTtl must be between 00:00:02 and 00:05:00 (was {options.NodeTtl}).");
        }

        if (options.IsEnabled)
        {
            try
            {
                ConfigurationOptions.Parse(options.Redis);
            }
            catch (ArgumentException ex)
            {
                errors.Add($"Broker:Cluster:Redis is not a valid Redis configuration string: {ex.Message}");
            }
        }

        return options;
    }

    /// <summary>Registers the shared store and the link; the node joins (and gets its message id index) before the engine is built.</summary>
    public static void AddRedisCluster(this IServiceCollection services, ClusterOptions options, TimeSpan mailboxTtl, int mailboxCap, int maxMailboxClientIds, int maxPendingWrites)
    {
        services.AddSingleton(options);
        services.AddSingleton<IConnectionMultiplexer>(provider => Connect(options, provider.GetRequiredService<ILoggerFactory>().CreateLogger<RedisClusterLink>()));
        services.AddSingleton(provider => new RedisBrokerStore(provider.GetRequiredService<IConnectionMultiplexer>(), provider.GetRequiredService<ILogger<RedisBrokerStore>>(), maxPendingWrites) { MailboxCap = mailboxCap });
        services.AddSingleton<IBrokerStore>(provider => provider.GetRequiredService<RedisBrokerStore>());
        services.AddSingleton<ISessionStore>(provider => provider.GetRequiredService<RedisBrokerStore>());
        services.AddSingleton(provider =>
        {
            var link = new RedisClusterLink(provider.GetRequiredService<IConnectionMultiplexer>(), provider.GetRequiredService<ISessionStore>(), options,
                provider.GetRequiredService<ILogger<RedisClusterLink>>()) { MailboxTtl = mailboxTtl, MaxMailboxClientIds = maxMailboxClientIds };
            link.RegisterAsync().GetAwaiter().GetResult();
            return link;
        });
        services.AddSingleton<IClusterLink>(provider => provider.GetRequiredService<RedisClusterLink>());
        services.AddSingleton<IDeviceDirectory>(provider => provider.GetRequiredService<RedisClusterLink>().Devices);
    }

    /// <summary>Connects, retrying for half a minute: nodes and Redis often start together.</summary>
    static ConnectionMultiplexer Connect(ClusterOptions options, ILogger logger)
    {
        var config = ConfigurationOptions.Parse(options.Redis);
        config.AbortOnConnectFail = false; // once up, reconnect by itself whenever Redis comes back
        config.ClientName = string.IsNullOrWhiteSpace(options.NodeId) ? Environment.MachineName : options.NodeId;
        var deadline = DateTime.UtcNow.AddSeconds(30);
        var redis = ConnectionMultiplexer.Connect(config);
        while (!redis.IsConnected)
        {
            if (DateTime.UtcNow > deadline)
            {
                throw new InvalidOperationException($"Broker:Cluster:Redis: no Redis answers at {options.Redis}.");
            }

            ClusterLog.RedisFailed(logger, "start", "waiting for " + options.Redis);
            Thread.Sleep(1000);
        }

        return redis;
    }
}
