using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Data.Sqlite;
using MQTTnet.Protocol;

namespace Broker.Store.Sqlite;

/// <summary>
/// Every statement the writer runs, prepared once and reused (as mosquitto's persist-sqlite does), as
/// <see cref="RawStatement"/>s on the store's connection: they take part in the transaction it has open.
/// </summary>
internal sealed class Statements : IDisposable
{
    readonly List<RawStatement> _all = [];
    readonly RawStatement _addMessage;
    readonly RawStatement _releaseMessage;
    readonly RawStatement _deleteReleased;
    readonly RawStatement _insertDelivery;
    readonly RawStatement _updateDelivery;
    readonly RawStatement _deleteDelivery;
    readonly RawStatement _deliveriesOf;
    readonly RawStatement _upsertSession;
    readonly RawStatement _deleteSession;
    readonly RawStatement _deleteSessionInbound;
    readonly RawStatement _addInbound;
    readonly RawStatement _removeInbound;
    readonly RawStatement _insertMailbox;
    readonly RawStatement _deleteMailbox;
    readonly RawStatement _setRetained;
    readonly RawStatement _deleteRetained;
    readonly RawStatement _bindOwner;
    readonly RawStatement _releaseOwner;
    readonly RawStatement _saveRecord;
    readonly RawStatement _oldestQueued;

    public Statements(SqliteConnection connection)
    {
        var db = connection.Handle ?? throw new InvalidOperationException("the connection is not open");

        // Bound by index: the names list each statement's parameters in that order (checked at prepare).
        RawStatement Prepare(string sql, params string[] parameters)
        {
            var statement = new RawStatement(db, sql, parameters);
            _all.Add(statement);
            return statement;
        }

        try
        {
            _addMessage = Prepare(
                """
                INSERT INTO messages (id, topic, payload, qos, retain, properties, expires_at, sender_client, sender_user, refs)
                VALUES ($id, $topic, $payload, $qos, $retain, $props, $expires, $sc, $su, $refs)
                ON CONFLICT (id) DO UPDATE SET refs = refs + excluded.refs
                """,
                "$id", "$topic", "$payload", "$qos", "$retain", "$props", "$expires", "$sc", "$su", "$refs");
            _deleteReleased = Prepare("DELETE FROM messages WHERE id = $id AND refs <= $n", "$id", "$n");
            _releaseMessage = Prepare("UPDATE messages SET refs = refs - $n WHERE id = $id", "$n", "$id");
            _insertDelivery = Prepare(
                "INSERT OR REPLACE INTO deliveries (client_id, message_id, qos, retain, subscription_ids, packet_id, state) VALUES ($c, $m, $qos, $retain, $ids, $pid, $state)",
                "$c", "$m", "$qos", "$retain", "$ids", "$pid", "$state");
            _updateDelivery = Prepare("UPDATE deliveries SET packet_id = $pid, state = $state WHERE client_id = $c AND message_id = $m", "$pid", "$state", "$c", "$m");
            _deleteDelivery = Prepare("DELETE FROM deliveries WHERE client_id = $c AND message_id = $m", "$c", "$m");
            _deliveriesOf = Prepare("SELECT message_id FROM deliveries WHERE client_id = $c", "$c");
            _upsertSession = Prepare(
                "INSERT OR REPLACE INTO sessions (client_id, user_id, role, expiry, disconnected_at, subscriptions) VALUES ($c, $u, $r, $e, $d, $s)",
                "$c", "$u", "$r", "$e", "$d", "$s");
            _deleteSession = Prepare("DELETE FROM sessions WHERE client_id = $c", "$c");
            _deleteSessionInbound = Prepare("DELETE FROM inbound_qos2 WHERE client_id = $c", "$c");
            _addInbound = Prepare("INSERT OR IGNORE INTO inbound_qos2 (client_id, packet_id) VALUES ($c, $p)", "$c", "$p");
            _removeInbound = Prepare("DELETE FROM inbound_qos2 WHERE client_id = $c AND packet_id = $p", "$c", "$p");
            _insertMailbox = Prepare("INSERT OR REPLACE INTO mailbox (client_id, message_id, expires_at) VALUES ($c, $m, $e)", "$c", "$m", "$e");
            _deleteMailbox = Prepare("DELETE FROM mailbox WHERE client_id = $c AND message_id = $m", "$c", "$m");
            _setRetained = Prepare(
                "INSERT OR REPLACE INTO retained (topic, id, payload, qos, properties, expires_at, sender_client, sender_user) VALUES ($topic, $id, $payload, $qos, $props, $expires, $sc, $su)",
                "$topic", "$id", "$payload", "$qos", "$props", "$expires", "$sc", "$su");
            _deleteRetained = Prepare("DELETE FROM retained WHERE topic = $topic", "$topic");
            _bindOwner = Prepare("INSERT OR IGNORE INTO client_owners (client_id, user_id) VALUES ($c, $u)", "$c", "$u");
            _releaseOwner = Prepare("DELETE FROM client_owners WHERE client_id = $c", "$c");
            _saveRecord = Prepare("INSERT OR REPLACE INTO records (kind, key, value) VALUES ($k, $key, $v)", "$k", "$key", "$v");

            // The primary key (client_id, message_id) makes this a range scan of one session's rows, oldest first.
            _oldestQueued = Prepare(
                """
                SELECT d.message_id, d.qos, d.retain, d.subscription_ids,
                       m.topic, m.payload, m.qos, m.retain, m.properties, m.expires_at, m.sender_client, m.sender_user
                FROM deliveries d JOIN messages m ON m.id = d.message_id
                WHERE d.client_id = $c AND d.state = 0
                ORDER BY d.message_id LIMIT $n
                """,
                "$c", "$n");
        }
        catch
        {
            Dispose(); // those prepared so far: the connection is closed by the caller
            throw;
        }
    }

    /// <summary>
    /// Reads a session's oldest queued rows with their messages, until <paramref name="keep"/> says
    /// stop (it sees each payload's size first); the rows stay where they are.
    /// </summary>
    public void ReadOldestQueued(string clientId, int max, Func<StoredDelivery, BrokerMessage, bool> keep)
    {
        var r = _oldestQueued.Bind(1, clientId).Bind(2, max);
        try
        {
            while (r.Step())
            {
                var id = r.Int64(0);
                var row = new StoredDelivery(clientId, id, (MqttQualityOfServiceLevel)r.Int32(1), r.Boolean(2), MessageCodec.DecodeIds(r.Blob(3)));
                var message = MessageCodec.Decode(id, r.Text(4)!, r.Blob(5) ?? [], r.Int32(6), r.Boolean(7),
                    r.Blob(8), r.Int64(9), r.Text(10), r.Text(11));
                if (!keep(row, message))
                {
                    return;
                }
            }
        }
        finally
        {
            r.Reset();
        }
    }

    public void AddMessage(BrokerMessage m, int references) => _addMessage
        .Bind(1, m.Id).Bind(2, m.Topic).Bind(3, m.Payload.Span).Bind(4, (int)m.Qos).Bind(5, m.Retain).Bind(6, MessageCodec.EncodeProperties(m))
        .Bind(7, m.ExpiresAtUnixMs).Bind(8, m.SenderClientId).Bind(9, m.SenderUserId).Bind(10, references)
        .Execute();

    /// <summary>
    /// Drops <paramref name="count"/> references; the message goes when none is left. Most often the
    /// last ones go (one recipient), so the row is deleted first and only updated if it stays.
    /// </summary>
    public void ReleaseMessage(long id, int count)
    {
        if (_deleteReleased.Bind(1, id).Bind(2, count).Execute() == 0)
        {
            _releaseMessage.Bind(1, count).Bind(2, id).Execute();
        }
    }

    public void InsertDelivery(StoredDelivery d) => _insertDelivery
        .Bind(1, d.ClientId).Bind(2, d.MessageId).Bind(3, (int)d.Qos).Bind(4, d.Retain).Bind(5, MessageCodec.EncodeIds(d.SubscriptionIds))
        .Bind(6, (int)d.PacketId).Bind(7, (int)d.State)
        .Execute();

    public void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state) =>
        _updateDelivery.Bind(1, (int)packetId).Bind(2, (int)state).Bind(3, clientId).Bind(4, messageId).Execute();

    public bool DeleteDelivery(string clientId, long messageId) => _deleteDelivery.Bind(1, clientId).Bind(2, messageId).Execute() > 0;

    public List<long> DeliveriesOf(string clientId)
    {
        var r = _deliveriesOf.Bind(1, clientId);
        var ids = new List<long>();
        try
        {
            while (r.Step())
            {
                ids.Add(r.Int64(0));
            }
        }
        finally
        {
            r.Reset();
        }

        return ids;
    }

    public void UpsertSession(SessionRecord s) => _upsertSession
        .Bind(1, s.ClientId).Bind(2, s.UserId).Bind(3, s.Role).Bind(4, (long)s.ExpirySeconds).Bind(5, s.DisconnectedAtUnixMs)
        .Bind(6, MessageCodec.EncodeSubscriptions(s.Subscriptions))
        .Execute();

    public void DeleteSession(string clientId)
    {
        _deleteSession.Bind(1, clientId).Execute();
        _deleteSessionInbound.Bind(1, clientId).Execute();
    }

    public void SetInboundQos2(string clientId, ushort packetId, bool pending) =>
        (pending ? _addInbound : _removeInbound).Bind(1, clientId).Bind(2, (int)packetId).Execute();

    public void InsertMailbox(string clientId, long messageId, long expiresAt) =>
        _insertMailbox.Bind(1, clientId).Bind(2, messageId).Bind(3, expiresAt).Execute();

    public bool DeleteMailbox(string clientId, long messageId) => _deleteMailbox.Bind(1, clientId).Bind(2, messageId).Execute() > 0;

    public void SetRetained(BrokerMessage m) => _setRetained
        .Bind(1, m.Topic).Bind(2, m.Id).Bind(3, m.Payload.Span).Bind(4, (int)m.Qos).Bind(5, MessageCodec.EncodeProperties(m))
        .Bind(6, m.ExpiresAtUnixMs).Bind(7, m.SenderClientId).Bind(8, m.SenderUserId)
        .Execute();

    public void DeleteRetained(string topic) => _deleteRetained.Bind(1, topic).Execute();

    public void BindOwner(string clientId, string userId) => _bindOwner.Bind(1, clientId).Bind(2, userId).Execute();

    public void ReleaseOwner(string clientId) => _releaseOwner.Bind(1, clientId).Execute();

    public void SaveRecord(string kind, string key, byte[]? value) => _saveRecord.Bind(1, kind).Bind(2, key).Bind(3, value).Execute();

    /// <summary>Before the connection closes.</summary>
    public void Dispose()
    {
        foreach (var statement in _all)
        {
            statement.Dispose();
        }

        _all.Clear();
    }
}
