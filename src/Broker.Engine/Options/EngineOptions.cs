namespace Broker.Engine.Options;

/// <summary>
/// The engine's settings, bound from the <c>Broker</c> configuration section.
/// Defaults follow mosquitto where it has one, and say so.
/// </summary>
public sealed class EngineOptions
{
    public const string SectionName = "Broker";

    public MqttListenerOptions Mqtt { get; set; } = new();

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

    /// <summary>Where the embedded store keeps its files, relative to the working directory.</summary>
    public string DataPath { get; set; } = "data";

    /// <summary>How long a direct (P2P) message waits for a client id that has no session yet.</summary>
    public TimeSpan OfflineP2PTtl { get; set; } = TimeSpan.FromDays(3);

    public StoreOptions Store { get; set; } = new();
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

public sealed class StoreOptions
{
    /// <summary>"sqlite" (default: one file under DataPath, crash-safe) or "memory" (nothing survives the process).</summary>
    public string Type { get; set; } = "sqlite";

    /// <summary>
    /// "full": every commit reaches the disk before the ack (survives power loss); "normal": survives a
    /// process crash (kill -9) but not a power cut, for more throughput (SQLite PRAGMA synchronous).
    /// </summary>
    public string Synchronous { get; set; } = "full";

    /// <summary>
    /// How long the writer lets changes gather before it commits (0 to 100 ms). A subscriber's PUBACK
    /// that arrives within it cancels the delivery it acknowledges, so neither is written; the price is
    /// up to this much more before the publisher's own PUBACK (as PostgreSQL's commit_delay).
    /// </summary>
    public TimeSpan CommitDelay { get; set; } = TimeSpan.FromMilliseconds(2);

    /// <summary>
    /// Store writes queued and not yet committed beyond which connections stop reading PUBLISH packets
    /// until the disk catches up (backpressure on publishers; nothing is dropped or refused).
    /// </summary>
    public int MaxPendingWrites { get; set; } = 100_000;
}

public sealed class MqttListenerOptions
{
    /// <summary>MQTT over TCP (IANA port 1883).</summary>
    public int Port { get; set; } = 1883;

    /// <summary>Interface to bind; "*" for all, "127.0.0.1" for loopback only.</summary>
    public string Host { get; set; } = "*";

    /// <summary>The address <see cref="Host"/> names, for every listener: "*" is all IPv4 interfaces (Kestrel's IPAddress.Any).</summary>
    public System.Net.IPAddress BindAddress() => Host == "*" ? System.Net.IPAddress.Any : System.Net.IPAddress.Parse(Host);

    /// <summary>Largest packet accepted, checked on the fixed header before buffering (MQTT 5 Maximum Packet Size; mosquitto: max_packet_size).</summary>
    public int MaxPacketSize { get; set; } = 256 * 1024;

    /// <summary>Time a new connection has to send CONNECT (slow-loris guard; mosquitto closes after 10 s too).</summary>
    public TimeSpan ConnectTimeout { get; set; } = TimeSpan.FromSeconds(10);

    /// <summary>QoS 1/2 publishes a client may have unacknowledged towards us (v5 Receive Maximum we announce).</summary>
    public int ReceiveMaximum { get; set; } = 100;

    /// <summary>QoS 1/2 messages we send before waiting for acks (mosquitto: max_inflight_messages = 20); a v5 client's own Receive Maximum can lower it.</summary>
    public int MaxInflightMessages { get; set; } = 20;

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

    /// <summary>
    /// Run each packet to completion on the socket thread that received it (read, route, write to the
    /// subscribers' sockets), as mosquitto's event loop does, instead of handing it through the thread
    /// pool at each step: Kestrel's UnsafePreferInlineScheduling plus inline socket completions. Work that
    /// may block (password hashing, JWT checks) is moved off that thread by the engine. Set false to go
    /// back to Kestrel's defaults.
    /// </summary>
    public bool InlineIo { get; set; } = true;

    /// <summary>
    /// What serves MQTT over plain TCP: "kestrel" (default, Kestrel's socket transport, as TLS and
    /// WebSocket) or "sockets" (the broker's own listener: a socket and pipes over it, about 1.8 kB less
    /// per idle connection).
    /// </summary>
    public string Transport { get; set; } = "kestrel";
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
