using Microsoft.Extensions.Options;

namespace Broker.Configuration;

/// <summary>
/// The host's choice of store, from <c>Broker:Store</c>. The SQLite store's own settings in that section
/// are Broker.Store.Sqlite.SqliteStoreOptions; with <c>Broker:Cluster:Redis</c> set, Redis is the store
/// whatever <see cref="Type"/> says, and <see cref="MaxPendingWrites"/> bounds it too.
/// </summary>
public sealed class StoreOptions
{
    public const string SectionName = "Broker:Store";

    /// <summary>"sqlite" (default: one file under Broker:DataPath, crash-safe) or "memory" (nothing survives the process).</summary>
    public string Type { get; set; } = "sqlite";

    /// <summary>
    /// Store writes queued and not yet committed beyond which connections stop reading PUBLISH packets
    /// until the disk catches up (backpressure on publishers; nothing is dropped or refused).
    /// </summary>
    public int MaxPendingWrites { get; set; } = 100_000;
}

/// <summary>Checks the choice of store at start; each failure names its configuration key.</summary>
public sealed class StoreOptionsValidator : IValidateOptions<StoreOptions>
{
    public ValidateOptionsResult Validate(string? name, StoreOptions o)
    {
        var errors = new List<string>();
        if (o.Type is not "sqlite" and not "memory")
        {
            errors.Add($"Broker:Store:Type must be sqlite or memory (was \"{o.Type}\").");
        }

        if (o.MaxPendingWrites is < 100 or > 100_000_000)
        {
            errors.Add($"Broker:Store:MaxPendingWrites must be between 100 and 100000000 (was {o.MaxPendingWrites}).");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
