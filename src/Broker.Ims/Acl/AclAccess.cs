namespace Broker.Ims.Acl;

/// <summary>What a rule is about. Subscribing and receiving are apart, so "nobody subscribes to P2P" and "a device receives its P2P" can both be said.</summary>
[Flags]
public enum AclAccess : byte
{
    None = 0,
    Publish = 1,
    Subscribe = 2,
    Receive = 4,
    Read = Subscribe | Receive,
    All = Publish | Subscribe | Receive,
}

public static class AclAccessNames
{
    public static bool TryParse(string text, out AclAccess access)
    {
        access = text.ToLowerInvariant() switch
        {
            "publish" or "write" => AclAccess.Publish,
            "subscribe" => AclAccess.Subscribe,
            "receive" => AclAccess.Receive,
            "read" => AclAccess.Read,
            "readwrite" or "all" => AclAccess.All,
            _ => AclAccess.None,
        };
        return access != AclAccess.None;
    }
}
