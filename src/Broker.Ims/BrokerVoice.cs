using System.Collections.Concurrent;
using Broker.Engine.Policy;
using Broker.Ims.Options;
using Microsoft.Extensions.Logging;

namespace Broker.Ims;

/// <summary>
/// The broker publishing on its own (presence, delivery receipts) through the engine's
/// <see cref="IBrokerPublisher"/>, handed over at start. Publishes are routed at once (in the caller's
/// order); their durability is tracked so that shutdown can wait for it.
/// </summary>
internal sealed partial class BrokerVoice(ILogger logger)
{
    /// <summary>Who the broker is when it publishes: <c>ims-sender</c> and <c>ims-client</c> say <c>$broker</c>, never a user id.</summary>
    public static readonly ClientPrincipal Principal = new("$broker", "$broker", Roles.Admin);

    readonly ConcurrentDictionary<Task, byte> _pending = new();
    volatile IBrokerPublisher? _broker;

    public IBrokerPublisher? Broker => _broker;

    public void Attach(IBrokerPublisher broker) => _broker = broker;

    /// <summary>Routes now; false when the broker has not started (or has stopped).</summary>
    public bool Publish(string topic, ReadOnlyMemory<byte> payload, MQTTnet.Protocol.MqttQualityOfServiceLevel qos, bool retain) =>
        PublishDurableAsync(topic, payload, qos, retain) is not null;

    /// <summary>Routes now; the task completes when the message is durable (a failure is logged, not thrown). Null when the broker has not started (or has stopped).</summary>
    public Task? PublishDurableAsync(string topic, ReadOnlyMemory<byte> payload, MQTTnet.Protocol.MqttQualityOfServiceLevel qos, bool retain)
    {
        if (_broker is not { } broker)
        {
            return null;
        }

        ValueTask write;
        try
        {
            write = broker.PublishAsync(Principal, topic, payload, qos, retain);
        }
        catch (Exception ex)
        {
            LogPublishFailed(logger, topic, ex);
            return null;
        }

        if (write.IsCompletedSuccessfully)
        {
            return Task.CompletedTask;
        }

        var task = ObserveAsync(write, topic);
        if (!task.IsCompleted)
        {
            _pending.TryAdd(task, 0);
            task.ContinueWith(static (t, state) => ((ConcurrentDictionary<Task, byte>)state!).TryRemove(t, out _), _pending, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }

        return task;
    }

    async Task ObserveAsync(ValueTask write, string topic)
    {
        try
        {
            await write;
        }
        catch (Exception ex)
        {
            LogPublishFailed(logger, topic, ex);
        }
    }

    /// <summary>Until everything published so far is durable (or the token fires); afterwards nothing more is published.</summary>
    public async Task DrainAsync(CancellationToken cancellationToken)
    {
        try
        {
            await Task.WhenAll(_pending.Keys).WaitAsync(cancellationToken);
        }
        catch (OperationCanceledException)
        {
        }
    }

    public void Detach() => _broker = null;

    /// <summary>Presence could not read a user's devices (a cluster's shared store out of reach); it tries again for half a minute.</summary>
    public void LogPresenceFailed(string user, Exception exception) => LogPresenceReadFailed(logger, user, exception.Message);

    [LoggerMessage(3021, LogLevel.Warning, "Presence of {User} not updated: {Reason}")]
    static partial void LogPresenceReadFailed(ILogger logger, string user, string reason);

    [LoggerMessage(3020, LogLevel.Error, "The broker's own publish on {Topic} failed (presence or delivery receipt)")]
    static partial void LogPublishFailed(ILogger logger, string topic, Exception exception);
}
