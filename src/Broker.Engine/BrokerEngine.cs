using System.IO.Pipelines;
using Broker.Engine.Connections;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging;
using Microsoft.Extensions.Options;
using MQTTnet.Protocol;

namespace Broker.Engine;

/// <summary>
/// The broker: give it each accepted connection's pipe and it speaks MQTT on it. It restores the
/// store's state before the first connection, runs one heartbeat for every timer (keep-alive,
/// delayed wills, session expiry), and tells clients when it shuts down.
/// </summary>
public sealed class BrokerEngine : IBrokerPublisher, IAsyncDisposable
{
    readonly EngineContext _engine;
    readonly CancellationTokenSource _stopping = new();
    Task? _heartbeat;

    public BrokerEngine(IOptions<EngineOptions> options, IBrokerPolicy policy, IBrokerStore store, ILoggerFactory loggerFactory, BrokerCounters counters, TimeProvider? time = null, Cluster.IClusterLink? cluster = null)
    {
        _engine = new EngineContext(options.Value, policy, store, loggerFactory, counters, time ?? TimeProvider.System, cluster);
    }

    /// <summary>The other nodes of the cluster (<see cref="Cluster.SingleNode"/> when alone).</summary>
    public Cluster.IClusterLink Cluster => _engine.Cluster;

    public BrokerCounters Counters => _engine.Counters;

    /// <summary>Failed-login penalties, shared by MQTT CONNECT and every other login (the admin API).</summary>
    public Admission.LoginThrottle Logins => _engine.Logins;

    public IBrokerStore Store => _engine.Store;

    public int SessionCount => _engine.Sessions.Count;

    public int SubscriptionCount => _engine.Index.Count;

    public int RetainedCount => _engine.Retained.Count;

    /// <summary>Direct messages waiting for a client id that has no session yet.</summary>
    public int MailboxCount => _engine.Mailbox.Count;

    public bool IsStarted { get; private set; }

    /// <summary>A session by client id, for operators and tests.</summary>
    public Session? FindSession(string clientId) => _engine.Sessions.Get(clientId);

    /// <summary>Every session, connected or not, for operators (admin API).</summary>
    public IReadOnlyList<Session> GetSessions() => [.. _engine.Sessions.All];

    /// <summary>Messages waiting in all session queues (a sum over sessions: for metrics scrapes, not hot paths).</summary>
    public long QueuedMessageCount
    {
        get
        {
            long total = 0;
            foreach (var session in _engine.Sessions.All)
            {
                total += session.QueuedCount;
            }

            return total;
        }
    }

    /// <summary>Closes a client's connection (v5 reason 0x98); false when it is not connected.</summary>
    public bool Disconnect(string clientId)
    {
        if (_engine.Sessions.Get(clientId)?.Connection is not { } connection)
        {
            return false;
        }

        connection.Kick();
        return true;
    }

    /// <summary>Closes every connection of a user (v5 reason 0x98), e.g. after the user was deleted or its password changed.</summary>
    public int DisconnectUser(string userId)
    {
        var closed = 0;
        foreach (var session in _engine.Sessions.All)
        {
            if (session.Principal.UserId == userId && session.Connection is { } connection)
            {
                connection.Kick();
                closed++;
            }
        }

        return closed;
    }

    /// <summary>Ends a session: its connection (if any) is closed and its subscriptions and queue are gone.</summary>
    public bool EndSession(string clientId) => _engine.Sessions.End(clientId);

    /// <summary>
    /// Publishes a message as <paramref name="sender"/> without the publish rules (the caller, e.g. the
    /// admin API or $SYS, decided it may); receivers are still read-checked. Completes when durable.
    /// </summary>
    public ValueTask PublishAsync(ClientPrincipal sender, string topic, ReadOnlyMemory<byte> payload, MqttQualityOfServiceLevel qos, bool retain)
    {
        var id = _engine.Ids.Next();
        var message = new BrokerMessage
        {
            Topic = topic,
            Payload = payload,
            Qos = qos,
            Retain = retain,
            UserProperties = _engine.Policy.TransformUserProperties(sender, null, id),
            SenderClientId = sender.ClientId,
            SenderUserId = sender.UserId,
            Id = id,
        };
        return _engine.Router.RouteAsync(message);
    }

    /// <inheritdoc/>
    public IReadOnlyList<BrokerMessage> GetRetained(string filter)
    {
        var found = new List<BrokerMessage>();
        _engine.Retained.CollectMatching(filter, found);
        return found;
    }

    public async Task StartAsync(CancellationToken cancellationToken)
    {
        var restored = await StoreRestore.RestoreAsync(_engine, cancellationToken);
        await _engine.Cluster.StartAsync(new Cluster.ClusterPeer(_engine), cancellationToken);
        EngineLog.Restored(_engine.Logger, restored.Sessions, restored.Messages, restored.Retained);
        if (_engine.Retained.IsOverLimits)
        {
            // Restored whatever the bounds: an operator who lowers a limit loses nothing already retained.
            EngineLog.RetainedOverLimits(_engine.Logger, _engine.Retained.Count, _engine.Retained.Bytes, _engine.Retained.MaxMessages, _engine.Retained.MaxBytes);
        }
        if (_engine.ConnectionObserver is { } observer)
        {
            // Before the first connection: the policy corrects what the store says about an earlier run.
            await observer.BrokerStartedAsync(this, cancellationToken);
        }

        _heartbeat = HeartbeatAsync(_stopping.Token);
        IsStarted = true;
    }

    /// <summary>Serves one connection until it closes.</summary>
    public Task HandleConnectionAsync(IDuplexPipe transport, ConnectionMetadata metadata, CancellationToken connectionClosed) =>
        new MqttConnection(_engine, transport, metadata, connectionClosed).RunAsync();

    /// <summary>Tells every client the server is going away (v5 0x8B) and stops the heartbeat.</summary>
    public async Task StopAsync(CancellationToken cancellationToken)
    {
        await _stopping.CancelAsync();
        foreach (var (connection, _) in _engine.Connections)
        {
            connection.Shutdown();
        }

        // Give connections a moment to flush their DISCONNECT.
        var deadline = Environment.TickCount64 + 2000;
        while (!_engine.Connections.IsEmpty && Environment.TickCount64 < deadline && !cancellationToken.IsCancellationRequested)
        {
            await Task.Delay(20, CancellationToken.None);
        }

        if (_heartbeat is not null)
        {
            await _heartbeat;
        }

        await _engine.Cluster.StopAsync(cancellationToken);

        if (_engine.ConnectionObserver is { } observer)
        {
            // The store is still open: what the policy writes about the closed connections is kept.
            try
            {
                await observer.BrokerStoppingAsync(cancellationToken);
            }
            catch (Exception ex)
            {
                EngineLog.ObserverFailed(_engine.Logger, "shutdown", ex);
            }
        }
    }

    /// <summary>One timer for the whole broker, as Kestrel's heartbeat: ticks every second.</summary>
    async Task HeartbeatAsync(CancellationToken stopping)
    {
        using var timer = new PeriodicTimer(TimeSpan.FromSeconds(1), _engine.Time);
        try
        {
            while (await timer.WaitForNextTickAsync(stopping))
            {
                var ticks = Environment.TickCount64;
                // The dictionary itself, not .Keys: Keys locks every bucket and copies every key, each second
                // (150 kB a second at 19,000 connections, which kept an idle broker allocating).
                foreach (var (connection, _) in _engine.Connections)
                {
                    connection.CheckKeepAlive(ticks);
                }

                _engine.Sessions.Sweep(_engine.NowUnixMs);
                _engine.Mailbox.Sweep(_engine.NowUnixMs);
                _engine.Logins.Sweep();
            }
        }
        catch (OperationCanceledException)
        {
        }
    }

    public async ValueTask DisposeAsync()
    {
        if (!_stopping.IsCancellationRequested)
        {
            await StopAsync(CancellationToken.None);
        }

        _stopping.Dispose();
    }
}
