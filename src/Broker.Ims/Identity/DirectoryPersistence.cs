using System.Text.Json;
using Broker.Engine.Store;
using Broker.Ims.Groups;

namespace Broker.Ims.Identity;

/// <summary>
/// Keeps what the admin API changes in users and groups in the broker's store, so it survives a
/// restart. Configuration seeds the directories; stored changes (including deletions) are laid over
/// it at start, so a change made at run time wins over the configuration it changed. In a cluster, a change
/// made through another node's admin API applies here as soon as that node announces it.
/// </summary>
public sealed class DirectoryPersistence
{
    public const string UserKind = "ims.user";
    public const string GroupKind = "ims.group";

    readonly IPolicyRecords store;
    readonly IUserDirectory users;
    readonly IGroupDirectory groups;

    public DirectoryPersistence(IPolicyRecords store, IUserDirectory users, IGroupDirectory groups)
    {
        this.store = store;
        this.users = users;
        this.groups = groups;
        store.ChangedElsewhere += Apply;
        store.Resync += Restore; // tombstones included: a deletion missed meanwhile applies too
    }

    public void Restore()
    {
        foreach (var (name, value) in store.LoadRecords(UserKind))
        {
            Apply(UserKind, name, value);
        }

        foreach (var (id, value) in store.LoadRecords(GroupKind))
        {
            Apply(GroupKind, id, value);
        }
    }

    void Apply(string kind, string key, byte[]? value)
    {
        if (kind == UserKind)
        {
            if (value is null)
            {
                users.Remove(key);
            }
            else if (JsonSerializer.Deserialize<UserAccount>(value) is { } account)
            {
                users.Upsert(account);
            }
        }
        else if (kind == GroupKind)
        {
            if (value is null)
            {
                groups.Remove(key);
            }
            else
            {
                groups.Set(key, JsonSerializer.Deserialize<string[]>(value) ?? []);
            }
        }
    }

    public ValueTask SaveUserAsync(UserAccount account) => store.SaveRecordAsync(UserKind, account.Name, JsonSerializer.SerializeToUtf8Bytes(account));

    public ValueTask DeleteUserAsync(string name) => store.SaveRecordAsync(UserKind, name, null);

    public ValueTask SaveGroupAsync(string id, IEnumerable<string> members) => store.SaveRecordAsync(GroupKind, id, JsonSerializer.SerializeToUtf8Bytes(members.ToArray()));

    public ValueTask DeleteGroupAsync(string id) => store.SaveRecordAsync(GroupKind, id, null);
}
