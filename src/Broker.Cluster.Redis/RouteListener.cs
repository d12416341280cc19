using StackExchange.Redis;

namespace Broker.Cluster.Redis;

/// <summary>
/// This node's interest in route channels (<c>r:{route}</c>, sharded pub/sub): a route's channel is
/// subscribed while at least one session here reads the route, and unsubscribed when the last one goes.
/// Redis's own channel table is then the cluster's route table: a message reaches only the nodes that read it.
/// </summary>
internal sealed class RouteListener(ISubscriber bus, Action<ChannelMessage> onMessage)
{
    readonly Dictionary<string, RouteInterest> _interest = new(StringComparer.Ordinal);

    public static RedisChannel Channel(string route) => RedisChannel.Sharded("r:{" + route + "}");

    /// <summary>True while a session here reads <paramref name="route"/>.</summary>
    public bool Listens(string route)
    {
        lock (_interest)
        {
            return _interest.TryGetValue(route, out var interest) && interest.Count > 0;
        }
    }

    sealed class RouteInterest
    {
        public int Count;
        public ChannelMessageQueue? Queue;
        public Task Chain = Task.CompletedTask;
    }

    /// <summary>
    /// One more (or one less) reader of a route on this node. The channel is subscribed while the count is
    /// above zero; changes are applied in order per route, each to the count as it is when its turn comes.
    /// The task completes when this change is in effect at Redis.
    /// </summary>
    public Task Listen(string route, int delta)
    {
        lock (_interest)
        {
            if (!_interest.TryGetValue(route, out var interest))
            {
                _interest[route] = interest = new RouteInterest();
            }

            interest.Count += delta;
            return interest.Chain = ApplyAfter(interest.Chain, route, interest);
        }
    }

    async Task ApplyAfter(Task previous, string route, RouteInterest interest)
    {
        try
        {
            await previous;
        }
        catch
        {
            // Its failure was reported to its own waiters; this change still goes ahead.
        }

        int count;
        lock (_interest)
        {
            count = interest.Count;
        }

        if (count > 0 && interest.Queue is null)
        {
            // Messages of one channel are handled one at a time, in order (a ChannelMessageQueue, not a handler).
            interest.Queue = await bus.SubscribeAsync(Channel(route));
            interest.Queue.OnMessage(onMessage);
        }
        else if (count <= 0 && interest.Queue is not null)
        {
            var queue = interest.Queue;
            interest.Queue = null;
            await queue.UnsubscribeAsync();
            lock (_interest)
            {
                if (interest.Count <= 0 && interest.Queue is null && ReferenceEquals(_interest.GetValueOrDefault(route), interest))
                {
                    _interest.Remove(route);
                }
            }
        }
    }
}
