namespace Broker.Store.Sqlite;

/// <summary>
/// The tables, one per kind of state. A message is stored once (<c>messages</c>, with a reference
/// count) and referenced by a row per persistent recipient (<c>deliveries</c>) or per waiting client
/// id (<c>mailbox</c>); retained messages have their own table because they live independently.
/// </summary>
internal static class Schema
{
    public const int Version = 1;

    // auto_vacuum must be set on a new file before WAL mode and before the first table, or SQLite keeps it off.
    public const string Prepare = "PRAGMA auto_vacuum = INCREMENTAL;";

    public const string Create = """
        CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS sessions (
            client_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL,
            role TEXT NOT NULL,
            expiry INTEGER NOT NULL,
            disconnected_at INTEGER NOT NULL,
            subscriptions BLOB) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS messages (
            id INTEGER PRIMARY KEY,
            topic TEXT NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            retain INTEGER NOT NULL,
            properties BLOB,
            expires_at INTEGER NOT NULL,
            sender_client TEXT,
            sender_user TEXT,
            refs INTEGER NOT NULL);
        CREATE TABLE IF NOT EXISTS deliveries (
            client_id TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            qos INTEGER NOT NULL,
            retain INTEGER NOT NULL,
            subscription_ids BLOB,
            packet_id INTEGER NOT NULL,
            state INTEGER NOT NULL,
            PRIMARY KEY (client_id, message_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS mailbox (
            client_id TEXT NOT NULL,
            message_id INTEGER NOT NULL,
            expires_at INTEGER NOT NULL,
            PRIMARY KEY (client_id, message_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS inbound_qos2 (
            client_id TEXT NOT NULL,
            packet_id INTEGER NOT NULL,
            PRIMARY KEY (client_id, packet_id)) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS retained (
            topic TEXT PRIMARY KEY,
            id INTEGER NOT NULL,
            payload BLOB NOT NULL,
            qos INTEGER NOT NULL,
            properties BLOB,
            expires_at INTEGER NOT NULL,
            sender_client TEXT,
            sender_user TEXT) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS client_owners (
            client_id TEXT PRIMARY KEY,
            user_id TEXT NOT NULL) WITHOUT ROWID;
        CREATE TABLE IF NOT EXISTS records (
            kind TEXT NOT NULL,
            key TEXT NOT NULL,
            value BLOB,
            PRIMARY KEY (kind, key)) WITHOUT ROWID;
        INSERT OR IGNORE INTO meta (key, value) VALUES ('schema', '1');
        """;
}
