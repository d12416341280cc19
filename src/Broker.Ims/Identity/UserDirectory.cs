using System.Collections.Concurrent;

namespace Broker.Ims.Identity;

/// <summary>An in-memory user directory, seeded from <c>Broker:Users</c>.</summary>
public sealed class UserDirectory : IUserDirectory
{
    readonly ConcurrentDictionary<string, UserAccount> _users = new(StringComparer.Ordinal);

    public UserDirectory(IEnumerable<UserAccount> users)
    {
        foreach (var user in users)
        {
            _users[user.Name] = user;
        }
    }

    public IReadOnlyCollection<UserAccount> All => [.. _users.Values];

    public bool TryGet(string name, out UserAccount account) => _users.TryGetValue(name, out account!);

    public bool Exists(ReadOnlySpan<char> name) => _users.GetAlternateLookup<ReadOnlySpan<char>>().ContainsKey(name);

    public void Upsert(UserAccount account) => _users[account.Name] = account;

    public bool Remove(string name) => _users.TryRemove(name, out _);
}
