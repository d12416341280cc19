using Microsoft.Extensions.Options;

namespace Broker.Engine.Options;

/// <summary>
/// Checks every engine setting at start; each failure names its configuration key and the allowed range.
/// The listener's and the store's settings are checked by their own validators, which the host runs too.
/// </summary>
public sealed class EngineOptionsValidator : IValidateOptions<EngineOptions>
{
    public ValidateOptionsResult Validate(string? name, EngineOptions o)
    {
        var errors = new List<string>();
        void Range(string key, long value, long min, long max)
        {
            if (value < min || value > max)
            {
                errors.Add($"{key} must be between {min} and {max} (was {value}).");
            }
        }

        Range("Broker:Mqtt:MaxPacketSize", o.Mqtt.MaxPacketSize, 128, 268_435_455);
        Range("Broker:Mqtt:ReceiveMaximum", o.Mqtt.ReceiveMaximum, 1, 65535);
        Range("Broker:Mqtt:MaxInflightMessages", o.Mqtt.MaxInflightMessages, 1, 65535);
        Range("Broker:Mqtt:TopicAliasMaximum", o.Mqtt.TopicAliasMaximum, 0, 65535);
        Range("Broker:Mqtt:ServerKeepAlive", o.Mqtt.ServerKeepAlive, 0, 65535);
        if (o.Mqtt.MaxKeepAliveSeconds is { } deprecated)
        {
            Range("Broker:Mqtt:MaxKeepAliveSeconds (deprecated: use Broker:Mqtt:ServerKeepAlive)", deprecated, 0, 65535);
            if (o.Mqtt.ServerKeepAlive > 0 && deprecated > 0 && deprecated != o.Mqtt.ServerKeepAlive)
            {
                errors.Add($"Broker:Mqtt:MaxKeepAliveSeconds ({deprecated}) is the deprecated name of Broker:Mqtt:ServerKeepAlive ({o.Mqtt.ServerKeepAlive}): set only Broker:Mqtt:ServerKeepAlive.");
            }
        }

        Range("Broker:Mqtt:ConnectTimeout (seconds)", (long)o.Mqtt.ConnectTimeout.TotalSeconds, 1, 3600);
        Range("Broker:Limits:MaxConnections", o.Limits.MaxConnections, 1, 10_000_000);
        Range("Broker:Limits:MaxTopicLength", o.Limits.MaxTopicLength, 1, 65535);
        Range("Broker:Limits:MaxTopicLevels", o.Limits.MaxTopicLevels, 1, 1000);
        Range("Broker:Limits:MaxMailboxClientIds", o.Limits.MaxMailboxClientIds, 0, 100_000_000);
        Range("Broker:Limits:MaxRetainedMessages", o.Limits.MaxRetainedMessages, 0, 100_000_000);
        Range("Broker:Limits:MaxRetainedBytes", o.Limits.MaxRetainedBytes, 0, 1L << 40);
        Range("Broker:Limits:ConnectRatePerSource", o.Limits.ConnectRatePerSource, 0, 1_000_000);
        Range("Broker:Limits:ConnectBurstPerSource", o.Limits.ConnectBurstPerSource, 1, 1_000_000);
        Range("Broker:Limits:MaxConcurrentPasswordChecks", o.Limits.MaxConcurrentPasswordChecks, 1, 1024);
        Range("Broker:Limits:MaxQueuedPasswordChecks", o.Limits.MaxQueuedPasswordChecks, 0, 1_000_000);
        Range("Broker:Limits:LoginFailureDelay (milliseconds)", (long)o.Limits.LoginFailureDelay.TotalMilliseconds, 0, 60_000);
        Range("Broker:Limits:LoginMaxDelay (milliseconds)", (long)o.Limits.LoginMaxDelay.TotalMilliseconds, 0, 300_000);
        if (o.Limits.LoginMaxDelay < o.Limits.LoginFailureDelay)
        {
            errors.Add($"Broker:Limits:LoginMaxDelay must not be below Broker:Limits:LoginFailureDelay (was {o.Limits.LoginMaxDelay} < {o.Limits.LoginFailureDelay}).");
        }

        Range("Broker:Limits:LoginFailureReset (seconds)", (long)o.Limits.LoginFailureReset.TotalSeconds, 1, 86_400);
        Range("Broker:MaxQueuedMessages", o.MaxQueuedMessages, 1, 10_000_000);
        Range("Broker:MaxQueuedBytes", o.MaxQueuedBytes, 1024, 1L << 40);
        Range("Broker:OfflineQueue:MaxMessages", o.OfflineQueue.MaxMessages, 1, 100_000_000);
        Range("Broker:OfflineQueue:MaxBytes", o.OfflineQueue.MaxBytes, 1024, 1L << 40);
        Range("Broker:OfflineQueue:Ttl (seconds)", (long)o.OfflineQueue.Ttl.TotalSeconds, 1, uint.MaxValue);
        Range("Broker:DefaultSessionExpiry (seconds)", (long)o.DefaultSessionExpiry.TotalSeconds, 0, uint.MaxValue);
        Range("Broker:OfflineP2PTtl (seconds)", (long)o.OfflineP2PTtl.TotalSeconds, 1, uint.MaxValue);
        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
