using System.Text.Json;
using Broker.Engine.Store;
using Broker.Ims.Groups;

namespace Broker.Ims.Identity;

/// <summary>
/// Keeps what the admin API changes in users and groups in the broker's store, so it survives a
/// restart. Configuration seeds the directories; stored changes (including deletions) are laid over
/// it at start, so a change made at run time wins over the configuration it changed.
/// </summary>
public sealed class DirectoryPersistence(IBrokerStore store, IUserDirectory users, IGroupDirectory groups)
{
    const string UserKind = "ims.user";
    const string GroupKind = "ims.group";

    public void Restore()
    {
        foreach (var (name, value) in store.LoadRecords(UserKind))
        {
            if (value is null)
            {
                users.Remove(name);
            }
            else if (JsonSerializer.Deserialize<UserAccount>(value) is { } account)
            {
                users.Upsert(account);
            }
        }

        foreach (var (id, value) in store.LoadRecords(GroupKind))
        {
            if (value is null)
            {
                groups.Remove(id);
            }
            else
            {
                groups.Set(id, JsonSerializer.Deserialize<string[]>(value) ?? []);
            }
        }
    }

    public ValueTask SaveUserAsync(UserAccount account) => store.SaveRecordAsync(UserKind, account.Name, JsonSerializer.SerializeToUtf8Bytes(account));

    public ValueTask DeleteUserAsync(string name) => store.SaveRecordAsync(UserKind, name, null);

    public ValueTask SaveGroupAsync(string id, IEnumerable<string> members) => store.SaveRecordAsync(GroupKind, id, JsonSerializer.SerializeToUtf8Bytes(members.ToArray()));

    public ValueTask DeleteGroupAsync(string id) => store.SaveRecordAsync(GroupKind, id, null);
}
