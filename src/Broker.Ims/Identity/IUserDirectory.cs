namespace Broker.Ims.Identity;

/// <summary>The users who may connect. Configuration fills it at start; the admin API may change it at run time.</summary>
public interface IUserDirectory
{
    bool TryGet(string name, out UserAccount account);

    /// <summary>Span lookup for the ACL's %U token, allocation free.</summary>
    bool Exists(ReadOnlySpan<char> name);

    IReadOnlyCollection<UserAccount> All { get; }

    void Upsert(UserAccount account);

    bool Remove(string name);
}

public sealed record UserAccount(string Name, string PasswordHash, string Role);
