namespace Broker.Store.Sqlite;

/// <summary>
/// Finds the changes in one batch that cancel out before the batch is written: a delivery appended
/// and removed again (the subscriber acknowledged it while the commit before was on its way to the
/// disk), a mailbox entry added and taken, a QoS 2 packet id marked and released, and a delivery's
/// in-flight mark when the delivery is removed later in the same batch. Neither half needs
/// to reach the file: what is on disk after the commit is the same, and the publisher's
/// acknowledgement still waits for the commit. At a steady rate most QoS 1 messages are acknowledged
/// by their subscriber within one commit, so most never touch SQLite (one type, one job: the writer
/// asks <see cref="Skips(int)"/> and <see cref="Skips(int, string)"/>; this class knows why).
/// </summary>
internal sealed class BatchElision
{
    // Reused from batch to batch: the writer is single-threaded.
    readonly Dictionary<(string Client, long Message), int> _appended = new();
    readonly Dictionary<(string Client, long Message), int> _lastRemoval = new();
    readonly Dictionary<(string Client, long Message), int> _mailbox = new();
    readonly Dictionary<(string Client, ushort PacketId), int> _inbound = new();
    readonly HashSet<int> _skippedOperations = [];
    readonly HashSet<(int Operation, string Client)> _skippedDeliveries = [];

    /// <summary>Operations of the last planned batch that are not written.</summary>
    public int Elided => _skippedOperations.Count + _skippedDeliveries.Count;

    public void Plan(List<StoreOperation> batch)
    {
        _appended.Clear();
        _lastRemoval.Clear();
        _mailbox.Clear();
        _inbound.Clear();
        _skippedOperations.Clear();
        _skippedDeliveries.Clear();
        for (var i = 0; i < batch.Count; i++)
        {
            switch (batch[i])
            {
                case StoreOperation.Append a:
                    foreach (var d in a.Deliveries)
                    {
                        _appended[(d.ClientId, d.MessageId)] = i;
                    }

                    break;
                case StoreOperation.RemoveDelivery r:
                    _lastRemoval[(r.ClientId, r.MessageId)] = i;
                    if (_appended.Remove((r.ClientId, r.MessageId), out var appendedAt))
                    {
                        _skippedDeliveries.Add((appendedAt, r.ClientId));
                        _skippedOperations.Add(i);
                    }

                    break;
                case StoreOperation.MailboxAdd { Inbound: null } m: // one that carries a packet id must be written for it
                    _mailbox[(m.ClientId, m.Message.Id)] = i;
                    break;
                case StoreOperation.MailboxRemove m when _mailbox.Remove((m.ClientId, m.MessageId), out var addedAt):
                    _skippedOperations.Add(addedAt);
                    _skippedOperations.Add(i);
                    break;
                case StoreOperation.InboundQos2 { Pending: true } q:
                    _inbound[(q.ClientId, q.PacketId)] = i;
                    break;
                case StoreOperation.InboundQos2 { Pending: false } q when _inbound.Remove((q.ClientId, q.PacketId), out var markedAt):
                    _skippedOperations.Add(markedAt);
                    _skippedOperations.Add(i);
                    break;
            }
        }

        // An in-flight mark is pointless when the row is deleted later in the batch (whether the
        // deletion itself is written or cancelled with its append).
        for (var i = 0; i < batch.Count; i++)
        {
            if (batch[i] is StoreOperation.UpdateDelivery u && _lastRemoval.TryGetValue((u.ClientId, u.MessageId), out var removedAt) && removedAt > i)
            {
                _skippedOperations.Add(i);
            }
        }
    }

    /// <summary>The whole operation at this index cancels out.</summary>
    public bool Skips(int operation) => _skippedOperations.Contains(operation);

    /// <summary>This client's delivery in the Append at this index cancels out.</summary>
    public bool Skips(int operation, string clientId) => _skippedDeliveries.Contains((operation, clientId));
}
