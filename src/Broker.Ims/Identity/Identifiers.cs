namespace Broker.Ims.Identity;

/// <summary>The grammar of client ids, group ids, device ids and user ids (contract §1).</summary>
public static class Identifiers
{
    public const string Separator = "@@@";
    public const int MaxClientIdLength = 64;
    public const int MaxUserIdLength = 64;

    /// <summary>Second-level topic names with a meaning of their own: never a user or a group.</summary>
    public static readonly string[] ReservedNames = ["p2p", "System"];

    public static bool IsReserved(string name) => Array.IndexOf(ReservedNames, name) >= 0;

    /// <summary>Splits <c>GroupId@@@DeviceId</c>; returns why not when it is not one.</summary>
    public static string? ParseClientId(string clientId, out string groupId, out string deviceId)
    {
        groupId = deviceId = "";
        if (clientId.Length == 0)
        {
            return "the client id is empty (it must be <GroupId>@@@<DeviceId>)";
        }

        if (clientId.Length > MaxClientIdLength)
        {
            return $"the client id has {clientId.Length} characters, more than {MaxClientIdLength}";
        }

        var at = clientId.IndexOf(Separator, StringComparison.Ordinal);
        if (at < 0 || clientId.IndexOf(Separator, at + Separator.Length, StringComparison.Ordinal) >= 0)
        {
            return "the client id must contain \"@@@\" exactly once (<GroupId>@@@<DeviceId>)";
        }

        groupId = clientId[..at];
        deviceId = clientId[(at + Separator.Length)..];
        if (!IsGroupId(groupId))
        {
            return $"the group id \"{groupId}\" must start with GID_ or GID- followed by letters, digits, _ or -";
        }

        if (deviceId.Length == 0 || !deviceId.All(c => char.IsAsciiLetterOrDigit(c) || c is '_' or '-' or '.' or ':'))
        {
            return "the device id must be letters, digits, _, -, . or : and not empty";
        }

        return null;
    }

    public static bool IsGroupId(string groupId) =>
        groupId.Length > 4
        && (groupId.StartsWith("GID_", StringComparison.Ordinal) || groupId.StartsWith("GID-", StringComparison.Ordinal))
        && groupId.AsSpan(4).IndexOfAnyExcept(WordChars) < 0;

    /// <summary>A user id, also usable as a topic level: letters, digits, _, -, . ; at most 64.</summary>
    public static bool IsUserId(string userId) =>
        userId.Length is > 0 and <= MaxUserIdLength && userId.AsSpan().IndexOfAnyExcept(UserChars) < 0;

    static readonly System.Buffers.SearchValues<char> WordChars =
        System.Buffers.SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-");

    static readonly System.Buffers.SearchValues<char> UserChars =
        System.Buffers.SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-.");
}
