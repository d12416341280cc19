using Microsoft.Data.Sqlite;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>A slow or failing disk for the SQLite store: another connection holds the file's write lock.</summary>
public static class SqliteWriteLock
{
    /// <summary>
    /// Takes the write lock of the database file at <paramref name="path"/> until the connection is disposed (closing
    /// it rolls the empty transaction back). Meanwhile the store's commits wait, up to its busy timeout, then fail.
    /// </summary>
    public static SqliteConnection Hold(string path)
    {
        var blocker = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
        blocker.Open();
        using var begin = blocker.CreateCommand();
        begin.CommandText = "BEGIN IMMEDIATE"; // in WAL mode the same as EXCLUSIVE: readers go on, no other writer
        begin.ExecuteNonQuery();
        return blocker;
    }
}
