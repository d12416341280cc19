namespace Broker.Ims.Acl;

/// <summary>
/// A rule's topic pattern, compiled once. Levels are literals, '+' (exactly one level), '#' (zero or
/// more levels, allowed anywhere so "%p/%U/Inbox/#/%u" can say "the last level is the sender"), or a
/// token that must be a whole level, as in mosquitto: %u user id, %c client id, %p a registered parent
/// topic, %U any user, %m a group the user is a member of, %g any group.
/// </summary>
public sealed class AclPattern
{
    AclPattern(string text, Level[] levels)
    {
        Text = text;
        Levels = levels;
    }

    public string Text { get; }

    internal Level[] Levels { get; }

    public static AclPattern Parse(string text)
    {
        if (string.IsNullOrWhiteSpace(text))
        {
            throw new FormatException("the topic pattern is empty");
        }

        var parts = text.Split('/');
        var levels = new Level[parts.Length];
        for (var i = 0; i < parts.Length; i++)
        {
            var p = parts[i];
            levels[i] = p switch
            {
                "+" => new Level(LevelKind.Plus, null),
                "#" => new Level(LevelKind.Hash, null),
                "%u" => new Level(LevelKind.User, null),
                "%c" => new Level(LevelKind.Client, null),
                "%p" => new Level(LevelKind.Parent, null),
                "%U" => new Level(LevelKind.AnyUser, null),
                "%m" => new Level(LevelKind.MemberGroup, null),
                "%g" => new Level(LevelKind.AnyGroup, null),
                _ when p.Contains('%', StringComparison.Ordinal) => throw new FormatException($"unknown token in level \"{p}\" (tokens are whole levels: %u %c %p %U %m %g)"),
                _ when p.Contains('+', StringComparison.Ordinal) || p.Contains('#', StringComparison.Ordinal) => throw new FormatException($"'+' and '#' must be whole levels (\"{p}\")"),
                _ => new Level(LevelKind.Literal, p),
            };
        }

        return new AclPattern(text, levels);
    }

    public override string ToString() => Text;

    internal enum LevelKind : byte
    {
        Literal,
        Plus,
        Hash,
        User,
        Client,
        Parent,
        AnyUser,
        MemberGroup,
        AnyGroup,
    }

    internal readonly record struct Level(LevelKind Kind, string? Literal);
}
