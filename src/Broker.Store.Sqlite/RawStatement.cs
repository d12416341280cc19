using Microsoft.Data.Sqlite;
using SQLitePCL;

namespace Broker.Store.Sqlite;

/// <summary>
/// One prepared statement run straight through SQLitePCLRaw on the store's connection: parameters bound
/// by index, nothing boxed, no reader. <see cref="SqliteCommand"/> looked every parameter up by name and
/// went through its data reader on each execution, which cost the writer more than SQLite itself.
/// Errors throw <see cref="SqliteException"/>, as the commands did, so the commit's handling is unchanged.
/// The statement runs inside whatever transaction the connection has open (SQLite's transactions are
/// per connection).
/// </summary>
internal sealed class RawStatement : IDisposable
{
    readonly sqlite3 _db;
    readonly sqlite3_stmt _stmt;

    /// <param name="parameters">The SQL's parameter names in index order: checked once here, so that
    /// binding by number cannot silently go to the wrong column.</param>
    public RawStatement(sqlite3 db, string sql, params string[] parameters)
    {
        _db = db;
        var rc = raw.sqlite3_prepare_v2(db, sql, out _stmt, out string tail);
        SqliteException.ThrowExceptionForRC(rc, db);
        try
        {
            if (!string.IsNullOrWhiteSpace(tail))
            {
                throw new ArgumentException($"one statement only, this one has more: {tail}", nameof(sql));
            }

            if (raw.sqlite3_bind_parameter_count(_stmt) != parameters.Length)
            {
                throw new ArgumentException($"{sql}: {raw.sqlite3_bind_parameter_count(_stmt)} parameters, {parameters.Length} named", nameof(parameters));
            }

            for (var i = 0; i < parameters.Length; i++)
            {
                if (raw.sqlite3_bind_parameter_index(_stmt, parameters[i]) != i + 1)
                {
                    throw new ArgumentException($"{sql}: {parameters[i]} is not parameter {i + 1}", nameof(parameters));
                }
            }
        }
        catch
        {
            Dispose();
            throw;
        }
    }

    // Indexes start at 1, as in SQLite. Each returns the statement, so a row binds in one expression.

    public RawStatement Bind(int index, long value) => Check(raw.sqlite3_bind_int64(_stmt, index, value));

    public RawStatement Bind(int index, int value) => Check(raw.sqlite3_bind_int(_stmt, index, value));

    public RawStatement Bind(int index, bool value) => Check(raw.sqlite3_bind_int(_stmt, index, value ? 1 : 0));

    /// <summary>Text, or NULL for null.</summary>
    public RawStatement Bind(int index, string? value) =>
        Check(value is null ? raw.sqlite3_bind_null(_stmt, index) : raw.sqlite3_bind_text(_stmt, index, value));

    /// <summary>A blob, or NULL for null.</summary>
    public RawStatement Bind(int index, byte[]? value) =>
        Check(value is null ? raw.sqlite3_bind_null(_stmt, index) : raw.sqlite3_bind_blob(_stmt, index, value));

    /// <summary>A blob, never NULL (an empty span is an empty blob); SQLite copies it.</summary>
    public RawStatement Bind(int index, ReadOnlySpan<byte> value) => Check(raw.sqlite3_bind_blob(_stmt, index, value));

    /// <summary>Runs a statement that returns no rows; the rows it changed.</summary>
    public int Execute()
    {
        try
        {
            SqliteException.ThrowExceptionForRC(raw.sqlite3_step(_stmt), _db); // reads the message before the reset
            return raw.sqlite3_changes(_db);
        }
        finally
        {
            Reset();
        }
    }

    /// <summary>The next row of a query: false when there is none. The caller calls <see cref="Reset"/> when done, also on error.</summary>
    public bool Step()
    {
        var rc = raw.sqlite3_step(_stmt);
        if (rc == raw.SQLITE_ROW)
        {
            return true;
        }

        SqliteException.ThrowExceptionForRC(rc, _db);
        return false;
    }

    /// <summary>
    /// Ready for the next execution. The bindings are cleared too: SQLite holds its own copy of a bound
    /// payload, which would otherwise stay in memory until the statement next runs.
    /// </summary>
    public void Reset()
    {
        raw.sqlite3_reset(_stmt); // returns the failed step's error again, already reported
        raw.sqlite3_clear_bindings(_stmt);
    }

    // Columns of the current row, from 0.

    public long Int64(int column) => raw.sqlite3_column_int64(_stmt, column);

    public int Int32(int column) => raw.sqlite3_column_int(_stmt, column);

    public bool Boolean(int column) => raw.sqlite3_column_int64(_stmt, column) != 0;

    public bool IsNull(int column) => raw.sqlite3_column_type(_stmt, column) == raw.SQLITE_NULL;

    public string? Text(int column) => IsNull(column) ? null : raw.sqlite3_column_text(_stmt, column).utf8_to_string();

    /// <summary>A copy of the blob (the span SQLite gives is valid only until the next step), or null for NULL.</summary>
    public byte[]? Blob(int column) => IsNull(column) ? null : raw.sqlite3_column_blob(_stmt, column).ToArray();

    /// <summary>Finalized before the connection closes, or the connection would linger until the finalizer ran.</summary>
    public void Dispose() => _stmt.Dispose();

    RawStatement Check(int rc)
    {
        if (rc != raw.SQLITE_OK)
        {
            SqliteException.ThrowExceptionForRC(rc, _db);
        }

        return this;
    }
}
