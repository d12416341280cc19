using Broker.Engine.Routing;

namespace Broker.Cluster.Redis;

/// <summary>
/// The route key of a topic or filter: its first <c>RouteDepth</c> levels (<c>IMS/bob</c>, <c>IMS/Group123</c>).
/// A route is the unit the cluster routes on: one sharded channel (<c>r:{route}</c>) reaches the nodes that
/// host a reader of it, one hash (<c>ix:{route}</c>) lists its durable readers. A filter with a wildcard
/// inside those levels reads every route: it is "wide" (<see cref="Wide"/>), which service roles use.
/// Direct messages have a route per client id (<see cref="Direct"/>).
/// </summary>
public sealed class RouteKeys(int depth)
{
    public const string Wide = "*";

    public static string Direct(string clientId) => "c/" + clientId;

    public string OfTopic(string topic)
    {
        var end = EndOfLevels(topic);
        return end < 0 ? topic : topic[..end];
    }

    public string OfFilter(string filter)
    {
        var end = EndOfLevels(filter);
        var head = end < 0 ? filter.AsSpan() : filter.AsSpan(0, end);
        if (MqttTopic.HasWildcard(head))
        {
            return Wide;
        }

        return end < 0 ? filter : filter[..end];
    }

    /// <summary>The index of the separator after the first <c>depth</c> levels, or -1 when there are no more levels.</summary>
    int EndOfLevels(string name)
    {
        var at = -1;
        for (var level = 0; level < depth; level++)
        {
            at = name.IndexOf('/', at + 1);
            if (at < 0)
            {
                return -1;
            }
        }

        return at;
    }
}
