namespace Broker.Ims.Groups;

/// <summary>Chat groups and their members (contract §7); changes take effect for the ACL at once.</summary>
public interface IGroupDirectory
{
    bool Exists(ReadOnlySpan<char> groupId);

    bool IsMember(ReadOnlySpan<char> groupId, string userId);

    IReadOnlyDictionary<string, IReadOnlySet<string>> All { get; }

    void Set(string groupId, IEnumerable<string> members);

    bool Remove(string groupId);
}
