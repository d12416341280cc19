using System.Collections.Concurrent;
using Broker.Engine.Diagnostics;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Logging.Abstractions;

namespace Broker.Ims.Blocks;

/// <summary>
/// Who blocked whom (contract §12): data the read check consults at every delivery. Each user's list is
/// a set replaced as a whole on change (never mutated once published), so the read check takes no lock.
/// Every change is a record in the broker's store (kind <c>ims.block</c>, key <c>user/blocked</c>, a
/// null value when unblocked), written before it applies, and laid back at start.
/// </summary>
public sealed partial class BlockLists
{
    const string Kind = "ims.block";

    readonly IPolicyRecords _store;
    readonly ILogger _logger;
    readonly ConcurrentDictionary<string, HashSet<string>> _byUser = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<string, HashSet<string>>.AlternateLookup<ReadOnlySpan<char>> _bySpan;
    readonly Lock _gate = new();
    long _version;
    int _users; // users with a non-empty list, under _gate
    long _withheld;
    long _lastLogMs;

    public BlockLists(IPolicyRecords store, ILogger<BlockLists>? logger = null, BrokerCounters? counters = null)
    {
        _store = store;
        _store.Resync += Restore; // unblocks are records too (null values): a missed one applies as well
        _store.ChangedElsewhere += (kind, key, value) =>
        {
            // Another node's block or unblock (cluster): the read check here follows it.
            if (kind == Kind && key.IndexOf('/', StringComparison.Ordinal) is var slash and > 0)
            {
                Apply(key[..slash], key[(slash + 1)..], value is not null);
            }
        };
        _logger = logger ?? (ILogger)NullLogger.Instance;
        _bySpan = _byUser.GetAlternateLookup<ReadOnlySpan<char>>();
        counters?.Meter.CreateObservableCounter("delivery.withheld", () => Withheld, "{message}", "Deliveries withheld because the recipient blocked the sender, or the feed's owner blocked the recipient");
    }

    /// <summary>Moves on every change: sessions check what they hold in memory again.</summary>
    public long Version => Interlocked.Read(ref _version);

    /// <summary>Deliveries withheld by a block so far.</summary>
    public long Withheld => Interlocked.Read(ref _withheld);

    /// <summary>No user has blocked anyone: the read check's fast path (ConcurrentDictionary.IsEmpty would take every lock when empty).</summary>
    public bool IsEmpty => Volatile.Read(ref _users) == 0;

    /// <summary>Has <paramref name="user"/> blocked <paramref name="other"/>?</summary>
    public bool Blocks(ReadOnlySpan<char> user, string other) => _bySpan.TryGetValue(user, out var set) && set.Contains(other);

    public IReadOnlyList<string> Get(string user) =>
        _byUser.TryGetValue(user, out var set) ? [.. set.Order(StringComparer.Ordinal)] : [];

    /// <summary>
    /// Why <paramref name="target"/> cannot be on <paramref name="user"/>'s block list, or null. A well-formed user id
    /// that no account has yet is accepted: the answer must not tell who has an account, and a user who signs in
    /// with a JWT is not in the directory before it connects.
    /// </summary>
    public static string? TargetProblem(string user, string target, Groups.IGroupDirectory groups) =>
        !Identity.Identifiers.IsUserId(target) || Identity.Identifiers.IsReserved(target) ? "not a valid user id"
        : target == user ? "a user cannot block itself"
        : groups.Exists(target) ? "a chat group, not a user"
        : null;

    /// <summary>Lays the stored changes over the (empty) lists, at start.</summary>
    public void Restore()
    {
        foreach (var (key, value) in _store.LoadRecords(Kind))
        {
            var slash = key.IndexOf('/', StringComparison.Ordinal);
            if (slash > 0)
            {
                Apply(key[..slash], key[(slash + 1)..], value is not null);
            }
        }
    }

    /// <summary>Blocks (or unblocks) once the change is durable; completes after it applies.</summary>
    public async ValueTask SetAsync(string user, string other, bool blocked)
    {
        await _store.SaveRecordAsync(Kind, user + "/" + other, blocked ? [1] : null);
        Apply(user, other, blocked);
        LogChanged(_logger, user, blocked ? "blocked" : "unblocked", other);
    }

    void Apply(string user, string other, bool blocked)
    {
        lock (_gate)
        {
            _byUser.TryGetValue(user, out var current);
            if (blocked == (current?.Contains(other) ?? false))
            {
                return;
            }

            var next = current is null ? new HashSet<string>(StringComparer.Ordinal) : new HashSet<string>(current, StringComparer.Ordinal);
            if (blocked)
            {
                next.Add(other);
            }
            else
            {
                next.Remove(other);
            }

            if (next.Count == 0)
            {
                _byUser.TryRemove(user, out _);
            }
            else
            {
                _byUser[user] = next;
            }

            Volatile.Write(ref _users, _byUser.Count); // Count takes the locks too, but only here, on a change

            Interlocked.Increment(ref _version);
        }
    }

    /// <summary>Counts a withheld delivery, and logs it (debug, at most once a second).</summary>
    public void CountWithheld(string recipientClientId, string topic, string? sender)
    {
        var total = Interlocked.Increment(ref _withheld);
        if (!_logger.IsEnabled(LogLevel.Debug))
        {
            return;
        }

        var now = Environment.TickCount64;
        var last = Interlocked.Read(ref _lastLogMs);
        if (now - last >= 1000 && Interlocked.CompareExchange(ref _lastLogMs, now, last) == last)
        {
            LogWithheld(_logger, topic, sender, recipientClientId, total);
        }
    }

    [LoggerMessage(6001, LogLevel.Information, "User {User} {Change} {Other}")]
    static partial void LogChanged(ILogger logger, string user, string change, string other);

    [LoggerMessage(6002, LogLevel.Debug, "Withheld a message on {Topic} from {Sender} to {ClientId}: block list ({Total} withheld so far)")]
    static partial void LogWithheld(ILogger logger, string topic, string? sender, string clientId, long total);
}
