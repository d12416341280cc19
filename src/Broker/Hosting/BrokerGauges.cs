using Broker.Cluster.Redis;
using Broker.Engine;
using Broker.Engine.Diagnostics;
using Broker.Engine.Store;
using Broker.Store.Sqlite;

namespace Broker.Hosting;

/// <summary>Gauges read on each /metrics scrape, added to the engine's <c>IMS.Broker</c> meter.</summary>
public static class BrokerGauges
{
    public static void Register(BrokerCounters counters, BrokerEngine engine, IBrokerStore store)
    {
        var meter = counters.Meter;
        meter.CreateObservableGauge("sessions", () => engine.SessionCount, "{session}", "Sessions, connected or not");
        meter.CreateObservableGauge("subscriptions", () => engine.SubscriptionCount, "{subscription}", "Subscriptions in the index");
        meter.CreateObservableGauge("retained", () => engine.RetainedCount, "{message}", "Retained messages");
        meter.CreateObservableGauge("queued", () => engine.QueuedMessageCount, "{message}", "Messages waiting in session queues");
        meter.CreateObservableGauge("mailbox", () => engine.MailboxCount, "{message}", "Direct messages waiting for a client id with no session");
        if (engine.Cluster is RedisClusterLink cluster)
        {
            meter.CreateObservableCounter("cluster.envelopes.received", () => cluster.EnvelopesIn, "{message}", "Messages routed on other nodes and received by this one");
            meter.CreateObservableCounter("cluster.envelopes.sent", () => cluster.EnvelopesOut, "{message}", "Messages routed here and sent towards other nodes (one per route channel)");
            meter.CreateObservableGauge("cluster.redis.up", () => cluster.IsReachable ? 1 : 0, "", "1 while this node reaches the cluster's Redis");
            meter.CreateObservableGauge("cluster.mailboxes", () => cluster.Mailboxes, "{client id}", "Client ids with direct messages waiting in the cluster's mailbox, as this node last read it (each second); Broker:Limits:MaxMailboxClientIds bounds it");
            if (store is RedisBrokerStore redis)
            {
                meter.CreateObservableCounter("cluster.store.failed", () => redis.FailedWrites, "{operation}", "Store writes nobody waited on (delivery state, session records) that Redis refused or never answered; each is also logged");
                meter.CreateObservableGauge("cluster.store.pending", () => redis.PendingWrites, "{operation}", "Writes sent to Redis and not answered yet; at Broker:Store:MaxPendingWrites connections stop reading PUBLISH packets until it falls");
            }
        }

        if (store is SqliteBrokerStore sqlite)
        {
            meter.CreateObservableCounter("store.commits", () => sqlite.Batches, "{commit}", "Store transactions committed (group commits)");
            meter.CreateObservableCounter("store.operations", () => sqlite.OperationsWritten, "{operation}", "Store changes committed (including those elided)");
            meter.CreateObservableCounter("store.elided", () => sqlite.OperationsElided, "{operation}", "Store changes that cancelled out within their batch and were not written (a delivery acknowledged before its commit)");
            meter.CreateObservableGauge("store.commit.duration", () => sqlite.MeanCommitMilliseconds, "ms", "Mean time of a store commit");
            meter.CreateObservableGauge("store.pending", () => sqlite.PendingWrites, "{operation}", "Store changes queued and not yet committed; at Broker:Store:MaxPendingWrites connections stop reading PUBLISH packets until it falls");
        }
    }
}
