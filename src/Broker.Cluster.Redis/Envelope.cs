using Broker.Engine.Routing;
using Broker.Engine.Store;

namespace Broker.Cluster.Redis;

/// <summary>What nodes send each other over Redis pub/sub; one binary form, a kind byte first.</summary>
internal enum EnvelopeKind : byte
{
    /// <summary>A routed message, with the client ids the sender wrote rows for.</summary>
    Message = 1,

    /// <summary>To the node that owned a session: another node claimed it, let it go and answer <see cref="Released"/>.</summary>
    Kick = 2,

    /// <summary>The answer to <see cref="Kick"/>.</summary>
    Released = 3,

    /// <summary>A retained message set or (empty payload) deleted.</summary>
    Retained = 4,
}

internal sealed class Envelope
{
    public EnvelopeKind Kind { get; init; }

    /// <summary>The sending node's incarnation (a node ignores its own messages).</summary>
    public required string Origin { get; init; }

    /// <summary>Message: the direct target, or null. Kick/Released: the client id.</summary>
    public string? ClientId { get; init; }

    /// <summary>Message: the shared subscription (its key, <c>$share/name/filter</c>) whose member <see cref="ClientId"/> was picked for it.</summary>
    public string? Share { get; init; }

    public IReadOnlyCollection<string> StoredFor { get; init; } = [];

    public BrokerMessage? Message { get; init; }

    public byte[] Encode()
    {
        using var stream = new MemoryStream(128 + (Message?.Payload.Length ?? 0));
        using var w = new BinaryWriter(stream);
        w.Write((byte)Kind);
        w.Write(Origin);
        w.Write(ClientId ?? "");
        w.Write(Share ?? "");
        w.Write(StoredFor.Count);
        foreach (var id in StoredFor)
        {
            w.Write(id);
        }

        w.Write(Message is not null);
        if (Message is not null)
        {
            MessageCodec.WriteMessage(w, Message);
        }

        w.Flush();
        return stream.ToArray();
    }

    public static Envelope Decode(byte[] data)
    {
        using var r = new BinaryReader(new MemoryStream(data));
        var kind = (EnvelopeKind)r.ReadByte();
        var origin = r.ReadString();
        var clientId = r.ReadString();
        var share = r.ReadString();
        var count = r.ReadInt32();
        var stored = count == 0 ? (IReadOnlyCollection<string>)[] : new HashSet<string>(count, StringComparer.Ordinal);
        for (var i = 0; i < count; i++)
        {
            ((HashSet<string>)stored).Add(r.ReadString());
        }

        var message = r.ReadBoolean() ? MessageCodec.ReadMessage(r) : null;
        return new Envelope { Kind = kind, Origin = origin, ClientId = clientId.Length == 0 ? null : clientId, Share = share.Length == 0 ? null : share, StoredFor = stored, Message = message };
    }
}
