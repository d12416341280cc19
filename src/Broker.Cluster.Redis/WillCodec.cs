using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;

namespace Broker.Cluster.Redis;

/// <summary>A will as the cluster keeps it for a survivor: who sent it (user, role), its expiry interval, the message.</summary>
internal static class WillCodec
{
    public static byte[] Encode(ClientPrincipal sender, BrokerMessage will, uint expirySeconds)
    {
        using var stream = new MemoryStream();
        using var w = new BinaryWriter(stream);
        w.Write((byte)1);
        w.Write(sender.UserId);
        w.Write(sender.Role);
        w.Write(expirySeconds);
        MessageCodec.WriteMessage(w, will);
        w.Flush();
        return stream.ToArray();
    }

    public static (ClientPrincipal Sender, BrokerMessage Will, uint ExpirySeconds) Decode(string clientId, byte[] data)
    {
        using var r = new BinaryReader(new MemoryStream(data));
        if (r.ReadByte() != 1)
        {
            throw new InvalidDataException("unknown will format");
        }

        var sender = new ClientPrincipal(clientId, r.ReadString(), r.ReadString());
        var expiry = r.ReadUInt32();
        return (sender, MessageCodec.ReadMessage(r), expiry);
    }
}
