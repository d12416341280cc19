namespace Broker.Engine.Options;

/// <summary>
/// The engine's settings, bound from the <c>Broker</c> configuration section: only what the engine reads.
/// The same section also holds the host's (listener: Broker.Transport.ListenerOptions; which store:
/// Broker.Configuration.StoreOptions) and the SQLite store's (Broker.Store.Sqlite.SqliteStoreOptions),
/// bound by the host into their own classes. Defaults follow mosquitto where it has one, and say so.
/// </summary>
public sealed class EngineOptions
{
    public const string SectionName = "Broker";

    public MqttProtocolOptions Mqtt { get; set; } = new();

    public LimitsOptions Limits { get; set; } = new();

    /// <summary>
    /// Messages a session holds in memory (mosquitto: max_queued_messages = 1000): all of a clean
    /// session's queue, beyond which the oldest is dropped; the window of a persistent session's queue,
    /// beyond which the rest waits in the store (see <see cref="OfflineQueue"/>).
    /// </summary>
    public int MaxQueuedMessages { get; set; } = 1000;

    /// <summary>Payload bytes a session holds in memory, with <see cref="MaxQueuedMessages"/> (mosquitto: max_queued_bytes).</summary>
    public long MaxQueuedBytes { get; set; } = 16L * 1024 * 1024;

    /// <summary>The queue of a persistent session, which waits in the store (contract §6).</summary>
    public OfflineQueueOptions OfflineQueue { get; set; } = new();

    /// <summary>Expiry of a v3.1.1 persistent session (clean session = 0), which cannot say its own. EMQX uses 2 h; chat apps want days.</summary>
    public TimeSpan DefaultSessionExpiry { get; set; } = TimeSpan.FromDays(7);

    /// <summary>How long a direct (P2P) message waits for a client id that has no session yet.</summary>
    public TimeSpan OfflineP2PTtl { get; set; } = TimeSpan.FromDays(3);
}

/// <summary>Limits per persistent session on the QoS 1/2 messages waiting in the store; beyond one the oldest are dropped.</summary>
public sealed class OfflineQueueOptions
{
    public int MaxMessages { get; set; } = 100_000;

    /// <summary>Payload bytes.</summary>
    public long MaxBytes { get; set; } = 64L * 1024 * 1024;

    /// <summary>How long a message may wait, counted from when it was published (as offline P2P messages).</summary>
    public TimeSpan Ttl { get; set; } = TimeSpan.FromDays(3);
}

/// <summary>
/// The MQTT protocol's limits, from <c>Broker:Mqtt</c>. Where and how MQTT is served (Port, Host, InlineIo,
/// Transport) is the host's, in the same section: Broker.Transport.ListenerOptions.
/// </summary>
public sealed class MqttProtocolOptions
{
    /// <summary>Largest packet accepted, checked on the fixed header before buffering (MQTT 5 Maximum Packet Size; mosquitto: max_packet_size).</summary>
    public int MaxPacketSize { get; set; } = 256 * 1024;

    /// <summary>Time a new connection has to send CONNECT (slow-loris guard; mosquitto closes after 10 s too).</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>QoS 1/2 publishes a client may have unacknowledged towards us (v5 Receive Maximum we announce).</summary>
    public int ReceiveMaximum { get; set; } = 100;

    /// <summary>
    /// QoS 1/2 messages we send before waiting for acks; a v5 client's own Receive Maximum can lower it. One
    /// subscriber's rate is at most this window per round trip, so it is 100, not mosquitto's 20: a phone that
    /// comes back to 1,000 queued messages over a 200 ms link gets them in 2 s, not 10.
    /// </summary>
    public int MaxInflightMessages { get; set; } = DefaultMaxInflightMessages;

    public const int DefaultMaxInflightMessages = 100;

    /// <summary>Inbound topic aliases a v5 client may use (0 disables them).</summary>
    public int TopicAliasMaximum { get; set; } = 64;

    /// <summary>
    /// Server Keep Alive in seconds (contract §9, <c>Broker:Mqtt:ServerKeepAlive</c>); 0 = off. Caps the client's keep-alive:
    /// a v5 client asking for more, or for 0, is sent this value in CONNACK and held to it [MQTT-3.2.2-21]; one asking for
    /// less keeps its own. A v3.1.x client cannot be told, so one asking for more (or 0) is refused with "identifier
    /// rejected", as mosquitto's max_keepalive does.
    /// </summary>
    public int ServerKeepAlive { get; set; }

    /// <summary>Deprecated name of <see cref="ServerKeepAlive"/>, still read when that one is 0 (or not set).</summary>
    public int? MaxKeepAliveSeconds { get; set; }

    /// <summary>The keep-alive cap in force: <see cref="ServerKeepAlive"/>, else the deprecated <see cref="MaxKeepAliveSeconds"/>; 0 = none.</summary>
    public int KeepAliveCap => ServerKeepAlive > 0 ? ServerKeepAlive : MaxKeepAliveSeconds ?? 0;
}

public sealed class LimitsOptions
{
    /// <summary>Concurrent connections over all listeners together (TCP, TLS, WebSocket, HTTP), one shared count.</summary>
    public int MaxConnections { get; set; } = 100_000;

    /// <summary>Longest topic name or filter in UTF-16 characters; MQTT allows 65,535 bytes, chat topics are far shorter.</summary>
    public int MaxTopicLength { get; set; } = 1024;

    /// <summary>Most levels in a topic (mosquitto refuses above 200).</summary>
    public int MaxTopicLevels { get; set; } = 32;

    /// <summary>Client ids that may have offline P2P messages waiting at once: a sender cannot fill memory by inventing ids.</summary>
    public int MaxMailboxClientIds { get; set; } = 100_000;

    /// <summary>
    /// Retained messages kept broker-wide (one per topic). A retained publish to one more topic is refused
    /// (v5 0x97); replacing or deleting an existing one is always allowed. The broker's own $SYS topics do not count against it.
    /// </summary>
    public int MaxRetainedMessages { get; set; } = 100_000;

    /// <summary>
    /// Bytes of all retained messages together (topic, payload and properties). A retained publish that
    /// would take the total above it is refused (v5 0x97); one that does not grow it (a smaller or equal
    /// replacement, a delete) is always allowed.
    /// </summary>
    public long MaxRetainedBytes { get; set; } = 256L * 1024 * 1024;

    /// <summary>
    /// New connections per second from one source address (token bucket, refilled every second); 0 turns
    /// the limit off. Far above what one NAT of phones opens, far below a connect flood.
    /// </summary>
    public int ConnectRatePerSource { get; set; } = 50;

    /// <summary>Size of that bucket: connections one source may open at once before the rate applies.</summary>
    public int ConnectBurstPerSource { get; set; } = 200;

    /// <summary>
    /// Password hashes (PBKDF2, slow on purpose) computed at once; more would only share the same cores.
    /// A remembered (cached) password does not take a place.
    /// </summary>
    public int MaxConcurrentPasswordChecks { get; set; } = 2;

    /// <summary>Password checks that may wait for a place; one more is answered "server busy".</summary>
    public int MaxQueuedPasswordChecks { get; set; } = 100;

    /// <summary>Delay after the first failed login of a source address or user name; it doubles with each further failure. 0 turns throttling off.</summary>
    public TimeSpan LoginFailureDelay { get; set; } = TimeSpan.FromMilliseconds(500);

    /// <summary>Cap on that delay: what a client behind the same address as an attacker waits at most.</summary>
    public TimeSpan LoginMaxDelay { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>A source address or user name without a failed login for this long starts again from no delay.</summary>
    public TimeSpan LoginFailureReset { get; set; } = TimeSpan.FromMinutes(10);
}
