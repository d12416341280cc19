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
    public bool Publish(string topic, ReadOnlyMemory<byte> payload, MQTTnet.Protocol.MqttQualityOfServiceLevel qos, bool retain)
    {
        if (_broker is not { } broker)
        {
            return false;
        }

        ValueTask write;
        try
        {
            write = broker.PublishAsync(Principal, topic, payload, qos, retain);
        }
        catch (Exception ex)
        {
            LogPublishFailed(logger, topic, ex);
            return false;
        }

        if (!write.IsCompletedSuccessfully)
        {
            var task = ObserveAsync(write, topic);
            if (!task.IsCompleted)
            {
                _pending.TryAdd(task, 0);
                task.ContinueWith(static (t, state) => ((ConcurrentDictionary<Task, byte>)state!).TryRemove(t, out _), _pending, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
            }
        }

        return true;
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

    [LoggerMessage(3020, LogLevel.Error, "The broker's own publish on {Topic} failed (presence or delivery receipt)")]
    static partial void LogPublishFailed(ILogger logger, string topic, Exception exception);
}
