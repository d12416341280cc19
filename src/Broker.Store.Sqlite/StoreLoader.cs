using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Data.Sqlite;
using MQTTnet.Protocol;

namespace Broker.Store.Sqlite;

/// <summary>Reads the whole store once at start into a snapshot the engine restores from.</summary>
internal static class StoreLoader
{
    public static StoreSnapshot Load(SqliteConnection connection)
    {
        var snapshot = new StoreSnapshot();
        Read(connection, "SELECT client_id, user_id, role, expiry, disconnected_at, subscriptions FROM sessions", r =>
            snapshot.Sessions.Add(new SessionRecord(
                r.GetString(0), r.GetString(1), r.GetString(2), (uint)r.GetInt64(3), r.GetInt64(4),
                MessageCodec.DecodeSubscriptions(r.IsDBNull(5) ? null : (byte[])r[5]))));

        // Queued rows stay on disk (a session pages them in when it connects): only their totals are read,
        // and only the messages of in-flight rows and of the mailbox.
        Read(connection, "SELECT d.client_id, COUNT(*), SUM(length(m.payload)) FROM deliveries d JOIN messages m ON m.id = d.message_id WHERE d.state = 0 GROUP BY d.client_id", r =>
            snapshot.QueuedTotals[r.GetString(0)] = (r.GetInt32(1), r.GetInt64(2)));

        Read(connection, "SELECT MAX(id) FROM (SELECT MAX(id) AS id FROM messages UNION ALL SELECT MAX(id) FROM retained)", r =>
            snapshot.MaxMessageId = r.IsDBNull(0) ? 0 : r.GetInt64(0));

        Read(connection, """
            SELECT id, topic, payload, qos, retain, properties, expires_at, sender_client, sender_user FROM messages
            WHERE id IN (SELECT message_id FROM deliveries WHERE state <> 0 UNION SELECT message_id FROM mailbox)
            """, r =>
        {
            var message = MessageCodec.Decode(r.GetInt64(0), r.GetString(1), (byte[])r[2], r.GetInt32(3), r.GetBoolean(4),
                r.IsDBNull(5) ? null : (byte[])r[5], r.GetInt64(6), NullableString(r, 7), NullableString(r, 8));
            snapshot.Messages[message.Id] = message;
        });

        Read(connection, "SELECT client_id, message_id, qos, retain, subscription_ids, packet_id, state FROM deliveries WHERE state <> 0 ORDER BY message_id", r =>
            snapshot.Deliveries.Add(new StoredDelivery(
                r.GetString(0), r.GetInt64(1), (MqttQualityOfServiceLevel)r.GetInt32(2), r.GetBoolean(3),
                MessageCodec.DecodeIds(r.IsDBNull(4) ? null : (byte[])r[4]), (ushort)r.GetInt32(5), (DeliveryState)r.GetInt32(6))));

        Read(connection, "SELECT client_id, message_id, expires_at FROM mailbox ORDER BY message_id", r =>
        {
            if (snapshot.Messages.TryGetValue(r.GetInt64(1), out var message))
            {
                snapshot.Mailbox.Add((r.GetString(0), message, r.GetInt64(2)));
            }
        });

        Read(connection, "SELECT client_id, packet_id FROM inbound_qos2", r => snapshot.InboundQos2.Add((r.GetString(0), (ushort)r.GetInt32(1))));

        Read(connection, "SELECT topic, id, payload, qos, properties, expires_at, sender_client, sender_user FROM retained", r =>
            snapshot.Retained.Add(MessageCodec.Decode(r.GetInt64(1), r.GetString(0), (byte[])r[2], r.GetInt32(3), true,
                r.IsDBNull(4) ? null : (byte[])r[4], r.GetInt64(5), NullableString(r, 6), NullableString(r, 7))));

        return snapshot;
    }

    static string? NullableString(SqliteDataReader r, int i) => r.IsDBNull(i) ? null : r.GetString(i);

    static void Read(SqliteConnection connection, string sql, Action<SqliteDataReader> row)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            row(reader);
        }
    }
}
