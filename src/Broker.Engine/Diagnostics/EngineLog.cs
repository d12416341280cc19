using Microsoft.Extensions.Logging;

namespace Broker.Engine.Diagnostics;

/// <summary>
/// Every log line of the engine, with fixed event ids: 1xxx connections, 2xxx identity,
/// 3xxx authorization, 4xxx store, 5xxx routing. Never a password or a payload.
/// The events a client can cause (1003, 1004, 1005, 1007, 2001, 3001, 3002, 3003, 5001, 5003) are
/// rate-limited by the engine's loggers, broker-wide per event id: see <see cref="ClientLogLimiter"/>.
/// </summary>
internal static partial class EngineLog
{
    [LoggerMessage(1001, LogLevel.Information, "Client {ClientId} connected as {UserId} from {RemoteEndPoint} (MQTT {ProtocolVersion}, {Transport}, session present {SessionPresent})")]
    public static partial void ClientConnected(ILogger logger, string clientId, string userId, string? remoteEndPoint, string protocolVersion, string transport, bool sessionPresent);

    [LoggerMessage(1002, LogLevel.Information, "Client {ClientId} disconnected: {Reason}")]
    public static partial void ClientDisconnected(ILogger logger, string clientId, string reason);

    [LoggerMessage(1003, LogLevel.Warning, "Connection {ConnectionId} from {RemoteEndPoint} closed: {Reason}")]
    public static partial void ConnectionRejected(ILogger logger, string connectionId, string? remoteEndPoint, string reason);

    [LoggerMessage(1004, LogLevel.Warning, "Client {ClientId} sent a malformed packet and was disconnected: {Detail}")]
    public static partial void MalformedPacket(ILogger logger, string clientId, string detail);

    [LoggerMessage(1005, LogLevel.Warning, "Client {ClientId} sent a packet of {Size} bytes, above the limit Broker:Mqtt:MaxPacketSize = {Limit}; disconnected")]
    public static partial void PacketTooLarge(ILogger logger, string clientId, long size, int limit);

    [LoggerMessage(1006, LogLevel.Information, "Client {ClientId} taken over by a new connection")]
    public static partial void SessionTakenOver(ILogger logger, string clientId);

    [LoggerMessage(1007, LogLevel.Warning, "Client {ClientId} disconnected: {Reason}")]
    public static partial void ProtocolError(ILogger logger, string clientId, string reason);

    [LoggerMessage(1008, LogLevel.Error, "Connection {ConnectionId} failed")]
    public static partial void ConnectionFailed(ILogger logger, string connectionId, Exception exception);

    [LoggerMessage(1009, LogLevel.Error, "Client {ClientId}: writing to the connection failed; the connection is closed")]
    public static partial void WriterFailed(ILogger logger, string clientId, Exception exception);

    [LoggerMessage(2001, LogLevel.Warning, "CONNECT refused for client {ClientId} user {UserName} from {RemoteEndPoint}: {ReasonCode} {Reason}")]
    public static partial void ConnectRefused(ILogger logger, string clientId, string? userName, string? remoteEndPoint, string reasonCode, string reason);

    [LoggerMessage(3001, LogLevel.Warning, "PUBLISH refused for {ClientId} (user {UserId}) on {Topic}: {Decision}")]
    public static partial void PublishRefused(ILogger logger, string clientId, string userId, string topic, string decision);

    [LoggerMessage(3002, LogLevel.Warning, "SUBSCRIBE refused for {ClientId} (user {UserId}) on {Filter}: {Decision}")]
    public static partial void SubscribeRefused(ILogger logger, string clientId, string userId, string filter, string decision);

    [LoggerMessage(3003, LogLevel.Warning, "Will of {ClientId} (user {UserId}) on {Topic} refused: {Decision}")]
    public static partial void WillRefused(ILogger logger, string clientId, string userId, string topic, string decision);

    [LoggerMessage(4001, LogLevel.Information, "Restored {Sessions} sessions, {Messages} queued messages and {Retained} retained messages from the store")]
    public static partial void Restored(ILogger logger, int sessions, int messages, int retained);

    [LoggerMessage(4005, LogLevel.Warning, "Restored {Count} retained messages ({Bytes} bytes), above Broker:Limits:MaxRetainedMessages = {MaxMessages} or MaxRetainedBytes = {MaxBytes}: all kept; new retained topics are refused until enough are deleted")]
    public static partial void RetainedOverLimits(ILogger logger, int count, long bytes, long maxMessages, long maxBytes);

    [LoggerMessage(4002, LogLevel.Error, "Store write failed for a publish on {Topic}; not acknowledged")]
    public static partial void StoreFailed(ILogger logger, string topic, Exception exception);

    [LoggerMessage(4010, LogLevel.Error, "The policy's {What} observer failed")]
    public static partial void ObserverFailed(ILogger logger, string what, Exception exception);

    [LoggerMessage(5001, LogLevel.Warning, "Dropped a message for {ClientId} on {Topic}: {Reason} ({Total} dropped so far)")]
    public static partial void MessageDropped(ILogger logger, string clientId, string topic, string reason, long total);

    [LoggerMessage(5002, LogLevel.Information, "Session {ClientId} expired")]
    public static partial void SessionExpired(ILogger logger, string clientId);

    [LoggerMessage(5003, LogLevel.Information, "Direct message to {ClientId} on {Topic} dropped: that client id has no session")]
    public static partial void DirectUndeliverable(ILogger logger, string clientId, string topic);

    [LoggerMessage(5004, LogLevel.Warning, "Retained publish of {ClientId} on {Topic} refused, not delivered: Broker:Limits:{Limit} = {Value} reached ({Total} refused so far)")]
    public static partial void RetainedRefused(ILogger logger, string? clientId, string topic, string limit, long value, long total);

    [LoggerMessage(5005, LogLevel.Warning, "Retained publish of {ClientId} (user {UserId}) on {Topic} refused, not delivered: the user owns {Quota} retained messages, its MaxRetained quota (Broker:Limits:Roles) ({Total} refused so far)")]
    public static partial void RetainedQuotaRefused(ILogger logger, string? clientId, string? userId, string topic, int quota, long total);

    [LoggerMessage(1010, LogLevel.Warning, "Client {ClientId} (user {UserId}) disconnected: over its publish rate limit for {GraceSeconds} s (RateGraceSeconds, Broker:Limits:Roles)")]
    public static partial void RateDisconnected(ILogger logger, string clientId, string userId, double graceSeconds);

    [LoggerMessage(6001, LogLevel.Error, "Connect of {ClientId} refused (server unavailable): its login or session could not be checked: {Reason}")]
    public static partial void ConnectCheckFailed(ILogger logger, string clientId, string reason);
}
