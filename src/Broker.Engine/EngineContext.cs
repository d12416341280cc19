using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging;

namespace Broker.Engine;

/// <summary>The engine's parts, wired once; every component reaches the others through it.</summary>
internal sealed class EngineContext
{
    long _lastMessageId;

    public EngineContext(EngineOptions options, IBrokerPolicy policy, IBrokerStore store, ILoggerFactory loggerFactory, BrokerCounters counters, TimeProvider time, Cluster.IClusterLink? cluster = null)
    {
        Options = options;
        Cluster = cluster ?? Broker.Engine.Cluster.SingleNode.Instance;
        _nodeBits = (long)(Cluster.NodeIndex & NodeIndexMask) << SequenceBits;
        Policy = policy;
        ConnectionObserver = policy as IConnectionObserver;
        DeliveryObserver = policy as IDeliveryObserver;
        Store = store;
        // Both go through one limiter: the lines a client can cause are at most ClientLogLimiter.LinesPerSecond a second per event.
        ClientLog = new ClientLogLimiter(time);
        Logger = ClientLog.Wrap(loggerFactory.CreateLogger("Broker.Engine"));
        ConnectionLogger = ClientLog.Wrap(loggerFactory.CreateLogger("Broker.Engine.Connections"));
        Counters = counters;
        Time = time;
        Sessions = new SessionManager(this);
        Mailbox = new OfflineMailbox(this);
        Retained = new RetainedMessages(options.Limits.MaxRetainedMessages, options.Limits.MaxRetainedBytes);
        Router = new Router(this);
        Logins = new Admission.LoginThrottle(options.Limits, counters, loggerFactory.CreateLogger<Admission.LoginThrottle>());
    }

    public EngineOptions Options { get; }

    public IBrokerPolicy Policy { get; }

    public IBrokerStore Store { get; }

    /// <summary>The other nodes (<see cref="Cluster.SingleNode"/> when there are none).</summary>
    public Cluster.IClusterLink Cluster { get; }

    /// <summary>The policy, when it follows connections; null otherwise.</summary>
    public IConnectionObserver? ConnectionObserver { get; }

    /// <summary>The policy, when it follows acknowledgements; null otherwise.</summary>
    public IDeliveryObserver? DeliveryObserver { get; }

    long _lastConnection;

    /// <summary>A number for a connection that took a session, unique for this run (<see cref="IConnectionObserver"/>).</summary>
    public long NextConnectionNumber() => Interlocked.Increment(ref _lastConnection);

    /// <summary>
    /// A recipient acknowledged a delivery: the delivery observer hears it when it wants this message's
    /// acknowledgements (asked once per message object, the answer kept on it). Never throws.
    /// </summary>
    public void Acknowledged(BrokerMessage message, ClientPrincipal recipient)
    {
        var observer = DeliveryObserver;
        if (observer is null)
        {
            return;
        }

        try
        {
            var interest = Volatile.Read(ref message.AckInterest);
            if (interest == 0)
            {
                interest = observer.ObservesAcknowledgements(message) ? 2 : 1;
                Volatile.Write(ref message.AckInterest, interest);
            }

            if (interest == 2)
            {
                observer.Acknowledged(message, recipient);
            }
        }
        catch (Exception ex)
        {
            EngineLog.ObserverFailed(Logger, "acknowledgement", ex);
        }
    }

    public ILogger Logger { get; }

    public ILogger ConnectionLogger { get; }

    /// <summary>Rate limit of the log lines a client can cause, shared by <see cref="Logger"/> and <see cref="ConnectionLogger"/>.</summary>
    public ClientLogLimiter ClientLog { get; }

    public BrokerCounters Counters { get; }

    public TimeProvider Time { get; }

    public SubscriptionIndex Index { get; } = new();

    public RetainedMessages Retained { get; }

    public SessionManager Sessions { get; }

    public OfflineMailbox Mailbox { get; }

    public Router Router { get; }

    /// <summary>Failed-login penalties per source address and user name, around every credential check.</summary>
    public Admission.LoginThrottle Logins { get; }

    /// <summary>The live connections (each adds and removes itself): shutdown and the keep-alive heartbeat visit them.</summary>
    public System.Collections.Concurrent.ConcurrentDictionary<Connections.MqttConnection, byte> Connections { get; } = new();

    public long NowUnixMs => Time.GetUtcNow().ToUnixTimeMilliseconds();

    /// <summary>A store write nobody waits on: its failure still gets a log line.</summary>
    public void Observe(ValueTask write, string topic)
    {
        if (!write.IsCompletedSuccessfully)
        {
            _ = ObserveAsync(write, topic);
        }
    }

    async Task ObserveAsync(ValueTask write, string topic)
    {
        try
        {
            await write;
        }
        catch (Exception ex)
        {
            EngineLog.StoreFailed(Logger, topic, ex);
        }
    }

    /// <summary>
    /// Message ids never repeat, across restarts and across the nodes of a cluster, and tell when the
    /// message was made: the clock in milliseconds × 2^20, then the node's index (8 bits), then a
    /// sequence (12 bits). Past 4,096 in one millisecond, or with a clock that went back, the next id
    /// borrows the following millisecond. A new run starts past every id an earlier one gave, so an id
    /// the store no longer shows (a message whose rows were all deleted) is never reused either.
    /// </summary>
    public long NextMessageId()
    {
        var now = (NowUnixMs << MessageIdTimeShift) | _nodeBits;
        while (true)
        {
            var last = Volatile.Read(ref _lastMessageId);
            var next = last + 1;
            if ((next & ~SequenceMask) != ((last & ~SequenceMask)))
            {
                // The sequence ran out (or the last id was another node's, from a restore): the next millisecond.
                next = (((last >> MessageIdTimeShift) + 1) << MessageIdTimeShift) | _nodeBits;
            }

            next = Math.Max(next, now);
            if (Interlocked.CompareExchange(ref _lastMessageId, next, last) == last)
            {
                return next;
            }
        }
    }

    const int SequenceBits = 12;
    const long SequenceMask = (1L << SequenceBits) - 1;
    const int NodeIndexMask = 0xFF;
    readonly long _nodeBits;

    const int MessageIdTimeShift = 20;

    // Ids from before they carried the time (a store written by an older broker) have no age.
    const long FirstTimedMessageId = 1_577_836_800_000L << MessageIdTimeShift; // 2020-01-01

    /// <summary>When the message was made (Unix ms), read from its id; 0 when the id does not say.</summary>
    public static long MessageTimeUnixMs(long id) => id < FirstTimedMessageId ? 0 : id >> MessageIdTimeShift;

    public void RestoreMessageId(long id)
    {
        // Into this node's own id space: the next id is past this one whoever gave it.
        var own = (id & ~((1L << MessageIdTimeShift) - 1)) | _nodeBits | SequenceMask;
        own = own >= id ? own : own + (1L << MessageIdTimeShift);
        if (own > _lastMessageId)
        {
            _lastMessageId = own;
        }
    }

}
