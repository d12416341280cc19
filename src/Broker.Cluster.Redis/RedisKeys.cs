using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>
/// The key layout. Every key of one client id carries the hash tag <c>{c/&lt;cid&gt;}</c>: one slot, so one
/// script may touch them all, also in Redis Cluster. The tag is the text between the first '{' and the
/// first '}' after it; prefixes have no brace, so a '}' inside a client id shortens the tag equally for
/// every key of that client id and they still share a slot.
/// </summary>
static class RedisKeys
{
    /// <summary>Retained messages: one hash for now (one slot; a per-route split is the cluster design's next step).</summary>
    public static readonly RedisKey Retained = "ret";

    /// <summary>Disconnected persistent sessions by expiry deadline (Unix ms): the sweep expires those whose node died.</summary>
    public static readonly RedisKey Expiries = "ims:expiry";

    /// <summary>
    /// Client ids with a mailbox, by when it expires (Unix ms): the cluster-wide count that
    /// <c>Broker:Limits:MaxMailboxClientIds</c> bounds. Not in the mailboxes' slots, so kept beside them, not with them.
    /// </summary>
    public static readonly RedisKey Mailboxes = "ims:mailboxes";

    /// <summary>The keys every session script receives, in this order (the scripts name them s, q, m, f, i2, mb, mbm).</summary>
    public static RedisKey[] Session(string clientId)
    {
        var tag = "{c/" + clientId + "}";
        return
        [
            "s:" + tag,   // hash: rec, exp, owner, epoch, seq, qb
            "q:" + tag,   // zset: queued message ids by seq
            "m:" + tag,   // hash: message id → row blob
            "f:" + tag,   // hash: message id → "packetId:state" (in flight)
            "i2:" + tag,  // set: inbound QoS 2 packet ids
            "mb:" + tag,  // zset: mailbox message ids by expires-at
            "mbm:" + tag, // hash: mailbox message id → row blob
        ];
    }

    public static RedisKey SessionHash(string clientId) => "s:{c/" + clientId + "}";

    public static RedisKey Binding(string clientId) => "b:{c/" + clientId + "}";

    public static RedisKey Readers(string route) => "ix:{" + route + "}";

    public static RedisKey Records(string kind) => "rec:" + kind;

    public static RedisValue ReaderField(string clientId, string filter) => clientId + "\n" + filter;
}
