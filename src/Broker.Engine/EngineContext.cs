using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging;

namespace Broker.Engine;

/// <summary>
/// The engine's shared parts, wired once, as Kestrel's <c>ServiceContext</c>: the options, the seams to the
/// other rooms (policy, store, cluster), the logs and counters, and the engine's own tables (sessions,
/// subscriptions, retained, mailbox, router). Per-client objects (connections, sessions) keep one reference
/// to it rather than one per part they use: at 19,000 connections each field counts. It holds no logic of its
/// own beyond small helpers; message ids are <see cref="MessageIds"/>, routing is <see cref="Router"/>.
/// </summary>
internal sealed class EngineContext
{
    public EngineContext(EngineOptions options, IBrokerPolicy policy, IBrokerStore store, ILoggerFactory loggerFactory, BrokerCounters counters, TimeProvider time, Cluster.IClusterLink? cluster = null)
    {
        Options = options;
        Cluster = cluster ?? Broker.Engine.Cluster.SingleNode.Instance;
        Ids = new MessageIds(Cluster.NodeIndex, time);
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

    /// <summary>The ids this node gives its messages.</summary>
    public MessageIds Ids { get; }

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
}
