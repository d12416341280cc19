using Microsoft.Extensions.Options;

namespace Broker.Store.Sqlite;

/// <summary>
/// The SQLite store's own settings: <c>Broker:DataPath</c> and, from <c>Broker:Store</c>, Synchronous and
/// CommitDelay. Which store runs and its write bound (Type, MaxPendingWrites) are the host's choice, shared
/// with the Redis store: Broker.Configuration.StoreOptions.
/// </summary>
public sealed class SqliteStoreOptions
{
    public const string DefaultDataPath = "data";

    /// <summary>Where the store keeps its file, relative to the working directory (key <c>Broker:DataPath</c>).</summary>
    public string DataPath { get; set; } = DefaultDataPath;

    /// <summary>
    /// "full": every commit reaches the disk before the ack (survives power loss); "normal": survives a
    /// process crash (kill -9) but not a power cut, for more throughput (SQLite PRAGMA synchronous).
    /// </summary>
    public string Synchronous { get; set; } = "full";

    /// <summary>
    /// How long the writer lets changes gather before it commits (0 to 100 ms). A subscriber's PUBACK
    /// that arrives within it cancels the delivery it acknowledges, so neither is written; the price is
    /// up to this much more before the publisher's own PUBACK (as PostgreSQL's commit_delay).
    /// </summary>
    public TimeSpan CommitDelay { get; set; } = TimeSpan.FromMilliseconds(2);

    public bool FullSync => Synchronous == "full";
}

/// <summary>Checks the SQLite store's settings at start; each failure names its configuration key.</summary>
public sealed class SqliteStoreOptionsValidator : IValidateOptions<SqliteStoreOptions>
{
    public ValidateOptionsResult Validate(string? name, SqliteStoreOptions o)
    {
        var errors = new List<string>();
        if (string.IsNullOrWhiteSpace(o.DataPath))
        {
            errors.Add("Broker:DataPath must not be empty.");
        }

        if (o.Synchronous is not "full" and not "normal")
        {
            errors.Add($"Broker:Store:Synchronous must be full or normal (was \"{o.Synchronous}\").");
        }

        var delay = (long)o.CommitDelay.TotalMilliseconds;
        if (delay is < 0 or > 100)
        {
            errors.Add($"Broker:Store:CommitDelay (milliseconds) must be between 0 and 100 (was {delay}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
