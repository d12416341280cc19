namespace Broker.Engine.Cluster;

/// <summary>One node alone: the connected devices of each user in memory, kept only while the user has one.</summary>
public sealed class LocalDevices : IDeviceDirectory
{
    readonly Dictionary<string, List<(string ClientId, string Token)>> _users = new(StringComparer.Ordinal); // under _gate
    readonly Lock _gate = new();
    long _tokens;

    public bool OutlivesProcess => false;

    public event Action<string>? ChangedElsewhere
    {
        add { } // nobody else changes this node's devices
        remove { }
    }

    public ValueTask<string?> AddAsync(string userId, string clientId, int maxDevices)
    {
        var token = Interlocked.Increment(ref _tokens).ToString(System.Globalization.CultureInfo.InvariantCulture);
        lock (_gate)
        {
            if (!_users.TryGetValue(userId, out var devices))
            {
                _users[userId] = devices = new(2);
            }

            var at = IndexOf(devices, clientId);
            if (at >= 0)
            {
                devices[at] = (clientId, token);
            }
            else if (maxDevices > 0 && devices.Count >= maxDevices)
            {
                return ValueTask.FromResult<string?>(null);
            }
            else
            {
                devices.Add((clientId, token));
            }
        }

        return ValueTask.FromResult<string?>(token);
    }

    public ValueTask<bool> RemoveAsync(string userId, string clientId, string token)
    {
        lock (_gate)
        {
            var at = _users.TryGetValue(userId, out var devices) ? IndexOf(devices, clientId) : -1;
            if (at < 0 || devices![at].Token != token)
            {
                return ValueTask.FromResult(false); // gone already, or a newer connection holds the device
            }

            devices.RemoveAt(at);
            if (devices.Count == 0)
            {
                _users.Remove(userId);
            }
        }

        return ValueTask.FromResult(true);
    }

    public ValueTask<string[]> DevicesAsync(string userId)
    {
        lock (_gate)
        {
            return ValueTask.FromResult(_users.TryGetValue(userId, out var devices) ? devices.Select(d => d.ClientId).ToArray() : []);
        }
    }

    public ValueTask<IReadOnlyCollection<string>> RemoveThisNodeAsync()
    {
        lock (_gate)
        {
            var users = _users.Keys.ToArray();
            _users.Clear();
            return ValueTask.FromResult<IReadOnlyCollection<string>>(users);
        }
    }

    static int IndexOf(List<(string ClientId, string Token)> devices, string clientId)
    {
        for (var i = 0; i < devices.Count; i++)
        {
            if (devices[i].ClientId == clientId)
            {
                return i;
            }
        }

        return -1;
    }
}
