using Broker.Configuration;
using Broker.Engine;
using Broker.Cluster.Redis;
using Broker.Engine.Admission;
using Broker.Engine.Cluster;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Store;
using Broker.Admin;
using Broker.Hosting;
using Broker.Http;
using Prometheus;
using Broker.Ims;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Store.Sqlite;
using Broker.Transport;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Connections;
using MQTTnet.AspNetCore;
using Serilog;

namespace Broker;

/// <summary>Builds the host: configuration, logging, the engine and its policy, Kestrel's listeners.</summary>
public static class BrokerApp
{
    /// <summary>
    /// A registry of this broker's own: its IMS.Broker meter plus process and runtime statistics. Not the
    /// static default registry, so that two brokers in one process (tests) never mix their figures.
    /// </summary>
    static CollectorRegistry MetricsRegistry(WebApplication app)
    {
        var registry = Prometheus.Metrics.NewCustomRegistry();
        DotNetStats.Register(registry);
        var meter = app.Services.GetRequiredService<BrokerCounters>().Meter;
        var adapter = MeterAdapter.StartListening(new MeterAdapterOptions
        {
            Registry = registry,
            MetricFactory = Prometheus.Metrics.WithCustomRegistry(registry),
            InstrumentFilterPredicate = instrument => ReferenceEquals(instrument.Meter, meter),
        });
        app.Lifetime.ApplicationStopped.Register(adapter.Dispose);
        return registry;
    }

    /// <param name="overrides">Settings laid over every other source (tests use them for ports and users).</param>
    /// <param name="configureServices">Last word on services (tests swap the clock).</param>
    public static WebApplication Create(string[] args, IDictionary<string, string?>? overrides = null, string? environment = null, Action<IServiceCollection>? configureServices = null)
    {
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions
        {
            Args = args,
            // appsettings*.json sit next to the binary, whatever the working directory (which holds ./data).
            ContentRootPath = AppContext.BaseDirectory,
            EnvironmentName = environment,
        });
        if (overrides is not null)
        {
            builder.Configuration.AddInMemoryCollection(overrides);
        }

        var (engineOptions, imsOptions, listener, store, sqlite) = BrokerConfiguration.Load(builder.Configuration);
        var cluster = BrokerConfiguration.LoadCluster(builder.Configuration);
        var tls = TlsSettings.Load(builder.Configuration);

        // ReadFrom.Services: sinks registered as services (ILogEventSink) are added too; tests capture lines that way.
        // preserveStaticLogger: this host's loggers write to this host's own Serilog logger, never to the static
        // Serilog.Log. Without it, building the host sets Log.Logger, every ILogger created afterwards reads
        // Log.Logger at that moment, and disposing the host calls Log.CloseAndFlush (Log.Logger becomes silent):
        // with two hosts in one process (the tests), one broker's lines went to the other's sinks, or nowhere.
        builder.Services.AddSerilog(
            (services, log) => log.ReadFrom.Configuration(builder.Configuration).ReadFrom.Services(services).Enrich.FromLogContext(),
            preserveStaticLogger: true);

        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(engineOptions));
        builder.Services.AddSingleton(Microsoft.Extensions.Options.Options.Create(listener));
        builder.Services.AddSingleton(imsOptions);
        builder.Services.AddSingleton(TimeProvider.System);
        builder.Services.AddSingleton<BrokerCounters>();
        if (cluster.IsEnabled)
        {
            // Cluster mode (Broker:Cluster:Redis): sessions, queues and routes are shared through Redis.
            builder.Services.AddRedisCluster(cluster, engineOptions.OfflineP2PTtl, engineOptions.MaxQueuedMessages, engineOptions.Limits.MaxMailboxClientIds, store.MaxPendingWrites);
        }
        else
        {
            builder.Services.AddSingleton<IBrokerStore>(services => store.Type == "memory"
                ? new InMemoryBrokerStore()
                : SqliteBrokerStore.Open(sqlite.DataPath, sqlite.FullSync, services.GetRequiredService<ILogger<SqliteBrokerStore>>(), sqlite.CommitDelay, store.MaxPendingWrites));
            builder.Services.AddSingleton<IClusterLink>(SingleNode.Instance);
            builder.Services.AddSingleton<IDeviceDirectory, LocalDevices>();
        }

        // The store's other rooms: the policy's records and the client-id bindings.
        builder.Services.AddSingleton(services => (IPolicyRecords)services.GetRequiredService<IBrokerStore>());
        builder.Services.AddSingleton(services => (IClientIdBindings)services.GetRequiredService<IBrokerStore>());
        builder.Services.AddSingleton<IUserDirectory>(new UserDirectory(imsOptions.Users.Select(u => new UserAccount(u.Name, u.PasswordHash, u.Role))));
        builder.Services.AddSingleton<IGroupDirectory>(new GroupDirectory(imsOptions.Groups.Select(g => KeyValuePair.Create(g.Id, (IEnumerable<string>)g.Members))));
        builder.Services.AddSingleton<ConnectionAdmission>();
        builder.Services.AddSingleton<PasswordCheckGate>();
        builder.Services.AddSingleton<PasswordVerifier>();
        builder.Services.AddSingleton<DirectoryPersistence>();
        builder.Services.AddSingleton<Broker.Ims.Blocks.BlockLists>();
        builder.Services.AddSingleton<Broker.Ims.Limits.UserLimits>();
        builder.Services.AddSingleton<IBrokerPolicy, ImsPolicy>();
        builder.Services.AddSingleton<BrokerEngine>();
        builder.Services.AddHostedService<EngineService>();
        if (listener.Transport == "sockets")
        {
            builder.Services.AddHostedService<SocketListener>(); // after the engine: it accepts once the store is restored
        }

        builder.Services.AddHostedService<SysTopicsService>();
        builder.Services.AddHostedService<IdleCollector>();
        builder.Services.AddSingleton<AdminAuthentication>();
        builder.Services.AddOpenApi();
        builder.Services.AddConnections();
        configureServices?.Invoke(builder.Services);

        var endpoints = new ListenerEndpoints();
        builder.Services.AddSingleton(endpoints);
        var httpPort = builder.Configuration.GetValue("Broker:Http:Port", 8080);
        if (listener.InlineIo)
        {
            // Read by the runtime when its first socket is created, so it is set before Kestrel binds
            // (process-wide: it cannot be set per listener; see Broker:Mqtt:InlineIo).
            Environment.SetEnvironmentVariable("DOTNET_SYSTEM_NET_SOCKETS_INLINE_COMPLETIONS", "1");
        }

        builder.WebHost.UseSockets(sockets => sockets.UnsafePreferInlineScheduling = listener.InlineIo);
        builder.WebHost.ConfigureKestrel(kestrel =>
        {
            // Broker:Limits:MaxConnections is one count over every listener, Kestrel's and the own TCP
            // listener's, kept by ConnectionAdmission; Kestrel's own limits would count only its share.
            var admission = kestrel.ApplicationServices.GetRequiredService<ConnectionAdmission>();
            var address = listener.BindAddress();
            if (listener.Transport == "kestrel")
            {
                kestrel.Listen(address, listener.Port, listen =>
                {
                    listen.UseAdmission(admission);
                    listen.UseConnectionHandler<BrokerConnectionHandler>();
                    endpoints.Mqtt = listen;
                });
            }

            kestrel.Listen(address, httpPort, listen =>
            {
                listen.UseAdmission(admission);
                endpoints.Http = listen;
            });
            if (tls is not null)
            {
                // Admission before the TLS handshake: a refused connection costs no handshake.
                kestrel.Listen(address, tls.MqttPort, listen =>
                {
                    listen.UseAdmission(admission);
                    listen.UseHttps(tls.Certificate);
                    listen.UseConnectionHandler<BrokerConnectionHandler>();
                    endpoints.MqttTls = listen;
                });
                kestrel.Listen(address, tls.HttpPort, listen =>
                {
                    listen.UseAdmission(admission);
                    listen.UseHttps(tls.Certificate);
                    endpoints.HttpTls = listen;
                });
            }
        });

        var app = builder.Build();

        // A user changed or deleted through another node's admin API (cluster): its connections here close too,
        // as they do on the node that made the change (its DirectoryPersistence has applied it already).
        var brokerEngine = app.Services.GetRequiredService<BrokerEngine>();
        _ = app.Services.GetRequiredService<DirectoryPersistence>(); // its handler first: the directory changes, then connections close
        app.Services.GetRequiredService<IPolicyRecords>().ChangedElsewhere += (kind, user, _) =>
        {
            if (kind == DirectoryPersistence.UserKind)
            {
                brokerEngine.DisconnectUser(user);
            }
        };
        BrokerGauges.Register(app.Services.GetRequiredService<BrokerCounters>(), app.Services.GetRequiredService<BrokerEngine>(), app.Services.GetRequiredService<IBrokerStore>());
        app.UseSerilogRequestLogging(o =>
        {
            o.Logger = app.Services.GetRequiredService<Serilog.ILogger>(); // this host's logger (the default is the static Log)
            o.GetLevel = (http, _, ex) =>
                ex is not null || http.Response.StatusCode >= 500 ? Serilog.Events.LogEventLevel.Error
                : http.Request.Path.StartsWithSegments("/api") ? Serilog.Events.LogEventLevel.Information
                : Serilog.Events.LogEventLevel.Debug;
        });
        // The browser chat page (wwwroot/chat) and the MQTT.js bundle it loads (wwwroot/lib).
        app.UseStaticFiles();
        app.MapGet("/chat", () => Results.Redirect("/chat/index.html")); // routing matches /chat/ too
        app.MapHealth();
        app.MapMetrics("/metrics", MetricsRegistry(app));
        app.MapOpenApi();
        app.MapAdminApi();
        app.MapConnectionHandler<BrokerConnectionHandler>("/mqtt", options =>
        {
            options.Transports = HttpTransportType.WebSockets;
            options.WebSockets.SubProtocolSelector = MqttSubProtocolSelector.SelectSubProtocol;
        });
        return app;
    }
}
