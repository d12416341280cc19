using System.Collections.Concurrent;
using System.Collections.Frozen;

namespace Broker.Ims.Groups;

/// <summary>Groups in memory, seeded from <c>Broker:Groups</c>. A member set is immutable and swapped whole.</summary>
public sealed class GroupDirectory : IGroupDirectory
{
    readonly ConcurrentDictionary<string, FrozenSet<string>> _groups = new(StringComparer.Ordinal);

    public GroupDirectory(IEnumerable<KeyValuePair<string, IEnumerable<string>>> groups)
    {
        foreach (var (id, members) in groups)
        {
            Set(id, members);
        }
    }

    public IReadOnlyDictionary<string, IReadOnlySet<string>> All =>
        _groups.ToDictionary(g => g.Key, g => (IReadOnlySet<string>)g.Value, StringComparer.Ordinal);

    public bool Exists(ReadOnlySpan<char> groupId) => _groups.GetAlternateLookup<ReadOnlySpan<char>>().ContainsKey(groupId);

    public bool IsMember(ReadOnlySpan<char> groupId, string userId) =>
        _groups.GetAlternateLookup<ReadOnlySpan<char>>().TryGetValue(groupId, out var members) && members.Contains(userId);

    public void Set(string groupId, IEnumerable<string> members) => _groups[groupId] = members.ToFrozenSet(StringComparer.Ordinal);

    public bool Remove(string groupId) => _groups.TryRemove(groupId, out _);
}
