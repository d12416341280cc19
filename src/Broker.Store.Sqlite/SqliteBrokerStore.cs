using System.Collections.Concurrent;
using System.Diagnostics;
using System.Threading.Channels;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Microsoft.Data.Sqlite;
using Microsoft.Extensions.Logging;

namespace Broker.Store.Sqlite;

/// <summary>
/// The durable store: one SQLite file in WAL mode under the data directory. Every call becomes an
/// operation on one channel; a single writer drains it and commits what has gathered in one
/// transaction (group commit), so concurrent publishes share one fsync. Acknowledgements wait on the
/// commit: a publish is acked only when it is on disk. Reads happen once, at start.
/// <para>
/// The channel is unbounded, so no write is ever refused or blocks its caller; instead the number of
/// operations queued and not yet committed (<see cref="PendingWrites"/>) has a bound,
/// <c>Broker:Store:MaxPendingWrites</c>: at or above it <see cref="WaitForRoomAsync"/> holds the
/// connections before their next PUBLISH until commits bring it below again (backpressure on the
/// publishers, through TCP), while acks, removals and in-flight marks still queue and keep it moving.
/// </para>
/// </summary>
public sealed partial class SqliteBrokerStore : IBrokerStore, IPolicyRecords, IClientIdBindings
{
    public const string FileName = "broker.db";
    internal const int MaxBatch = 2048;

    /// <summary>Changes queued while the last commit ran that make the next commit start at once (see <see cref="Gather"/>).</summary>
    internal const int EagerBatch = 64;
    static readonly TimeSpan MaintenanceInterval = TimeSpan.FromMinutes(10);

    readonly Channel<StoreOperation> _operations = Channel.CreateUnbounded<StoreOperation>(new UnboundedChannelOptions { SingleReader = true });
    readonly ConcurrentDictionary<string, string> _owners = new(StringComparer.Ordinal);
    readonly SqliteConnection _connection;
    readonly Statements _sql;
    readonly BatchElision _elision = new();
    // References released in the batch being written, per message: one UPDATE per message at the end
    // instead of one per removed delivery (a group message to 100 members loses 100 at once).
    readonly Dictionary<long, int> _releases = [];
    readonly ILogger _logger;
    Task _writer = Task.CompletedTask; // set by Start
    readonly TimeSpan _commitDelay;
    readonly int _maxPendingWrites;
    readonly object _roomGate = new();
    TaskCompletionSource? _room; // set while a connection waits for room; completed by the writer (or dispose)
    long _pendingWrites;
    long _batches;
    long _operationsWritten;
    long _operationsElided;
    long _commitTicks;

    /// <summary>
    /// SQLite counts every allocation under a process-wide mutex for <c>sqlite3_memory_used()</c>, which nothing
    /// here reads; SQLite's own advice for speed is to turn it off (<c>SQLITE_DEFAULT_MEMSTATUS=0</c>). It can only be
    /// done before SQLite's first use in the process: a later call answers SQLITE_MISUSE and changes nothing.
    /// </summary>
    static SqliteBrokerStore()
    {
        SQLitePCL.Batteries_V2.Init();
        _ = SQLitePCL.raw.sqlite3_config(SQLitePCL.raw.SQLITE_CONFIG_MEMSTATUS, 0);
    }

    SqliteBrokerStore(string path, SqliteConnection connection, ILogger logger, TimeSpan commitDelay, int maxPendingWrites)
    {
        FilePath = path;
        _commitDelay = commitDelay;
        _maxPendingWrites = maxPendingWrites;
        _connection = connection;
        _logger = logger;
        _sql = new Statements(connection);
    }

    /// <summary>After the file is read: nothing runs in the background until the open has succeeded.</summary>
    void Start()
    {
        // A thread of its own that blocks while idle: waking it is one futex, not a thread-pool hop plus a timer.
        _writer = Task.Factory.StartNew(WriteLoop, CancellationToken.None, TaskCreationOptions.LongRunning, TaskScheduler.Default);
        _ = MaintainLoopAsync();
    }

    public string FilePath { get; }

    /// <summary>Commits so far; with <see cref="OperationsWritten"/> gives the mean batch size.</summary>
    public long Batches => Interlocked.Read(ref _batches);

    public long OperationsWritten => Interlocked.Read(ref _operationsWritten);

    /// <summary>Operations queued and not yet committed (those being written included): the write queue's depth.</summary>
    public long PendingWrites => Interlocked.Read(ref _pendingWrites);

    /// <summary>The bound on <see cref="PendingWrites"/> at which publishers wait (Broker:Store:MaxPendingWrites).</summary>
    public int MaxPendingWrites => _maxPendingWrites;

    /// <summary>Changes that cancelled out within their batch and were never written (see <see cref="BatchElision"/>).</summary>
    public long OperationsElided => Interlocked.Read(ref _operationsElided);

    /// <summary>Mean commit time in milliseconds.</summary>
    public double MeanCommitMilliseconds => Batches == 0 ? 0 : Interlocked.Read(ref _commitTicks) * 1000.0 / Stopwatch.Frequency / Batches;

    /// <summary>Opens (or creates) <c>{dataPath}/broker.db</c>; a file that cannot be read fails here, naming it.</summary>
    public static SqliteBrokerStore Open(string dataPath, bool fullSync, ILogger logger, TimeSpan commitDelay = default, int maxPendingWrites = 100_000)
    {
        ArgumentOutOfRangeException.ThrowIfLessThan(maxPendingWrites, 1);
        var path = Path.GetFullPath(Path.Combine(dataPath, FileName));
        SqliteConnection? connection = null;
        SqliteBrokerStore? store = null;
        try
        {
            Directory.CreateDirectory(Path.GetDirectoryName(path)!);
            connection = new SqliteConnection(new SqliteConnectionStringBuilder { DataSource = path, Pooling = false }.ToString());
            connection.Open();
            Execute(connection, Schema.Prepare);
            Execute(connection, $"PRAGMA journal_mode = WAL; PRAGMA synchronous = {(fullSync ? "FULL" : "NORMAL")}; PRAGMA busy_timeout = 5000;");
            Execute(connection, Schema.Create);
            CheckVersion(connection);
            store = new SqliteBrokerStore(path, connection, logger, commitDelay, maxPendingWrites);
            store.LoadOwners();
            store.Start();
            LogOpened(logger, path, fullSync ? "full" : "normal");
            return store;
        }
        catch (Exception ex) when (ex is SqliteException or IOException or UnauthorizedAccessException or InvalidDataException)
        {
            store?._sql.Dispose();
            connection?.Dispose();
            throw new StoreUnavailableException(path, ex);
        }
    }

    // ---- IBrokerStore: every call is queued in order ---------------------------------------------

    public ValueTask<StoreSnapshot> LoadAsync(CancellationToken cancellationToken)
    {
        // Runs on the caller before the engine accepts connections; nothing else writes yet.
        try
        {
            return ValueTask.FromResult(StoreLoader.Load(_connection));
        }
        catch (Exception ex) when (ex is SqliteException or InvalidDataException or EndOfStreamException)
        {
            throw new StoreUnavailableException(FilePath, ex);
        }
    }

    public ValueTask FlushAsync() => EnqueueAwaited(new StoreOperation.Flush());

    // One volatile read below the bound: the PUBLISH fast path allocates nothing.
    public ValueTask WaitForRoomAsync() => Volatile.Read(ref _pendingWrites) < _maxPendingWrites ? ValueTask.CompletedTask : WaitForRoomSlow();

    ValueTask WaitForRoomSlow()
    {
        TaskCompletionSource room;
        lock (_roomGate)
        {
            room = _room ??= new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
        }

        // _room is published before the count is read again, and the writer lowers the count before it
        // looks at _room (both with full fences): one of the two sees the other, so no wake-up is lost.
        Interlocked.MemoryBarrier();
        if (Interlocked.Read(ref _pendingWrites) < _maxPendingWrites || _operations.Reader.Completion.IsCompleted)
        {
            ReleaseRoom();
        }

        // Continuations run asynchronously: the waiting receive loops never run on the writer's thread.
        return new ValueTask(room.Task);
    }

    void ReleaseRoom()
    {
        TaskCompletionSource? room;
        lock (_roomGate)
        {
            room = _room;
            _room = null;
        }

        room?.TrySetResult();
    }

    public void UpsertSession(SessionRecord session) => Enqueue(new StoreOperation.UpsertSession(session));

    public void DeleteSession(string clientId) => Enqueue(new StoreOperation.DeleteSession(clientId));

    // Completed on the writer thread: what waits on it is a connection's line of pending acks
    // (AckSequencer.SendDurableAcks), which only queues PUBACK/PUBREC and writes them, so running it
    // here saves a thread hop per publisher per commit; under a sustained load, on the pool (see Commit).
    public ValueTask AppendAsync(BrokerMessage message, IReadOnlyList<StoredDelivery> deliveries, InboundPacket? inbound = null) =>
        deliveries.Count == 0 && inbound is null ? ValueTask.CompletedTask : EnqueueAwaited(new StoreOperation.Append(message, deliveries, inbound), TaskCreationOptions.None);

    public void UpdateDelivery(string clientId, long messageId, ushort packetId, DeliveryState state) =>
        Enqueue(new StoreOperation.UpdateDelivery(clientId, messageId, packetId, state));

    public void RemoveDelivery(string clientId, long messageId) => Enqueue(new StoreOperation.RemoveDelivery(clientId, messageId));

    public void SetInboundQos2(string clientId, ushort packetId, bool pending) => Enqueue(new StoreOperation.InboundQos2(clientId, packetId, pending));

    public async ValueTask<IReadOnlyList<QueuedMessage>> ReadQueueAsync(string clientId, int maxMessages, long maxBytes)
    {
        // The completion is set here, not by EnqueueAwaited's copy, so the writer fills this very operation.
        var read = new StoreOperation.ReadQueue(clientId, maxMessages, maxBytes) { Done = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        await EnqueueAwaited(read);
        return read.Result;
    }

    public async ValueTask<(int Count, long Bytes)> DropOldestQueuedAsync(string clientId, int count, long bytes)
    {
        var drop = new StoreOperation.DropOldestQueued(clientId, count, bytes) { Done = new(TaskCreationOptions.RunContinuationsAsynchronously) };
        await EnqueueAwaited(drop);
        return drop.Result;
    }

    public ValueTask AddToMailboxAsync(string clientId, BrokerMessage message, long expiresAtUnixMs, InboundPacket? inbound = null) =>
        EnqueueAwaited(new StoreOperation.MailboxAdd(clientId, message, expiresAtUnixMs, inbound));

    public void RemoveFromMailbox(string clientId, long messageId) => Enqueue(new StoreOperation.MailboxRemove(clientId, messageId));

    public ValueTask SetRetainedAsync(BrokerMessage message) => EnqueueAwaited(new StoreOperation.RetainedSet(message));

    public ValueTask DeleteRetainedAsync(string topic) => EnqueueAwaited(new StoreOperation.RetainedDelete(topic));

    /// <summary>Read at start, before the writer has anything to do (like <see cref="LoadAsync"/>).</summary>
    /// <summary>Only this process writes the store: nothing changes elsewhere.</summary>
    public event Action<string, string, byte[]?>? ChangedElsewhere { add { } remove { } }

    public event Action? Resync { add { } remove { } }

    public IReadOnlyList<(string Key, byte[]? Value)> LoadRecords(string kind)
    {
        using var command = _connection.CreateCommand();
        command.CommandText = "SELECT key, value FROM records WHERE kind = $kind ORDER BY key";
        command.Parameters.AddWithValue("$kind", kind);
        using var reader = command.ExecuteReader();
        var records = new List<(string, byte[]?)>();
        while (reader.Read())
        {
            records.Add((reader.GetString(0), reader.IsDBNull(1) ? null : (byte[])reader[1]));
        }

        return records;
    }

    public ValueTask SaveRecordAsync(string kind, string key, byte[]? value) => EnqueueAwaited(new StoreOperation.SaveRecord(kind, key, value));

    // The bindings are all in memory (loaded at start): the answers are synchronous.
    public ValueTask<string?> GetClientOwnerAsync(string clientId) => ValueTask.FromResult(_owners.TryGetValue(clientId, out var user) ? user : null);

    public ValueTask<string> BindClientOwnerAsync(string clientId, string userId)
    {
        var owner = _owners.GetOrAdd(clientId, userId);
        if (ReferenceEquals(owner, userId))
        {
            Enqueue(new StoreOperation.OwnerBind(clientId, userId));
        }

        return ValueTask.FromResult(owner);
    }

    public ValueTask<bool> ReleaseClientOwnerAsync(string clientId)
    {
        if (!_owners.TryRemove(clientId, out _))
        {
            return ValueTask.FromResult(false);
        }

        Enqueue(new StoreOperation.OwnerRelease(clientId));
        return ValueTask.FromResult(true);
    }

    int _disposed;

    /// <summary>Once: the host disposes the store under each interface it is registered as.</summary>
    public async ValueTask DisposeAsync()
    {
        if (Interlocked.Exchange(ref _disposed, 1) == 1)
        {
            return;
        }

        _operations.Writer.TryComplete();
        _wake.Set();
        _stopping.Set(); // a writer waiting out the commit delay commits what is left now
        await _writer;
        ReleaseRoom(); // nobody waits for a store that is gone (its writes fail from now on)
        _sql.Dispose();
        Execute(_connection, "PRAGMA wal_checkpoint(TRUNCATE);");
        await _connection.DisposeAsync();
    }

    ValueTask EnqueueAwaited(StoreOperation operation, TaskCreationOptions completion = TaskCreationOptions.RunContinuationsAsynchronously)
    {
        var done = operation.Done ?? new TaskCompletionSource(completion);
        if (!Enqueue(operation.Done is null ? operation with { Done = done } : operation))
        {
            return ValueTask.FromException(new ObjectDisposedException(nameof(SqliteBrokerStore)));
        }

        return new ValueTask(done.Task);
    }

    // ---- the writer --------------------------------------------------------------------------------
    //
    // The writer thread sleeps on _wake when the queue is empty, and only then does a producer wake it:
    // one futex call, no spinning (a blocking wait on a Task spins with sched_yield first, which on a
    // small machine took CPU from the connections).

    readonly ManualResetEventSlim _wake = new(false, spinCount: 0);
    int _writerIdle;

    // Ends the commit delay's wait at dispose.
    readonly ManualResetEventSlim _stopping = new(false, spinCount: 0);
    bool _sustained; // the writer's own: batches queue while it commits (see Pace)

    /// <summary>The writer thread's id (tests: whose thread sent an ack).</summary>
    internal int WriterThreadId { get; private set; }

    /// <summary>Queues a change in order; false once the store is disposed.</summary>
    bool Enqueue(StoreOperation operation)
    {
        if (!_operations.Writer.TryWrite(operation))
        {
            return false;
        }

        Interlocked.Increment(ref _pendingWrites); // lowered when the operation is committed (or given up on)

        if (Interlocked.CompareExchange(ref _writerIdle, 0, 1) == 1)
        {
            _wake.Set();
        }

        return true;
    }

    /// <summary>Blocks until something is queued; false once the store is disposed and the queue drained.</summary>
    bool WaitForWork(ChannelReader<StoreOperation> reader)
    {
        while (_carriedOver.Count == 0 && !reader.TryPeek(out _))
        {
            if (reader.Completion.IsCompleted)
            {
                return false;
            }

            _wake.Reset();
            Interlocked.Exchange(ref _writerIdle, 1); // then look again: a producer that saw 0 has queued already
            if (!reader.TryPeek(out _) && !reader.Completion.IsCompleted)
            {
                _wake.Wait();
            }

            Volatile.Write(ref _writerIdle, 0);
        }

        return true;
    }

    void WriteLoop()
    {
        WriterThreadId = Environment.CurrentManagedThreadId;
        var batch = new List<StoreOperation>(MaxBatch);
        var reader = _operations.Reader;
        while (WaitForWork(reader))
        {
            Pace();

            batch.Clear();
            batch.AddRange(_carriedOver); // first: they were made before anything still queued
            _carriedOver.Clear();
            while (batch.Count < MaxBatch && reader.TryRead(out var operation))
            {
                // Maintenance, reads and queue trims go alone: elision must not pair changes across a
                // read, which has to see every change made before it.
                if (operation.IsAlone && batch.Count > 0)
                {
                    Commit(batch);
                    batch.Clear();
                }

                batch.Add(operation);
                if (operation.IsAlone)
                {
                    break;
                }
            }

            Commit(batch);
        }
    }

    /// <summary>
    /// How long the writer lets the next batch gather, given the changes already waiting when it looks (right
    /// after its last commit, or woken from idle). At a low rate the commit delay gathers a batch and lets acks
    /// cancel the deliveries they acknowledge. When the last commit's own duration left a batch waiting, the load
    /// is sustained: that batch is large anyway, and the delay would only keep its publishers from their PUBACKs
    /// (fan-in QoS 1, 4 publishers to one subscriber: 0.84-0.88 → 0.95 × mosquitto). A burst after a quiet spell
    /// still waits, so its acks can cancel it (p2p at 5,000/s keeps its CPU per message).
    /// </summary>
    internal static TimeSpan Gather(TimeSpan commitDelay, long waiting) => waiting >= EagerBatch ? TimeSpan.Zero : commitDelay;

    /// <summary>Lets the next batch gather (<see cref="Gather"/>), and notes whether the writer is the one everyone waits on.</summary>
    void Pace()
    {
        var waiting = Interlocked.Read(ref _pendingWrites);
        _sustained = waiting >= EagerBatch;
        var gather = Gather(_commitDelay, waiting);
        if (gather > TimeSpan.Zero)
        {
            _stopping.Wait(gather);
        }
    }

    /// <summary>Every ten minutes a checkpoint and an incremental vacuum go through the same queue, in order.</summary>
    async Task MaintainLoopAsync()
    {
        using var timer = new PeriodicTimer(MaintenanceInterval);
        while (await timer.WaitForNextTickAsync() && Enqueue(new StoreOperation.Maintain()))
        {
        }
    }

    void Commit(List<StoreOperation> batch)
    {
        var started = Stopwatch.GetTimestamp();
        Exception? failure = null;
        try
        {
            if (batch is [StoreOperation.Maintain])
            {
                Execute(_connection, "PRAGMA wal_checkpoint(TRUNCATE); PRAGMA incremental_vacuum;");
            }
            else
            {
                _elision.Plan(batch);
                Interlocked.Add(ref _operationsElided, _elision.Elided);
                _releases.Clear();
                // The statements are raw ones on this connection: they run inside this transaction.
                using var transaction = _connection.BeginTransaction();
                for (var i = 0; i < batch.Count; i++)
                {
                    if (!_elision.Skips(i))
                    {
                        Apply(batch[i], i);
                    }
                }

                foreach (var (messageId, count) in _releases)
                {
                    _sql.ReleaseMessage(messageId, count);
                }

                transaction.Commit();
            }
        }
        catch (Exception ex)
        {
            // Disk full, I/O error, or a bug: nothing in this batch is on disk, so nobody is told it is.
            // Any exception: the writer thread is the only one, and every acknowledgement waits on it.
            failure = ex;
            LogCommitFailed(_logger, FilePath, batch.Count, ex);
        }

        Interlocked.Increment(ref _batches);
        Interlocked.Add(ref _operationsWritten, batch.Count);
        Interlocked.Add(ref _commitTicks, Stopwatch.GetTimestamp() - started);
        // First what stays pending and what is lost, so that the count of pending writes is lowered before
        // anyone hears of this commit: a caller that awaited its write must not still see it counted.
        var carried = 0;
        if (failure is not null)
        {
            var lost = 0;
            foreach (var operation in batch)
            {
                if (operation.Done is not null)
                {
                    continue;
                }

                if (!operation.Retried && operation is not StoreOperation.Maintain)
                {
                    // Nobody waits (a binding, a removal, an in-flight mark): tried again in the next commit,
                    // ahead of everything queued since, so a passing fault costs nothing.
                    _carriedOver.Add(operation with { Retried = true });
                    carried++;
                }
                else
                {
                    lost++;
                }
            }

            if (lost > 0)
            {
                LogChangesLost(_logger, FilePath, lost);
            }
        }

        // Lowered before _room is looked at (see WaitForRoomSlow).
        if (Interlocked.Add(ref _pendingWrites, carried - batch.Count) < _maxPendingWrites && Volatile.Read(ref _room) is not null)
        {
            ReleaseRoom();
        }

        List<TaskCompletionSource>? acks = null;
        foreach (var operation in batch)
        {
            if (operation.Done is not { } done)
            {
                continue;
            }

            if (failure is not null)
            {
                // Someone waits (a publish's ack, a CONNACK): it hears of the failure and answers its client.
                done.TrySetException(new StoreWriteException(FilePath, failure));
            }
            else if (_sustained && done.Task.CreationOptions == TaskCreationOptions.None)
            {
                // What waits inline (AppendAsync: a connection's acks) runs here and saves a thread hop per publisher;
                // under a sustained load the writer is the line everyone waits on, so the pool sends them while it
                // commits the next batch (fan-in QoS 1: a lower p99, 1-4 % more delivered).
                (acks ??= []).Add(done);
            }
            else
            {
                done.TrySetResult();
            }
        }

        if (acks is not null)
        {
            ThreadPool.UnsafeQueueUserWorkItem(static done => done.ForEach(static d => d.TrySetResult()), acks, preferLocal: false);
        }
    }

    readonly List<StoreOperation> _carriedOver = [];

    /// <summary>One switch on the kind of change.</summary>
    void Apply(StoreOperation operation, int index)
    {
        switch (operation)
        {
            case StoreOperation.Append a:
                if (a.Inbound is { } appendedWith)
                {
                    _sql.SetInboundQos2(appendedWith.ClientId, appendedWith.PacketId, true); // even when every row cancels out
                }

                var kept = 0;
                foreach (var d in a.Deliveries)
                {
                    if (!_elision.Skips(index, d.ClientId))
                    {
                        kept++;
                    }
                }

                if (kept == 0)
                {
                    break;
                }

                _sql.AddMessage(a.Message, kept);
                foreach (var d in a.Deliveries)
                {
                    if (!_elision.Skips(index, d.ClientId))
                    {
                        _sql.InsertDelivery(d);
                    }
                }

                break;
            case StoreOperation.UpdateDelivery u:
                _sql.UpdateDelivery(u.ClientId, u.MessageId, u.PacketId, u.State);
                break;
            case StoreOperation.RemoveDelivery r:
                if (_sql.DeleteDelivery(r.ClientId, r.MessageId))
                {
                    Release(r.MessageId);
                }

                break;
            case StoreOperation.UpsertSession s:
                _sql.UpsertSession(s.Session);
                break;
            case StoreOperation.DeleteSession d:
                foreach (var messageId in _sql.DeliveriesOf(d.ClientId))
                {
                    _sql.DeleteDelivery(d.ClientId, messageId);
                    Release(messageId);
                }

                _sql.DeleteSession(d.ClientId);
                break;
            case StoreOperation.InboundQos2 q:
                _sql.SetInboundQos2(q.ClientId, q.PacketId, q.Pending);
                break;
            case StoreOperation.MailboxAdd m:
                if (m.Inbound is { } mailedWith)
                {
                    _sql.SetInboundQos2(mailedWith.ClientId, mailedWith.PacketId, true);
                }

                _sql.AddMessage(m.Message, 1);
                _sql.InsertMailbox(m.ClientId, m.Message.Id, m.ExpiresAtUnixMs);
                break;
            case StoreOperation.MailboxRemove m:
                if (_sql.DeleteMailbox(m.ClientId, m.MessageId))
                {
                    Release(m.MessageId);
                }

                break;
            case StoreOperation.RetainedSet r:
                _sql.SetRetained(r.Message);
                break;
            case StoreOperation.RetainedDelete r:
                _sql.DeleteRetained(r.Topic);
                break;
            case StoreOperation.OwnerBind o:
                _sql.BindOwner(o.ClientId, o.UserId);
                break;
            case StoreOperation.OwnerRelease o:
                _sql.ReleaseOwner(o.ClientId);
                break;
            case StoreOperation.SaveRecord r:
                _sql.SaveRecord(r.Kind, r.Key, r.Value);
                break;
            case StoreOperation.ReadQueue q:
                long bytes = 0;
                _sql.ReadOldestQueued(q.ClientId, q.MaxMessages, (row, message) =>
                {
                    q.Result.Add(new QueuedMessage(row, message));
                    bytes += message.Payload.Length;
                    return bytes < q.MaxBytes;
                });
                break;
            case StoreOperation.DropOldestQueued d:
                var gone = new List<(long Id, int Size)>();
                long goneBytes = 0;
                _sql.ReadOldestQueued(d.ClientId, int.MaxValue, (row, message) =>
                {
                    gone.Add((row.MessageId, message.Payload.Length));
                    goneBytes += message.Payload.Length;
                    return gone.Count < d.Count || goneBytes < d.Bytes;
                });
                foreach (var (id, _) in gone)
                {
                    _sql.DeleteDelivery(d.ClientId, id);
                    Release(id);
                }

                d.Result = (gone.Count, goneBytes);
                break;
        }
    }

    void Release(long messageId) => _releases[messageId] = _releases.GetValueOrDefault(messageId) + 1;

    void LoadOwners()
    {
        using var command = _connection.CreateCommand();
        command.CommandText = "SELECT client_id, user_id FROM client_owners";
        using var reader = command.ExecuteReader();
        while (reader.Read())
        {
            _owners[reader.GetString(0)] = reader.GetString(1);
        }
    }

    /// <summary>A file written by a newer broker is not guessed at: the start stops and says so.</summary>
    static void CheckVersion(SqliteConnection connection)
    {
        using var command = connection.CreateCommand();
        command.CommandText = "SELECT value FROM meta WHERE key = 'schema'";
        var version = command.ExecuteScalar() as string;
        if (version != Schema.Version.ToString(System.Globalization.CultureInfo.InvariantCulture))
        {
            throw new InvalidDataException($"schema version {version}, this broker reads version {Schema.Version}");
        }
    }

    static void Execute(SqliteConnection connection, string sql)
    {
        using var command = connection.CreateCommand();
        command.CommandText = sql;
        command.ExecuteNonQuery();
    }

    [LoggerMessage(4004, LogLevel.Information, "Store {Path} open (synchronous {Synchronous})")]
    static partial void LogOpened(ILogger logger, string path, string synchronous);

    [LoggerMessage(4006, LogLevel.Critical, "Store {Path}: {Count} changes failed twice and are lost; the broker's memory and the file disagree until the next restart")]
    static partial void LogChangesLost(ILogger logger, string path, int count);

    [LoggerMessage(4003, LogLevel.Error, "Store {Path}: a commit of {Count} changes failed; the publishes in it were not acknowledged")]
    static partial void LogCommitFailed(ILogger logger, string path, int count, Exception exception);
}

/// <summary>The store file cannot be opened or read at start. The message says which file and what to do.</summary>
public sealed class StoreUnavailableException(string path, Exception inner)
    : Exception($"The store file {path} cannot be read ({inner.Message}). Restore it from a backup, or move it away to start with an empty store (see docs/operations.md).", inner)
{
    public string FilePath { get; } = path;
}

/// <summary>A write did not reach the disk (disk full, I/O error): the publish it belongs to is not acknowledged.</summary>
public sealed class StoreWriteException(string path, Exception inner) : Exception($"Write to {path} failed: {inner.Message}", inner);
