namespace Broker.Engine.Routing;

/// <summary>
/// Topic names and filters as MQTT defines them (3.1.1 §4.7, 5.0 §4.7): levels split by '/',
/// '+' one level, '#' the rest (only last), and topics starting with '$' not matched by a
/// leading wildcard [MQTT-4.7.2-1]. All checks work on spans and allocate nothing.
/// </summary>
public static class MqttTopic
{
    public const string SharePrefix = "$share/";

    /// <summary>A topic name: not empty, no wildcards [MQTT-3.3.2-2], no U+0000 [MQTT-4.7.3-2].</summary>
    public static bool IsValidName(ReadOnlySpan<char> topic) =>
        topic.Length > 0 && topic.IndexOfAny('+', '#', '\0') < 0;

    /// <summary>A filter: not empty; '#' alone and last [MQTT-4.7.1-2]; '+' alone in its level [MQTT-4.7.1-3].</summary>
    public static bool IsValidFilter(ReadOnlySpan<char> filter)
    {
        if (filter.Length == 0 || filter.IndexOf('\0') >= 0)
        {
            return false;
        }

        for (var i = 0; i < filter.Length; i++)
        {
            var c = filter[i];
            if (c != '+' && c != '#')
            {
                continue;
            }

            var alone = (i == 0 || filter[i - 1] == '/') && (i == filter.Length - 1 || filter[i + 1] == '/');
            if (!alone || (c == '#' && i != filter.Length - 1))
            {
                return false;
            }
        }

        return true;
    }

    public static bool HasWildcard(ReadOnlySpan<char> filter) => filter.IndexOfAny('+', '#') >= 0;

    public static int CountLevels(ReadOnlySpan<char> topic) => topic.Count('/') + 1;

    /// <summary>Splits <c>$share/{name}/{filter}</c> [MQTT-4.8.2-1, -2]; false when it is not a valid shared filter.</summary>
    public static bool TryParseShared(string filter, out string shareName, out string innerFilter)
    {
        shareName = innerFilter = "";
        if (!filter.StartsWith(SharePrefix, StringComparison.Ordinal))
        {
            return false;
        }

        var rest = filter.AsSpan(SharePrefix.Length);
        var slash = rest.IndexOf('/');
        if (slash <= 0 || slash == rest.Length - 1)
        {
            return false;
        }

        var name = rest[..slash];
        if (name.IndexOfAny('+', '#') >= 0)
        {
            return false;
        }

        shareName = name.ToString();
        innerFilter = rest[(slash + 1)..].ToString();
        return true;
    }

    public static bool IsShared(string filter) => filter.StartsWith(SharePrefix, StringComparison.Ordinal);

    /// <summary>Whether a filter matches a topic name.</summary>
    public static bool Matches(ReadOnlySpan<char> filter, ReadOnlySpan<char> topic)
    {
        if (topic.Length > 0 && topic[0] == '$' && filter.Length > 0 && (filter[0] == '+' || filter[0] == '#'))
        {
            return false;
        }

        while (true)
        {
            var fEnd = filter.IndexOf('/');
            var fLevel = fEnd < 0 ? filter : filter[..fEnd];
            if (fLevel.Length == 1 && fLevel[0] == '#')
            {
                return true;
            }

            var tEnd = topic.IndexOf('/');
            var tLevel = tEnd < 0 ? topic : topic[..tEnd];
            if (!(fLevel.Length == 1 && fLevel[0] == '+') && !fLevel.SequenceEqual(tLevel))
            {
                return false;
            }

            if (fEnd < 0 || tEnd < 0)
            {
                // "a/#" also matches "a" [MQTT-4.7.1-2 non-normative example].
                return fEnd < 0 && tEnd < 0 || (tEnd < 0 && filter[(fEnd + 1)..] is "#");
            }

            filter = filter[(fEnd + 1)..];
            topic = topic[(tEnd + 1)..];
        }
    }
}
