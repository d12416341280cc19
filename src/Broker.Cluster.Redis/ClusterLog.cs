using Microsoft.Extensions.Logging;

namespace Broker.Cluster.Redis;

/// <summary>The cluster's log lines (event ids 7xxx), one line per event.</summary>
internal static partial class ClusterLog
{
    [LoggerMessage(7001, LogLevel.Information, "Cluster node {NodeId} joined as {Incarnation} (message id index {NodeIndex})")]
    public static partial void Joined(ILogger logger, string nodeId, string incarnation, int nodeIndex);

    [LoggerMessage(7002, LogLevel.Warning, "Redis unreachable during {Operation}: {Reason}")]
    public static partial void RedisFailed(ILogger logger, string operation, string reason);

    [LoggerMessage(7003, LogLevel.Information, "Session {ClientId} let go: claimed by {Claimant}")]
    public static partial void Released(ILogger logger, string clientId, string claimant);

    [LoggerMessage(7004, LogLevel.Warning, "Session {ClientId}: its node {Owner} did not let it go within {Seconds} s; taken over anyway (that node's writes are fenced)")]
    public static partial void KickUnanswered(ILogger logger, string clientId, string owner, double seconds);

    [LoggerMessage(7005, LogLevel.Warning, "Session {ClientId}: a write of this node was refused, another node owns it now; it leaves this node")]
    public static partial void Fenced(ILogger logger, string clientId);

    [LoggerMessage(7006, LogLevel.Warning, "Unreadable message from another node on {Channel}: {Reason}")]
    public static partial void BadEnvelope(ILogger logger, string channel, string reason);

    [LoggerMessage(7007, LogLevel.Warning, "Cluster node {Incarnation} is gone (liveness key expired): its sessions are free, {Wills} will(s) published here")]
    public static partial void NodeGone(ILogger logger, string incarnation, int wills);

    [LoggerMessage(7008, LogLevel.Warning, "Connection to Redis {EndPoint} ({Kind}) restored: persistent sessions read their queues again, clean sessions with QoS 1/2 subscriptions are disconnected (messages may have been missed)")]
    public static partial void LinkRestored(ILogger logger, string endPoint, string kind);

    [LoggerMessage(7009, LogLevel.Information, "{Count} session(s) expired whose node is gone")]
    public static partial void OrphansExpired(ILogger logger, int count);

    [LoggerMessage(7010, LogLevel.Warning, "This node ({Incarnation}) was taken for dead (its liveness key expired) and joins again: {Lost} session(s) it hosted were freed meanwhile and leave it")]
    public static partial void Rejoined(ILogger logger, string incarnation, int lost);

    [LoggerMessage(7011, LogLevel.Error, "Message id index {NodeIndex} is held by another node now (this node was taken for dead): message ids may repeat until this node restarts")]
    public static partial void IndexLost(ILogger logger, int nodeIndex);
}
