using System.Threading.RateLimiting;
using Broker.Engine.Policy;
using Broker.Ims.Options;

namespace Broker.Ims.Limits;

/// <summary>
/// Contract §13: limits per user, over all of its devices, by role (<c>Broker:Limits:Roles:&lt;role&gt;</c>).
/// While a user has connections it has one state here: the client ids connected (MaxDevices) and two token
/// buckets (publishes, payload bytes) that every connection of the user draws from. The state goes when
/// the last connection does (a user coming back starts with full buckets).
/// </summary>
public sealed class UserLimits
{
    readonly Dictionary<string, RoleLimits> _roles = new(StringComparer.Ordinal);
    readonly Dictionary<string, UserState> _users = new(StringComparer.Ordinal); // under _gate
    readonly Lock _gate = new();

    public UserLimits(ImsOptions options)
    {
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

    /// <summary>The resolved limits of a role, or null when it has none.</summary>
    public RoleLimits? For(string role) => _roles.GetValueOrDefault(role);

    /// <summary>Devices of a user connected now (tests, operators).</summary>
    public int DevicesOf(string userId)
    {
        lock (_gate)
        {
            return _users.TryGetValue(userId, out var state) ? state.Devices.Count : 0;
        }
    }

    /// <summary>See <see cref="IBrokerPolicy.OpenLimits"/>.</summary>
    public ClientLimits? Open(ClientPrincipal principal, out bool quotaExceeded)
    {
        quotaExceeded = false;
        if (!_roles.TryGetValue(principal.Role, out var limits))
        {
            return null;
        }

        var user = principal.UserId;
        var clientId = principal.ClientId;
        UserState? state;
        lock (_gate)
        {
            if (!_users.TryGetValue(user, out state))
            {
                if (limits.MaxDevices == 0 && !limits.LimitsRate)
                {
                    // Nothing shared to keep: only the per-session and retained quotas.
                    return new ClientLimits(null, null, 0, limits.RateGrace, limits.MaxSubscriptions, limits.MaxRetained);
                }

                _users[user] = state = new UserState(limits);
            }

            // The same client id again (a takeover in progress) is the same device.
            if (limits.MaxDevices > 0 && !state.Devices.ContainsKey(clientId) && state.Devices.Count >= limits.MaxDevices)
            {
                quotaExceeded = true;
                return null;
            }

            state.Devices[clientId] = state.Devices.GetValueOrDefault(clientId) + 1;
        }

        return new ClientLimits(state.Publishes, state.Bytes, (int)Math.Min(int.MaxValue, limits.PublishBytesRate), limits.RateGrace, limits.MaxSubscriptions, limits.MaxRetained,
            () => Release(user, clientId, state));
    }

    void Release(string user, string clientId, UserState state)
    {
        lock (_gate)
        {
            if (state.Devices.TryGetValue(clientId, out var n) && n > 1)
            {
                state.Devices[clientId] = n - 1;
                return;
            }

            state.Devices.Remove(clientId);
            if (state.Devices.Count > 0 || !_users.Remove(user))
            {
                return;
            }
        }

        // No connection of the user is left, so nobody waits on its buckets.
        state.Publishes?.Dispose();
        state.Bytes?.Dispose();
    }

    sealed class UserState(RoleLimits limits)
    {
        public readonly Dictionary<string, int> Devices = new(StringComparer.Ordinal);
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
