using System.Threading.RateLimiting;

namespace Broker.Engine.Policy;

/// <summary>
/// The limits a policy puts on one connection (<see cref="IBrokerPolicy.OpenLimits"/>). The rate limiters
/// may be shared by several connections (all devices of a user): over them the engine stops reading the
/// connection until tokens come back, and a connection kept waiting for <see cref="RateGrace"/> is
/// disconnected (v5 0x96). 0 means no limit for the quotas.
/// </summary>
public class ClientLimits(RateLimiter? publishes, RateLimiter? publishBytes, int publishBytesBurst, TimeSpan rateGrace, int maxSubscriptions, int maxRetained)
{
    int _closed;

    /// <summary>One token per PUBLISH.</summary>
    public RateLimiter? Publishes { get; } = publishes;

    /// <summary>One token per payload byte.</summary>
    public RateLimiter? PublishBytes { get; } = publishBytes;

    /// <summary>The most <see cref="PublishBytes"/> hands out at once: a larger publish costs this much.</summary>
    public int PublishBytesBurst { get; } = publishBytesBurst;

    public TimeSpan RateGrace { get; } = rateGrace;

    /// <summary>Subscriptions per session; beyond, SUBACK 0x97 (v3.1.1 0x80) for the extra filters.</summary>
    public int MaxSubscriptions { get; } = maxSubscriptions;

    /// <summary>Retained messages owned by the user (the publisher of a topic's current retained message); beyond, PUBACK 0x97.</summary>
    public int MaxRetained { get; } = maxRetained;

    public bool LimitsRate => Publishes is not null || PublishBytes is not null;

    /// <summary>The connection ended: what it held (a device slot) goes back. Once.</summary>
    public void Close()
    {
        if (Interlocked.Exchange(ref _closed, 1) == 0)
        {
            OnClose();
        }
    }

    /// <summary>What the policy gives back when the connection ends (called once); a subclass rather than a callback, one object less per connection.</summary>
    protected virtual void OnClose()
    {
    }
}

/// <summary>What <see cref="IBrokerPolicy.OpenLimitsAsync"/> decided for a connection.</summary>
public readonly record struct OpenedLimits(ClientLimits? Limits, bool QuotaExceeded);
