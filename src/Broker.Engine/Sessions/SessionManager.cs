using System.Collections.Concurrent;
using Broker.Engine.Connections;
using Broker.Engine.Diagnostics;
using Broker.Engine.Policy;
using Broker.Engine.Store;

namespace Broker.Engine.Sessions;

/// <summary>
/// Sessions by client id. Opening one handles clean start and takeover [MQTT-3.1.4-2, -3];
/// the heartbeat expires sessions and fires delayed wills. Opening and closing are serialised by
/// one lock: they are rare next to publishes, which never take it.
/// </summary>
internal sealed class SessionManager(EngineContext engine)
{
    readonly ConcurrentDictionary<string, Session> _sessions = new(StringComparer.Ordinal);
    readonly object _openGate = new();

    public int Count => _sessions.Count;

    public Session? Get(string clientId) => _sessions.TryGetValue(clientId, out var s) ? s : null;

    public IEnumerable<Session> All => _sessions.Values;

    /// <summary>
    /// Attaches <paramref name="connection"/> to the session of its client id. Returns the session and
    /// whether it was present [MQTT-3.2.2-2, -3]. A connection still attached is taken over.
    /// </summary>
    public (Session Session, bool Present) Open(MqttConnection connection, ClientPrincipal principal, bool cleanStart, uint expirySeconds, int sendQuota)
    {
        MqttConnection? previous = null;
        Session session;
        bool present;
        lock (_openGate)
        {
            _sessions.TryGetValue(principal.ClientId, out var existing);
            previous = existing?.Connection;

            // A session with expiry 0 lasts only as long as its network connection [MQTT-3.1.2-23]
            // (v3.1.1: clean session 1 [MQTT-3.1.2-6]); the takeover closes that connection, so such a
            // session is never resumed, even when the new CONNECT asks for clean start 0 (as mosquitto).
            if (existing is not null && (cleanStart || existing.ExpirySeconds == 0 || existing.IsExpired(engine.NowUnixMs)))
            {
                _sessions.TryRemove(principal.ClientId, out _);
                existing.Discard();
                existing = null;
            }

            present = existing is not null;
            session = existing ?? new Session(engine, principal.ClientId, principal);
            _sessions[principal.ClientId] = session;
            session.Attach(connection, principal, expirySeconds, sendQuota);
            if (existing is null)
            {
                engine.Cluster.SessionHosted(session);
            }
        }

        // Normally the connection closed the previous one first (MqttConnection.TakeOverPreviousAsync);
        // this covers one that did not finish closing in time.
        previous?.TakeOver();

        return (session, present);
    }

    /// <summary>
    /// Called when a connection ends; a session with expiry 0 ends with it [MQTT-3.1.2-23]. False when the
    /// session had already gone to another connection (a takeover).
    /// </summary>
    public bool Close(Session session, MqttConnection connection)
    {
        lock (_openGate)
        {
            if (!session.Detach(connection, engine.NowUnixMs))
            {
                return false;
            }

            if (session.ExpirySeconds == 0)
            {
                Remove(session);
            }

            return true;
        }
    }

    public void Remove(Session session)
    {
        if (_sessions.TryRemove(new KeyValuePair<string, Session>(session.ClientId, session)))
        {
            session.Discard();
        }
    }

    /// <summary>
    /// Ends a session (admin API): under the open gate, so a client reconnecting at that moment either
    /// joins the session before it ends (and is closed with it) or gets a fresh one, never a dead one.
    /// </summary>
    public bool End(string clientId)
    {
        MqttConnection? connection;
        lock (_openGate)
        {
            if (!_sessions.TryRemove(clientId, out var session))
            {
                return false;
            }

            connection = session.Connection;
            session.Discard();
        }

        connection?.Kick();
        return true;
    }

    public void AddRestored(Session session)
    {
        _sessions[session.ClientId] = session;
        engine.Cluster.SessionHosted(session);
    }

    /// <summary>
    /// A session this node claimed from the cluster's store (<see cref="Cluster.IClusterLink.ClaimAsync"/>) joins
    /// this node, unless it is here already (then this node's copy is the current one). Direct messages that
    /// waited for a new session's client id go to the mailbox, which hands them to the session when it opens.
    /// </summary>
    public void Adopt(string clientId, Cluster.ClaimedSession claimed)
    {
        lock (_openGate)
        {
            if (claimed.Record is { } record && !_sessions.ContainsKey(record.ClientId))
            {
                StoreRestore.Adopt(engine, record, claimed);
            }
        }

        foreach (var (message, expires) in claimed.Mailbox)
        {
            engine.Ids.Restore(message.Id);
            engine.Mailbox.Restore(clientId, message, expires);
        }
    }

    /// <summary>
    /// Another node took the session over: its connection here closes (v5 0x8E) and it leaves this node,
    /// its durable state untouched. Completes when that connection has closed (or after 2 s).
    /// </summary>
    public async Task ReleaseAsync(string clientId)
    {
        MqttConnection? connection;
        lock (_openGate)
        {
            if (!_sessions.TryRemove(clientId, out var session))
            {
                return;
            }

            connection = session.Connection;
            session.Forget();
        }

        if (connection is not null)
        {
            connection.TakeOver();
            await Task.WhenAny(connection.Closed, Task.Delay(TimeSpan.FromSeconds(2)));
        }
    }

    /// <summary>Heartbeat work: delayed wills that are due, sessions that expired [MQTT-3.1.2-23, 3.1.3-9].</summary>
    public void Sweep(long nowUnixMs)
    {
        foreach (var (_, session) in _sessions) // not .Values, which locks every bucket and copies every session each second
        {
            if (session.IsConnected)
            {
                continue;
            }

            var expired = session.IsExpired(nowUnixMs);
            if (session.PendingWill is { } will && (expired || nowUnixMs >= will.DueUnixMs))
            {
                session.PendingWill = null;
                _ = engine.Router.PublishWillAsync(MqttConnection.WillAsPublished(will.Message, will.ExpirySeconds, nowUnixMs), will.Sender);
                engine.Cluster.WillDisarmed(session.ClientId);
            }

            if (expired)
            {
                lock (_openGate)
                {
                    if (!session.IsConnected && session.IsExpired(nowUnixMs))
                    {
                        Remove(session);
                        EngineLog.SessionExpired(engine.Logger, session.ClientId);
                    }
                }
            }
        }
    }
}
