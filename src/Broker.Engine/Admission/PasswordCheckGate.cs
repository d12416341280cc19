using System.Threading.RateLimiting;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;

namespace Broker.Engine.Admission;

/// <summary>
/// Bounds the slow password checks (PBKDF2) running at once to <c>Broker:Limits:MaxConcurrentPasswordChecks</c>,
/// with at most <c>MaxQueuedPasswordChecks</c> waiting in arrival order. Beyond that a check does not wait:
/// the policy answers "server busy" (v5 CONNACK 0x89, v3.1.1 0x03), which says nothing about the password.
/// Only the hash takes a place: a remembered password, a JWT or an unknown user never does, so a flood
/// of wrong guesses cannot make known users wait.
/// </summary>
public sealed partial class PasswordCheckGate : IDisposable
{
    readonly ConcurrencyLimiter _limiter;
    readonly BrokerCounters _counters;
    readonly ILogger _logger;
    readonly LogGate _busyLog = new(TimeSpan.FromSeconds(1));
    readonly int _permits;

    public PasswordCheckGate(IOptions<EngineOptions> options, BrokerCounters counters, ILogger<PasswordCheckGate> logger)
    {
        var limits = options.Value.Limits;
        _permits = limits.MaxConcurrentPasswordChecks;
        _limiter = new ConcurrencyLimiter(new ConcurrencyLimiterOptions
        {
            PermitLimit = limits.MaxConcurrentPasswordChecks,
            QueueLimit = limits.MaxQueuedPasswordChecks,
            QueueProcessingOrder = QueueProcessingOrder.OldestFirst,
        });
        _counters = counters;
        _logger = logger;
    }

    /// <summary>
    /// A place for one check: dispose the lease when the hash is done. <see cref="RateLimitLease.IsAcquired"/>
    /// is false when the places and the queue are full.
    /// </summary>
    public async ValueTask<RateLimitLease> EnterAsync(CancellationToken cancellationToken = default)
    {
        var lease = await _limiter.AcquireAsync(1, cancellationToken).ConfigureAwait(false);
        if (!lease.IsAcquired)
        {
            var total = _counters.LoginBusy();
            if (_busyLog.TryPass())
            {
                LogBusy(_logger, _permits, total);
            }
        }

        return lease;
    }

    public void Dispose() => _limiter.Dispose();

    [LoggerMessage(2011, LogLevel.Warning, "Login answered server busy: {Permits} password checks are running and the queue is full (Broker:Limits:MaxConcurrentPasswordChecks, MaxQueuedPasswordChecks); {Total} so far")]
    static partial void LogBusy(ILogger logger, int permits, long total);
}
