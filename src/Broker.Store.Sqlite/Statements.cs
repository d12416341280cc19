using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Data.Sqlite;

namespace Broker.Store.Sqlite;

/// <summary>Every write statement, prepared once and reused by the writer (as mosquitto's persist-sqlite does).</summary>
internal sealed class Statements : IDisposable
{
    readonly List<SqliteCommand> _all = [];
    readonly SqliteCommand _addMessage;
    readonly SqliteCommand _releaseMessage;
    readonly SqliteCommand _deleteUnreferenced;
    readonly SqliteCommand _insertDelivery;
    readonly SqliteCommand _updateDelivery;
    readonly SqliteCommand _deleteDelivery;
    readonly SqliteCommand _deliveriesOf;
    readonly SqliteCommand _upsertSession;
    readonly SqliteCommand _deleteSession;
    readonly SqliteCommand _addInbound;
    readonly SqliteCommand _removeInbound;
    readonly SqliteCommand _insertMailbox;
    readonly SqliteCommand _deleteMailbox;
    readonly SqliteCommand _setRetained;
    readonly SqliteCommand _deleteRetained;
    readonly SqliteCommand _bindOwner;
    readonly SqliteCommand _releaseOwner;
    readonly SqliteCommand _saveRecord;
    readonly SqliteCommand _oldestQueued;

    public Statements(SqliteConnection connection)
    {
        SqliteCommand Prepare(string sql, params string[] parameters)
        {
            var command = connection.CreateCommand();
            command.CommandText = sql;
            foreach (var p in parameters)
            {
                command.Parameters.Add(new SqliteParameter(p, null));
            }

            _all.Add(command);
            return command;
        }

        _addMessage = Prepare(
            """
            INSERT INTO messages (id, topic, payload, qos, retain, properties, expires_at, sender_client, sender_user, refs)
            VALUES ($id, $topic, $payload, $qos, $retain, $props, $expires, $sc, $su, $refs)
            ON CONFLICT (id) DO UPDATE SET refs = refs + excluded.refs
            """,
            "$id", "$topic", "$payload", "$qos", "$retain", "$props", "$expires", "$sc", "$su", "$refs");
        _releaseMessage = Prepare("UPDATE messages SET refs = refs - $n WHERE id = $id", "$n", "$id");
        _deleteUnreferenced = Prepare("DELETE FROM messages WHERE id = $id AND refs <= 0", "$id");
        _insertDelivery = Prepare(
            "INSERT OR REPLACE INTO deliveries (client_id, message_id, qos, retain, subscription_ids, packet_id, state) VALUES ($c, $m, $qos, $retain, $ids, $pid, $state)",
            "$c", "$m", "$qos", "$retain", "$ids", "$pid", "$state");
        _updateDelivery = Prepare("UPDATE deliveries SET packet_id = $pid, state = $state WHERE client_id = $c AND message_id = $m", "$pid", "$state", "$c", "$m");
        _deleteDelivery = Prepare("DELETE FROM deliveries WHERE client_id = $c AND message_id = $m", "$c", "$m");
        _deliveriesOf = Prepare("SELECT message_id FROM deliveries WHERE client_id = $c", "$c");
        _upsertSession = Prepare(
            "INSERT OR REPLACE INTO sessions (client_id, user_id, role, expiry, disconnected_at, subscriptions) VALUES ($c, $u, $r, $e, $d, $s)",
            "$c", "$u", "$r", "$e", "$d", "$s");
        _deleteSession = Prepare("DELETE FROM sessions WHERE client_id = $c; DELETE FROM inbound_qos2 WHERE client_id = $c", "$c");
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

    /// <summary>
    /// Reads a session's oldest queued rows with their messages, until <paramref name="keep"/> says
    /// stop (it sees each payload's size first); the rows stay where they are.
    /// </summary>
    public void ReadOldestQueued(string clientId, int max, Func<StoredDelivery, BrokerMessage, bool> keep)
    {
        _oldestQueued.Parameters[0].Value = clientId;
        _oldestQueued.Parameters[1].Value = max;
        using var r = _oldestQueued.ExecuteReader();
        while (r.Read())
        {
            var id = r.GetInt64(0);
            var row = new StoredDelivery(clientId, id, (MQTTnet.Protocol.MqttQualityOfServiceLevel)r.GetInt32(1), r.GetBoolean(2), MessageCodec.DecodeIds(r.IsDBNull(3) ? null : (byte[])r[3]));
            var message = MessageCodec.Decode(id, r.GetString(4), (byte[])r[5], r.GetInt32(6), r.GetBoolean(7),
                r.IsDBNull(8) ? null : (byte[])r[8], r.GetInt64(9), r.IsDBNull(10) ? null : r.GetString(10), r.IsDBNull(11) ? null : r.GetString(11));
            if (!keep(row, message))
            {
                return;
            }
        }
    }

    public void Use(SqliteTransaction transaction)
    {
        foreach (var command in _all)
        {
            command.Transaction = transaction;
        }
    }

    public void AddMessage(BrokerMessage m, int references) => Run(_addMessage,
        m.Id, m.Topic, m.Payload.ToArray(), (int)m.Qos, m.Retain, MessageCodec.EncodeProperties(m), m.ExpiresAtUnixMs, m.SenderClientId, m.SenderUserId, references);

    /// <summary>Drops <paramref name="count"/> references; the message goes when none is left.</summary>
    public void ReleaseMessage(long id, int count)
    {
        Run(_releaseMessage, count, id);
        Run(_deleteUnreferenced, id);
    }

    public void InsertDelivery(StoredDelivery d) => Run(_insertDelivery,
        d.ClientId, d.MessageId, (int)d.Qos, d.Retain, MessageCodec.EncodeIds(d.SubscriptionIds), (int)d.PacketId, (int)d.State);

    public void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state) =>
        Run(_updateDelivery, (int)packetId, (int)state, clientId, messageId);

    public bool DeleteDelivery(string clientId, long messageId) => Run(_deleteDelivery, clientId, messageId) > 0;

    public List<long> DeliveriesOf(string clientId)
    {
        _deliveriesOf.Parameters[0].Value = clientId;
        var ids = new List<long>();
        using var reader = _deliveriesOf.ExecuteReader();
        while (reader.Read())
        {
            ids.Add(reader.GetInt64(0));
        }

        return ids;
    }

    public void UpsertSession(SessionRecord s) => Run(_upsertSession,
        s.ClientId, s.UserId, s.Role, (long)s.ExpirySeconds, s.DisconnectedAtUnixMs, MessageCodec.EncodeSubscriptions(s.Subscriptions));

    public void DeleteSession(string clientId) => Run(_deleteSession, clientId);

    public void SetInboundQos2(string clientId, ushort packetId, bool pending) => Run(pending ? _addInbound : _removeInbound, clientId, (int)packetId);

    public void InsertMailbox(string clientId, long messageId, long expiresAt) => Run(_insertMailbox, clientId, messageId, expiresAt);

    public bool DeleteMailbox(string clientId, long messageId) => Run(_deleteMailbox, clientId, messageId) > 0;

    public void SetRetained(BrokerMessage m) => Run(_setRetained,
        m.Topic, m.Id, m.Payload.ToArray(), (int)m.Qos, MessageCodec.EncodeProperties(m), m.ExpiresAtUnixMs, m.SenderClientId, m.SenderUserId);

    public void DeleteRetained(string topic) => Run(_deleteRetained, topic);

    public void BindOwner(string clientId, string userId) => Run(_bindOwner, clientId, userId);

    public void ReleaseOwner(string clientId) => Run(_releaseOwner, clientId);

    public void SaveRecord(string kind, string key, byte[]? value) => Run(_saveRecord, kind, key, value);

    public void Dispose()
    {
        foreach (var command in _all)
        {
            command.Dispose();
        }
    }

    static int Run(SqliteCommand command, params object?[] values)
    {
        for (var i = 0; i < values.Length; i++)
        {
            command.Parameters[i].Value = values[i] ?? DBNull.Value;
        }

        return command.ExecuteNonQuery();
    }
}
