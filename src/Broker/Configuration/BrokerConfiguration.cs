using Broker.Engine.Options;
using Broker.Ims.Options;
using Broker.Store.Sqlite;
using Broker.Transport;
using Microsoft.Extensions.Options;

namespace Broker.Configuration;

/// <summary>
/// Every setting, bound and checked, one class per room: the engine's, the IM policy's, the MQTT
/// listener's, the host's choice of store and the SQLite store's. All come from the one <c>Broker</c>
/// section; which class reads a key is an inside matter, the keys are the contract.
/// </summary>
public sealed record BrokerSettings(EngineOptions Engine, ImsOptions Ims, ListenerOptions Listener, StoreOptions Store, SqliteStoreOptions Sqlite);

/// <summary>Binds and validates every setting once, at start; a bad value becomes an error naming its key.</summary>
public static class BrokerConfiguration
{
    public static BrokerSettings Load(IConfiguration configuration)
    {
        var section = configuration.GetSection(EngineOptions.SectionName);
        EngineOptions engine;
        ImsOptions ims;
        ListenerOptions listener;
        StoreOptions store;
        SqliteStoreOptions sqlite;
        try
        {
            // Each class takes its keys from the shared section and leaves the others' alone.
            engine = section.Get<EngineOptions>() ?? new EngineOptions();
            ims = section.Get<ImsOptions>() ?? new ImsOptions();
            listener = configuration.GetSection(ListenerOptions.SectionName).Get<ListenerOptions>() ?? new ListenerOptions();
            store = configuration.GetSection(StoreOptions.SectionName).Get<StoreOptions>() ?? new StoreOptions();
            sqlite = configuration.GetSection(StoreOptions.SectionName).Get<SqliteStoreOptions>() ?? new SqliteStoreOptions();

            // DataPath is Broker:DataPath, not Broker:Store:DataPath: set it from there whatever the binder found.
            sqlite.DataPath = section[nameof(SqliteStoreOptions.DataPath)] ?? SqliteStoreOptions.DefaultDataPath;
        }
        catch (InvalidOperationException ex)
        {
            // The binder's message names the key: "Failed to convert configuration value at 'Broker:Mqtt:Port' ...".
            throw new BrokerConfigurationException([ex.Message]);
        }

        ImsOptionsDefaults.Apply(ims);
        var errors = new List<string>();
        Collect(new EngineOptionsValidator().Validate(null, engine), errors);
        Collect(new ImsOptionsValidator().Validate(null, ims), errors);
        Collect(new ListenerOptionsValidator().Validate(null, listener), errors);
        Collect(new StoreOptionsValidator().Validate(null, store), errors);
        Collect(new SqliteStoreOptionsValidator().Validate(null, sqlite), errors);
        Port(configuration, "Broker:Http:Port", 8080, errors);

        Interval(configuration, "Broker:Sys:Interval", errors);
        Interval(configuration, "Broker:Memory:IdleCollect", errors);

        if (errors.Count > 0)
        {
            throw new BrokerConfigurationException(errors);
        }

        return new BrokerSettings(engine, ims, listener, store, sqlite);
    }

    /// <summary>A period of the host's background services, 10 s by default: 00:00:00 (off) or between 1 s and 1 h.</summary>
    static void Interval(IConfiguration configuration, string key, List<string> errors)
    {
        if (!TimeSpan.TryParse(configuration[key] ?? "00:00:10", System.Globalization.CultureInfo.InvariantCulture, out var interval)
            || (interval != TimeSpan.Zero && (interval < TimeSpan.FromSeconds(1) || interval > TimeSpan.FromHours(1))))
        {
            errors.Add($"{key} must be 00:00:00 (off) or between 00:00:01 and 01:00:00 (was {configuration[key]}).");
        }
    }

    /// <summary>Broker:Cluster, checked like the rest (errors name their key).</summary>
    public static Broker.Cluster.Redis.ClusterOptions LoadCluster(IConfiguration configuration)
    {
        var errors = new List<string>();
        var cluster = Broker.Cluster.Redis.ClusterServices.Load(configuration, errors);
        if (errors.Count > 0)
        {
            throw new BrokerConfigurationException(errors);
        }

        return cluster;
    }

    /// <summary>A port setting outside the options classes (host listeners): 0-65535, else an error naming the key.</summary>
    internal static int Port(IConfiguration configuration, string key, int fallback, List<string> errors)
    {
        var text = configuration[key];
        if (text is null)
        {
            return fallback;
        }

        if (!int.TryParse(text, out var port) || port is < 0 or > 65535)
        {
            errors.Add($"{key} must be between 0 and 65535 (was {text}).");
        }

        return port;
    }

    static void Collect(ValidateOptionsResult result, List<string> errors)
    {
        if (result.Failed)
        {
            errors.AddRange(result.Failures);
        }
    }
}

public sealed class BrokerConfigurationException(IReadOnlyList<string> errors)
    : Exception("Invalid configuration: " + string.Join(" ", errors))
{
    public IReadOnlyList<string> Errors { get; } = errors;
}
