using System.Threading.RateLimiting;
using Broker.Engine.Cluster;
using Broker.Engine.Policy;
using Broker.Ims.Options;

namespace Broker.Ims.Limits;

/// <summary>
/// Contract §13: limits per user, over all of its devices, by role (<c>Broker:Limits:Roles:&lt;role&gt;</c>).
/// The device quota is counted in the <see cref="IDeviceDirectory"/> (every node of a cluster); the two token
/// buckets (publishes, payload bytes) that every connection of a user on this node draws from live here while
/// the user has a connection (a user coming back starts with full buckets). Rates are per node, as EMQX's
/// limiters are: a user's devices on two nodes draw from two buckets.
/// </summary>
public sealed class UserLimits
{
    readonly Dictionary<string, RoleLimits> _roles = new(StringComparer.Ordinal);
    readonly Dictionary<string, UserBuckets> _users = new(StringComparer.Ordinal); // under _gate
    readonly Lock _gate = new();
    readonly IDeviceDirectory _devices;

    public UserLimits(ImsOptions options, IDeviceDirectory? devices = null)
    {
        _devices = devices ?? new LocalDevices();
        foreach (var role in new[] { Roles.User, Roles.Service, Roles.Admin })
        {
            options.Limits.Roles.TryGetValue(role, out var configured);
            var defaults = options.Conventions.Enabled && role == Roles.User ? RoleLimitsOptions.UserDefaults : null;
            var limits = RoleLimits.From(configured, defaults);
            if (!limits.IsUnlimited)
            {
                _roles[role] = limits;
            }
        }
    }

    /// <summary>Where the user's connected devices are kept (presence reads them too).</summary>
    public IDeviceDirectory Devices => _devices;

    /// <summary>The resolved limits of a role, or null when it has none.</summary>
    public RoleLimits? For(string role) => _roles.GetValueOrDefault(role);

    /// <summary>
    /// See <see cref="IBrokerPolicy.OpenLimitsAsync"/>. <paramref name="listDevice"/>: put the device in the
    /// directory even when its role has no device quota (presence lists every device);
    /// <paramref name="deviceGone"/> hears the user whose device set changed when the connection closes.
    /// </summary>
    public async ValueTask<OpenedLimits> OpenAsync(ClientPrincipal principal, bool listDevice = false, Action<string>? deviceGone = null)
    {
        _roles.TryGetValue(principal.Role, out var limits);
        var user = principal.UserId;
        var clientId = principal.ClientId;
        string? token = null;
        if (listDevice || limits is { MaxDevices: > 0 })
        {
            // The same client id again (a takeover in progress) is the same device.
            token = await _devices.AddAsync(user, clientId, limits?.MaxDevices ?? 0).ConfigureAwait(false);
            if (token is null)
            {
                return new OpenedLimits(null, QuotaExceeded: true);
            }
        }

        if (limits is null)
        {
            return token is null ? default : new OpenedLimits(new UserConnection(this, null, user, clientId, token, null, deviceGone), false);
        }

        UserBuckets? buckets = null;
        if (limits.LimitsRate)
        {
            lock (_gate)
            {
                if (!_users.TryGetValue(user, out buckets))
                {
                    _users[user] = buckets = new UserBuckets(limits);
                }

                buckets.Connections++;
            }
        }

        return new OpenedLimits(new UserConnection(this, limits, user, clientId, token, buckets, deviceGone), false);
    }

    /// <summary>One connection's limits; closing it gives back its device and its share of the user's buckets.</summary>
    sealed class UserConnection(UserLimits owner, RoleLimits? limits, string user, string clientId, string? token, UserBuckets? buckets, Action<string>? deviceGone)
        : ClientLimits(buckets?.Publishes, buckets?.Bytes, (int)Math.Min(int.MaxValue, limits?.PublishBytesRate ?? 0), limits?.RateGrace ?? TimeSpan.Zero, limits?.MaxSubscriptions ?? 0, limits?.MaxRetained ?? 0)
    {
        protected override void OnClose() => owner.Release(user, clientId, token, buckets, deviceGone);
    }

    void Release(string user, string clientId, string? token, UserBuckets? buckets, Action<string>? deviceGone)
    {
        if (token is not null)
        {
            var removed = _devices.RemoveAsync(user, clientId, token);
            if (removed.IsCompletedSuccessfully)
            {
                if (removed.Result)
                {
                    deviceGone?.Invoke(user);
                }
            }
            else
            {
                _ = TellWhenRemovedAsync(removed, user, deviceGone);
            }
        }

        if (buckets is null)
        {
            return;
        }

        lock (_gate)
        {
            if (--buckets.Connections > 0 || !_users.Remove(user))
            {
                return;
            }
        }

        // No connection of the user is left, so nobody waits on its buckets.
        buckets.Publishes?.Dispose();
        buckets.Bytes?.Dispose();
    }

    static async Task TellWhenRemovedAsync(ValueTask<bool> removed, string user, Action<string>? deviceGone)
    {
        if (await removed.ConfigureAwait(false))
        {
            deviceGone?.Invoke(user);
        }
    }

    sealed class UserBuckets(RoleLimits limits)
    {
        public int Connections; // under UserLimits._gate
        public readonly TokenBucketRateLimiter? Publishes = Bucket(limits.PublishRate, limits.PublishBurst);
        public readonly TokenBucketRateLimiter? Bytes = Bucket(limits.PublishBytesRate, (int)Math.Min(int.MaxValue, limits.PublishBytesRate));

        /// <summary>
        /// A bucket of <paramref name="burst"/> tokens refilled at <paramref name="perSecond"/>: every 100 ms
        /// (a tenth of the rate), or one token at a time for rates under 10 a second. Waiters queue in order.
        /// </summary>
        static TokenBucketRateLimiter? Bucket(double perSecond, int burst) => perSecond <= 0 ? null : new(new TokenBucketRateLimiterOptions
        {
            TokenLimit = Math.Max(1, burst),
            TokensPerPeriod = perSecond >= 10 ? (int)Math.Ceiling(perSecond / 10) : 1,
            ReplenishmentPeriod = perSecond >= 10 ? TimeSpan.FromMilliseconds(100) : TimeSpan.FromSeconds(1 / perSecond),
            QueueLimit = int.MaxValue,
            QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
            AutoReplenishment = true,
        });
    }
}

/// <summary>One role's limits, resolved (0 = none).</summary>
public sealed record RoleLimits(double PublishRate, int PublishBurst, long PublishBytesRate, int MaxDevices, int MaxRetained, int MaxSubscriptions, TimeSpan RateGrace)
{
    public bool LimitsRate => PublishRate > 0 || PublishBytesRate > 0;

    public bool IsUnlimited => !LimitsRate && MaxDevices == 0 && MaxRetained == 0 && MaxSubscriptions == 0;

    internal static RoleLimits From(RoleLimitsOptions? configured, RoleLimitsOptions? defaults)
    {
        var rate = configured?.PublishRate ?? defaults?.PublishRate ?? 0;
        return new RoleLimits(
            rate,
            configured?.PublishBurst ?? defaults?.PublishBurst ?? (int)Math.Max(1, Math.Ceiling(rate)),
            configured?.PublishBytesRate ?? defaults?.PublishBytesRate ?? 0,
            configured?.MaxDevices ?? defaults?.MaxDevices ?? 0,
            configured?.MaxRetained ?? defaults?.MaxRetained ?? 0,
            configured?.MaxSubscriptions ?? defaults?.MaxSubscriptions ?? 0,
            TimeSpan.FromSeconds(configured?.RateGraceSeconds ?? defaults?.RateGraceSeconds ?? 10));
    }
}
