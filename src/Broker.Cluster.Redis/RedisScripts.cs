namespace Broker.Cluster.Redis;

/// <summary>
/// The Lua scripts of <see cref="RedisBrokerStore"/>. Each one works on the keys of one client id
/// (<see cref="RedisKeys.Session"/>), so it is atomic, also in Redis Cluster. Session-owned writes take
/// the writer's epoch first ('' = unfenced) and answer {0} when it is stale, without changing anything.
/// </summary>
static class RedisScripts
{
    // The helpers a session script may call, each after the ones it calls. A script takes only those it uses:
    // Redis runs a script's whole text on every call, so each `local function` is a closure made again per call
    // (all ten took 2 of Direct's 22 µs on an idle Redis), and StackExchange.Redis hashes the whole text on every
    // call to find the script's SHA. A helper brings what it calls (Append and Unqueue bring Size, Mail brings
    // TrimMailbox; no script takes two that bring the same), except unqueue, which Inflight and Settled share:
    // a script that takes either lists Unqueue before them.
    static class Fn
    {
        public const string Keys = """
            local s, q, m, f, i2, mb, mbm = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]

            """;

        public const string Size = """
            local function size(blob)
              local a, b, c, d = string.byte(blob, 1, 4)
              return a + b * 256 + c * 65536 + d * 16777216
            end

            """;

        public const string Stale = """
            local function stale(e)
              return e ~= '' and redis.call('HGET', s, 'epoch') ~= e
            end

            """;

        public const string Persistent = """
            local function persistent()
              local x = redis.call('HGET', s, 'exp')
              return x and tonumber(x) > 0
            end

            """;

        // A row's blob is in m exactly while its id is queued (q) or in flight (f), so HSETNX on m is the test for
        // "already there" (a publish sent again) and the write of the blob in one call.
        public const string Append = Size + """
            local function append(id, blob)
              if redis.call('HSETNX', m, id, blob) == 0 then return end
              local seq = redis.call('HINCRBY', s, 'seq', 1)
              redis.call('ZADD', q, seq, id)
              redis.call('HINCRBY', s, 'qb', size(blob))
            end

            """;

        public const string Unqueue = Size + """
            local function unqueue(id)
              if redis.call('ZREM', q, id) == 0 then return false end
              local blob = redis.call('HGET', m, id)
              if blob then redis.call('HINCRBY', s, 'qb', -size(blob)) end
              return true
            end

            """;

        // A delivery sent: its row leaves the queue for the in-flight set; a row that is gone stays gone.
        public const string Inflight = """
            local function inflight(id, state)
              if unqueue(id) or redis.call('HEXISTS', f, id) == 1 then redis.call('HSET', f, id, state) end
            end

            """;

        // A delivery done (acknowledged or dropped): its row goes, queued or in flight (never both: see Inflight).
        public const string Settled = """
            local function settled(id)
              if not unqueue(id) then redis.call('HDEL', f, id) end
              redis.call('HDEL', m, id)
            end

            """;

        // A client id with nothing durable and no owner keeps only its epoch (to fence a late writer of its
        // last session): for a day, not for ever, or every client id ever seen would stay in Redis.
        public const string Forget = """
            local function forget()
              if redis.call('HEXISTS', s, 'rec') == 0 and not redis.call('HGET', s, 'owner') then
                redis.call('PEXPIRE', s, 86400000)
              end
            end

            """;

        public const string TrimMailbox = """
            local function trimMailbox(now)
              local gone = redis.call('ZRANGEBYSCORE', mb, '-inf', now)
              for _, id in ipairs(gone) do redis.call('HDEL', mbm, id) end
              if #gone > 0 then redis.call('ZREMRANGEBYSCORE', mb, '-inf', now) end
            end

            """;

        // At most cap messages per client id (Broker:MaxQueuedMessages): the oldest go first, as on one node.
        public const string Mail = TrimMailbox + """
            local function mail(id, blob, expiresAt, now, cap)
              trimMailbox(now)
              if tonumber(expiresAt) <= tonumber(now) then return end
              local over = redis.call('ZCARD', mb) - tonumber(cap) + 1
              if over > 0 then
                local popped = redis.call('ZPOPMIN', mb, over) -- member, score, member, score, ...
                for i = 1, #popped, 2 do redis.call('HDEL', mbm, popped[i]) end
              end
              redis.call('ZADD', mb, expiresAt, id)
              redis.call('HSET', mbm, id, blob)
              local last = redis.call('ZRANGE', mb, -1, -1, 'WITHSCORES')
              redis.call('PEXPIREAT', mb, last[2])
              redis.call('PEXPIREAT', mbm, last[2])
            end

            """;
    }

    /// <summary>ARGV: incarnation, clean ('1'/'0') → {epoch, previous owner or '', existed 0/1}. Keeps the binding and the mailbox.</summary>
    public const string Claim = Fn.Keys + """
        local previous = redis.call('HGET', s, 'owner')
        local existed = redis.call('HEXISTS', s, 'rec')
        local epoch = redis.call('HINCRBY', s, 'epoch', 1)
        redis.call('HSET', s, 'owner', ARGV[1])
        redis.call('PERSIST', s)
        -- A new connection cancels the will of the one before (a delayed will of a resumed session is not sent [MQTT-3.1.3-9]).
        redis.call('HDEL', s, 'will', 'wd')
        if ARGV[2] == '1' then
          redis.call('HDEL', s, 'rec', 'exp', 'qb')
          redis.call('DEL', q, m, f, i2)
        end
        return {epoch, previous or '', existed}
        """;

    /// <summary>ARGV: incarnation, will blob ('' = none), its delay in seconds → 1 when set (still the owner).</summary>
    public const string Will = Fn.Keys + """
        if redis.call('HGET', s, 'owner') ~= ARGV[1] then return 0 end
        if ARGV[2] == '' then redis.call('HDEL', s, 'will', 'wd') else redis.call('HSET', s, 'will', ARGV[2], 'wd', ARGV[3]) end
        return 1
        """;

    /// <summary>
    /// ARGV: a dead node's incarnation, now (Unix ms) → {owned 1/0, will blob or '' (none, or delayed), expiry deadline or '', due}.
    /// Owned 1: the dead node no longer owns the session, and its will is handed over to publish now, or, for a
    /// persistent session's delayed will, left here until <c>due</c> (Unix ms, the delay counted from now; see
    /// <see cref="DueWill"/>); a clean session's client id gets the mailbox again. A persistent session that was
    /// connected when its node died has no deadline yet (<c>dl</c> is written when its node sees the disconnect):
    /// its connection closed with the node, so its expiry interval runs from now [MQTT-3.1.2-23]. The deadline is
    /// returned while no node owns the session, also to a sweep that repeats one cut short, for
    /// <see cref="RedisKeys.Expiries"/> (another slot). The epoch goes up, as for a claim: a node taken for dead
    /// that still runs cannot write to the session.
    /// </summary>
    public const string Orphan = Fn.Keys + Fn.Forget + """
        local owner = redis.call('HGET', s, 'owner')
        if owner and owner ~= ARGV[1] then return {0, '', '', 0} end
        local will, due = '', 0
        if owner then
          will = redis.call('HGET', s, 'will') or ''
          local delay = tonumber(redis.call('HGET', s, 'wd') or '0')
          redis.call('HDEL', s, 'owner')
          redis.call('HINCRBY', s, 'epoch', 1)
          local exp = redis.call('HGET', s, 'exp')
          if redis.call('HEXISTS', s, 'rec') == 1 and redis.call('HEXISTS', s, 'dl') == 0
              and exp and tonumber(exp) ~= 4294967295 then
            redis.call('HSET', s, 'dl', string.format('%.0f', tonumber(ARGV[2]) + tonumber(exp) * 1000))
          end
          if will ~= '' and delay > 0 and redis.call('HEXISTS', s, 'rec') == 1 then
            due = tonumber(ARGV[2]) + delay * 1000
            will = ''
          else
            redis.call('HDEL', s, 'will', 'wd')
          end
          forget()
        end
        local deadline = ''
        if redis.call('HEXISTS', s, 'rec') == 1 then deadline = redis.call('HGET', s, 'dl') or '' end
        return {owner and 1 or 0, will, deadline, due}
        """;

    /// <summary>A dead node's delayed will whose delay passed → its blob, or '' when the session was resumed (or ended) meanwhile [MQTT-3.1.3-9].</summary>
    public const string DueWill = Fn.Keys + Fn.Forget + """
        if redis.call('HGET', s, 'owner') then return '' end
        local will = redis.call('HGET', s, 'will') or ''
        redis.call('HDEL', s, 'will', 'wd')
        forget()
        return will
        """;

    /// <summary>ARGV: incarnation → 1 when it was the owner and is no longer.</summary>
    public const string Release = Fn.Keys + Fn.Forget + """
        if redis.call('HGET', s, 'owner') ~= ARGV[1] then return 0 end
        redis.call('HDEL', s, 'owner')
        forget()
        return 1
        """;

    /// <summary>ARGV: now → false, or {record, queued count, queued bytes, {inbound ids}, {id, "pid:state", blob, …}}.</summary>
    public const string Load = Fn.Keys + Fn.Persistent + Fn.Append + Fn.TrimMailbox + """
        if redis.call('HEXISTS', s, 'rec') == 0 then return false end
        if persistent() then
          trimMailbox(ARGV[1])
          for _, id in ipairs(redis.call('ZRANGE', mb, 0, -1)) do
            local blob = redis.call('HGET', mbm, id)
            if blob then append(id, blob) end
          end
          redis.call('DEL', mb, mbm)
        end
        local inflight = {}
        local rows = redis.call('HGETALL', f)
        for i = 1, #rows, 2 do
          local blob = redis.call('HGET', m, rows[i])
          if blob then
            table.insert(inflight, rows[i])
            table.insert(inflight, rows[i + 1])
            table.insert(inflight, blob)
          end
        end
        return {redis.call('HGET', s, 'rec'), redis.call('ZCARD', q), tonumber(redis.call('HGET', s, 'qb') or '0'), redis.call('SMEMBERS', i2), inflight}
        """;

    /// <summary>ARGV: id, blob → 1 when the row was written (the client id has a persistent session), else 0.</summary>
    public const string Append = Fn.Keys + Fn.Persistent + Fn.Append + """
        if not persistent() then return 0 end
        append(ARGV[1], ARGV[2])
        return 1
        """;

    /// <summary>
    /// ARGV: id, blob, qos, expires-at, now, mailbox cap, channel ('' = none), message if stored, message otherwise,
    /// may open a mailbox ('1'/'0': the cluster's client ids with a mailbox are below their bound)
    /// → {session exists, stored, mailed}.
    /// </summary>
    public const string Direct = Fn.Keys + Fn.Append + Fn.Mail + """
        local qos = tonumber(ARGV[3])
        local stored, mailed, exists = 0, 0, 0
        -- A session (a record, or a clean session's owner while it is connected somewhere) takes it live,
        -- not the mailbox: the mailbox is for client ids with no session at all.
        -- One read for both: 'exp' is written and deleted with 'rec', so it says whether a record exists.
        local h = redis.call('HMGET', s, 'owner', 'exp')
        local owned, exp = h[1], h[2]
        if exp or (owned and owned ~= '') then
          exists = 1
          if qos >= 1 and tonumber(exp or '0') > 0 then
            append(ARGV[1], ARGV[2])
            stored = 1
          end
        elseif qos >= 1 and (ARGV[10] == '1' or redis.call('EXISTS', mb) == 1) then
          mail(ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6])
          mailed = 1
        end
        -- The message to the node that hosts the session, in the same call (its channel is in this slot):
        -- one round trip, and sent only after the row is written (Redis answers and publishes after the AOF write).
        if ARGV[7] ~= '' then
          redis.call('SPUBLISH', ARGV[7], stored == 1 and ARGV[8] or ARGV[9])
        end
        return {exists, stored, mailed}
        """;

    /// <summary>ARGV: id, blob, expires-at, now, mailbox cap.</summary>
    public const string MailboxAdd = Fn.Keys + Fn.Mail + """
        mail(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
        return 1
        """;

    /// <summary>ARGV: now → {id, expires-at, blob, …} oldest first, expired ones trimmed first.</summary>
    public const string MailboxRead = Fn.Keys + Fn.TrimMailbox + """
        trimMailbox(ARGV[1])
        local ids = redis.call('ZRANGE', mb, 0, -1, 'WITHSCORES')
        local out = {}
        for i = 1, #ids, 2 do
          local blob = redis.call('HGET', mbm, ids[i])
          if blob then
            table.insert(out, ids[i]); table.insert(out, ids[i + 1]); table.insert(out, blob)
          end
        end
        return out
        """;

    /// <summary>ARGV: id → the messages left in the mailbox.</summary>
    public const string MailboxRemove = Fn.Keys + """
        redis.call('ZREM', mb, ARGV[1])
        redis.call('HDEL', mbm, ARGV[1])
        return redis.call('ZCARD', mb)
        """;

    /// <summary>ARGV: epoch, record, expiry seconds, expiry deadline in Unix ms ('' = connected or never). Owner, epoch and seq stay.</summary>
    public const string Upsert = Fn.Keys + Fn.Stale + """
        if stale(ARGV[1]) then return {0} end
        redis.call('HSET', s, 'rec', ARGV[2], 'exp', ARGV[3])
        if ARGV[4] == '' then redis.call('HDEL', s, 'dl') else redis.call('HSET', s, 'dl', ARGV[4]) end
        return {1}
        """;

    /// <summary>
    /// ARGV: now → 1 when the session was deleted: it has no owner (its node died and was swept) and its expiry
    /// deadline (<c>dl</c>, written while it is disconnected) has passed; 2 while it still has an owner (a live node
    /// expires it itself, a dead one is swept first: ask again later); 0 when there is nothing to expire.
    /// </summary>
    public const string ExpireOrphan = Fn.Keys + Fn.Forget + """
        if redis.call('HGET', s, 'owner') then return 2 end
        local deadline = redis.call('HGET', s, 'dl')
        if not deadline or tonumber(deadline) > tonumber(ARGV[1]) then return 0 end
        redis.call('HDEL', s, 'rec', 'exp', 'qb', 'dl', 'will', 'wd')
        redis.call('DEL', q, m, f, i2)
        forget()
        return 1
        """;

    /// <summary>
    /// ARGV: epoch. The session's state goes, the hash's owner, epoch and seq stay: a session created
    /// again later must get a higher epoch than any writer of this one could still hold.
    /// </summary>
    public const string Delete = Fn.Keys + Fn.Stale + """
        if stale(ARGV[1]) then return {0} end
        redis.call('HDEL', s, 'rec', 'exp', 'qb', 'dl')
        redis.call('DEL', q, m, f, i2)
        return {1}
        """;

    /// <summary>ARGV: epoch, id, "packetId:state". A queued row leaves the queue; a row that is gone stays gone.</summary>
    public const string Update = Fn.Keys + Fn.Stale + Fn.Unqueue + Fn.Inflight + """
        if stale(ARGV[1]) then return {0} end
        inflight(ARGV[2], ARGV[3])
        return {1}
        """;

    /// <summary>
    /// ARGV: epoch, then pairs of id and change: "packetId:state" marks the row in flight (as <see cref="Update"/>),
    /// '' removes it. One session's held changes of a tick (DeliveryMarks). A removal is applied under a stale
    /// epoch too (the answer is still {0}): what the client acknowledged, or this node dropped, while it owned
    /// the session stays done under the node that took it over; a mark from a stale epoch is refused.
    /// </summary>
    public const string Settle = Fn.Keys + Fn.Stale + Fn.Unqueue + Fn.Inflight + Fn.Settled + """
        local fenced = stale(ARGV[1])
        for i = 2, #ARGV, 2 do
          local id, change = ARGV[i], ARGV[i + 1]
          if change == '' then
            settled(id)
          elseif not fenced then
            inflight(id, change)
          end
        end
        if fenced then return {0} end
        return {1}
        """;

    /// <summary>ARGV: epoch, packet id, pending ('1'/'0').</summary>
    public const string Inbound = Fn.Keys + Fn.Stale + """
        if stale(ARGV[1]) then return {0} end
        if ARGV[3] == '1' then redis.call('SADD', i2, ARGV[2]) else redis.call('SREM', i2, ARGV[2]) end
        return {1}
        """;

    /// <summary>ARGV: epoch, count, bytes → {1, rows dropped, bytes dropped}: oldest first until both are reached.</summary>
    public const string DropOldest = Fn.Keys + Fn.Size + Fn.Stale + """
        if stale(ARGV[1]) then return {0} end
        local count, bytes = tonumber(ARGV[2]), tonumber(ARGV[3])
        local n, b = 0, 0
        while n < count or b < bytes do
          local ids = redis.call('ZRANGE', q, 0, 99)
          if #ids == 0 then break end
          for _, id in ipairs(ids) do
            if n >= count and b >= bytes then break end
            local blob = redis.call('HGET', m, id)
            local sz = blob and size(blob) or 0
            redis.call('ZREM', q, id)
            redis.call('HDEL', m, id)
            redis.call('HINCRBY', s, 'qb', -sz)
            n = n + 1
            b = b + sz
          end
        end
        return {1, n, b}
        """;

    /// <summary>ARGV: max rows, max bytes → the oldest queued blobs, in order (at least one when any).</summary>
    public const string Read = Fn.Keys + Fn.Size + """
        local out, b = {}, 0
        local limit = tonumber(ARGV[2])
        for _, id in ipairs(redis.call('ZRANGE', q, 0, tonumber(ARGV[1]) - 1)) do
          if #out > 0 and b >= limit then break end
          local blob = redis.call('HGET', m, id)
          if blob then
            table.insert(out, blob)
            b = b + size(blob)
          end
        end
        return out
        """;

    /// <summary>KEYS: the binding; ARGV: user → the owner after the call (SET NX, then GET, atomically).</summary>
    public const string Bind = """
        local current = redis.call('GET', KEYS[1])
        if current then return current end
        redis.call('SET', KEYS[1], ARGV[1])
        return ARGV[1]
        """;
}
