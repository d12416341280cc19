namespace Broker.Engine.Store;

/// <summary>
/// Small named records a policy keeps next to the broker's state (the admin API's users and groups, block
/// lists): the latest value per (kind, key); a null value is a deletion that must also survive.
/// </summary>
public interface IPolicyRecords
{
    IReadOnlyList<(string Key, byte[]? Value)> LoadRecords(string kind);

    /// <summary>Stores or (null) deletes a record; completes when durable.</summary>
    ValueTask SaveRecordAsync(string kind, string key, byte[]? value);

    /// <summary>
    /// A record changed by another node of the cluster (kind, key, the value now; null: deleted), so each
    /// node's copy follows within a moment. Never raised by a store that only this process writes.
    /// </summary>
    event Action<string, string, byte[]?>? ChangedElsewhere;

    /// <summary>
    /// Changes made elsewhere may have been missed (the connection to a shared store was cut and is back):
    /// load the records again. Never raised by a store that only this process writes.
    /// </summary>
    event Action? Resync;
}
