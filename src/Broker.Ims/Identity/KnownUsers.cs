using System.Collections.Concurrent;

namespace Broker.Ims.Identity;

/// <summary>
/// The users the ACL's %U ("any known user") knows: those of the user directory, and those who
/// connected with a valid JWT since the broker started (the app server vouched for them, so their
/// feeds and inboxes are addressable from then on, until a restart). Users listed in
/// <c>Broker:Users</c> are always known.
/// </summary>
public sealed class KnownUsers(IUserDirectory directory) : IUserDirectory
{
    readonly ConcurrentDictionary<string, byte> _vouched = new(StringComparer.Ordinal);

    /// <summary>Remembers a user an app server vouched for with a token.</summary>
    public void Vouch(string name) => _vouched.TryAdd(name, 0);

    public bool IsVouched(ReadOnlySpan<char> name) => _vouched.GetAlternateLookup<ReadOnlySpan<char>>().ContainsKey(name);

    public bool Exists(ReadOnlySpan<char> name) => directory.Exists(name) || IsVouched(name);

    // Accounts (names with password hashes and roles) are the directory's: a vouched user has none.
    public bool TryGet(string name, out UserAccount account) => directory.TryGet(name, out account);

    public IReadOnlyCollection<UserAccount> All => directory.All;

    public void Upsert(UserAccount account) => directory.Upsert(account);

    public bool Remove(string name) => directory.Remove(name);
}
