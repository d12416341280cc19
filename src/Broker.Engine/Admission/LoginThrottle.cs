using System.Collections.Concurrent;
using System.Net;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Microsoft.Extensions.Logging;
using MQTTnet.Protocol;

namespace Broker.Engine.Admission;

/// <summary>
/// Slows down password guessing without telling the guesser anything: a failed login (CONNACK 0x86, v3.1.1
/// 0x04) starts a penalty of <c>Broker:Limits:LoginFailureDelay</c>, doubling with each further failure up to
/// <c>LoginMaxDelay</c>, and forgotten after <c>LoginFailureReset</c> without failures. Two keys:
/// <list type="bullet">
/// <item>the <b>source address</b>, strongly: every credential check from it first waits out the penalty, so a
/// guesser's connections wait instead of hashing, whatever user names they try. A valid login from that same
/// address waits too (a shared NAT), at most <c>LoginMaxDelay</c>, never longer: nobody is locked out.</item>
/// <item>the <b>user name</b>, softly: only a refusal is held back by it. A correct password is never delayed by
/// failures elsewhere, so an attacker spread over many addresses cannot lock the real user out.</item>
/// </list>
/// The answer is always the policy's own: only later. Wall-clock time (not the engine's clock, which tests move).
/// One instance per engine (<see cref="BrokerEngine.Logins"/>), shared by MQTT CONNECT and the admin API's
/// login: one guesser, one budget, whichever door it knocks on.
/// </summary>
public sealed partial class LoginThrottle
{
    sealed class Penalty
    {
        public int Failures;
        public long UntilMs;
        public long LastFailureMs;
    }

    readonly ConcurrentDictionary<IPAddress, Penalty> _sources = new();
    readonly ConcurrentDictionary<string, Penalty> _users = new(StringComparer.Ordinal);
    readonly long _firstDelayMs;
    readonly long _maxDelayMs;
    readonly long _resetMs;
    readonly BrokerCounters _counters;
    readonly ILogger _logger;
    readonly LogGate _log = new(TimeSpan.FromSeconds(10));

    internal LoginThrottle(LimitsOptions limits, BrokerCounters counters, ILogger logger)
    {
        _firstDelayMs = (long)limits.LoginFailureDelay.TotalMilliseconds;
        _maxDelayMs = (long)limits.LoginMaxDelay.TotalMilliseconds;
        _resetMs = (long)limits.LoginFailureReset.TotalMilliseconds;
        _counters = counters;
        _logger = logger;
    }

    static long NowMs => Environment.TickCount64;

    /// <summary>Runs <paramref name="check"/> for a CONNECT from <paramref name="source"/>, delayed as the penalties say.</summary>
    internal Task<AuthenticationResult> CheckAsync(ConnectRequest request, IPAddress? source, Func<Task<AuthenticationResult>> check) =>
        CheckAsync(source, request.UserName, credentials: request.UserName is not null || request.Password is not null, check,
            static result => !result.Succeeded && result.ReasonCode == MqttConnectReasonCode.BadUserNameOrPassword);

    /// <summary>
    /// Runs a credential <paramref name="check"/> from <paramref name="source"/> (any login, not only MQTT's),
    /// delayed as the penalties say: with <paramref name="credentials"/> it first waits out the source's
    /// penalty; a result that <paramref name="failed"/> says is a bad user name or password is counted against
    /// the source and <paramref name="userName"/> and held back by the user name's penalty. Other results
    /// (busy, allowed) are neither counted nor held.
    /// </summary>
    public async Task<T> CheckAsync<T>(IPAddress? source, string? userName, bool credentials, Func<Task<T>> check, Func<T, bool> failed)
    {
        ArgumentNullException.ThrowIfNull(check);
        ArgumentNullException.ThrowIfNull(failed);
        var delayed = false;
        if (credentials && source is not null && _sources.TryGetValue(source, out var penalty))
        {
            long wait;
            lock (penalty)
            {
                wait = Math.Min(penalty.UntilMs - NowMs, _maxDelayMs);
            }

            if (wait > 0)
            {
                delayed = true;
                await Task.Delay(TimeSpan.FromMilliseconds(wait)).ConfigureAwait(false);
            }
        }

        var result = await check().ConfigureAwait(false);
        if (failed(result))
        {
            var hold = Failed(source, userName);
            if (hold > 0)
            {
                delayed = true;
                await Task.Delay(TimeSpan.FromMilliseconds(hold)).ConfigureAwait(false);
            }
        }

        if (delayed)
        {
            _counters.LoginDelayed();
        }

        return result;
    }

    /// <summary>Counts a failure against both keys; returns how long to hold the refusal (the user name's penalty).</summary>
    long Failed(IPAddress? source, string? userName)
    {
        var total = _counters.LoginFailed();
        if (_firstDelayMs == 0)
        {
            return 0;
        }

        var now = NowMs;
        var (sourceFailures, sourceDelay) = source is null ? (0, 0L) : Fail(_sources.GetOrAdd(source, _ => new Penalty()), now);
        var userDelay = string.IsNullOrEmpty(userName) ? 0 : Fail(_users.GetOrAdd(userName, _ => new Penalty()), now).Delay;
        if (_log.TryPass())
        {
            // No user name: people type passwords into it by mistake.
            LogThrottled(_logger, total, source, sourceFailures, sourceDelay);
        }

        return userDelay;
    }

    (int Failures, long Delay) Fail(Penalty penalty, long now)
    {
        lock (penalty)
        {
            if (now - penalty.LastFailureMs > _resetMs)
            {
                penalty.Failures = 0;
            }

            penalty.Failures++;
            penalty.LastFailureMs = now;
            var delay = Math.Min(_maxDelayMs, _firstDelayMs << Math.Min(penalty.Failures - 1, 30));
            penalty.UntilMs = now + delay;
            return (penalty.Failures, delay);
        }
    }

    /// <summary>
    /// Forgets keys without a failure for <c>LoginFailureReset</c> (from the engine's heartbeat), so memory
    /// follows recent failures only. A failure racing with its key's removal is lost: one delay less, once.
    /// </summary>
    internal void Sweep()
    {
        var now = NowMs;
        Sweep(_sources, now);
        Sweep(_users, now);
    }

    void Sweep<TKey>(ConcurrentDictionary<TKey, Penalty> penalties, long now)
        where TKey : notnull
    {
        foreach (var entry in penalties)
        {
            if (now - Volatile.Read(ref entry.Value.LastFailureMs) > _resetMs)
            {
                penalties.TryRemove(entry);
            }
        }
    }

    /// <summary>Source addresses and user names with failures on record (tests, metrics).</summary>
    internal int TrackedCount => _sources.Count + _users.Count;

    [LoggerMessage(2010, LogLevel.Warning, "Failed logins are being throttled: {Total} so far; the latest from {Source}, its failure {SourceFailures} in a row, so its next login waits {DelayMs} ms (Broker:Limits:LoginFailureDelay, LoginMaxDelay)")]
    static partial void LogThrottled(ILogger logger, long total, IPAddress? source, int sourceFailures, long delayMs);
}
