namespace Broker.Engine.Cluster;

/// <summary>
/// Which devices (client ids) of each user are connected, over every node of a cluster: the one truth
/// behind a user's device quota (contract §13 <c>MaxDevices</c>) and its presence (§10). One node alone
/// keeps it in memory (<see cref="LocalDevices"/>); a cluster keeps it in its shared store.
/// </summary>
public interface IDeviceDirectory
{
    /// <summary>
    /// False when the directory starts empty with this process (one node alone): after a crash, presence
    /// corrects what it still shows online. A shared directory outlives a node; the cluster removes a dead
    /// node's devices itself and raises <see cref="ChangedElsewhere"/>.
    /// </summary>
    bool OutlivesProcess { get; }

    /// <summary>
    /// A connection of <paramref name="clientId"/> opens. Null: refused, the user already has
    /// <paramref name="maxDevices"/> other devices connected (0: no quota). The same client id again (a takeover)
    /// is the same device: its newer connection replaces the older. Returns the connection's token for
    /// <see cref="RemoveAsync"/>.
    /// </summary>
    ValueTask<string?> AddAsync(string userId, string clientId, int maxDevices);

    /// <summary>The connection holding <paramref name="token"/> ended; true when the user's device set changed (not when a newer connection holds the device).</summary>
    ValueTask<bool> RemoveAsync(string userId, string clientId, string token);

    /// <summary>The user's connected devices, in the order they connected.</summary>
    ValueTask<string[]> DevicesAsync(string userId);

    /// <summary>Shutdown: every device connected through this node goes; returns the users whose device set changed.</summary>
    ValueTask<IReadOnlyCollection<string>> RemoveThisNodeAsync();

    /// <summary>A user's devices changed other than through this node's connections (a dead node's devices were removed).</summary>
    event Action<string>? ChangedElsewhere;
}
