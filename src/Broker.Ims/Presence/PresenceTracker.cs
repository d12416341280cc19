using System.Buffers;
using System.Collections.Concurrent;
using System.Text.Json;
using Broker.Engine.Cluster;
using Broker.Engine.Policy;
using MQTTnet.Protocol;

namespace Broker.Ims.Presence;

/// <summary>
/// Contract §10: the broker keeps <c>P/u/Presence</c> retained, QoS 1, durable, for every user:
/// <c>{"user":"bob","online":true,"devices":["GID_IMS@@@bob-phone"],"lastSeen":1764633600000}</c>.
/// The devices are the <see cref="IDeviceDirectory"/>'s (every node of a cluster). When a user's devices may
/// have changed (a connect here, a close here, a dead node's devices removed) the tracker reads the directory
/// and publishes if the list differs from the retained one. One user is published by one task at a time
/// (changes meanwhile are coalesced into one more read), and after each publish is durable the directory is
/// read again: a publish of another node that raced with this one and landed first is corrected this way.
/// </summary>
internal sealed class PresenceTracker
{
    public const string Level = "Presence";

    const int RetryLimit = 30;

    readonly string _parentTopic;
    readonly BrokerVoice _voice;
    readonly IDeviceDirectory _devices;
    readonly TimeProvider _time;
    readonly Dictionary<string, bool> _publishing = new(StringComparer.Ordinal); // user → changed again meanwhile; under _gate
    readonly Lock _gate = new();
    readonly ConcurrentDictionary<Task, byte> _loops = new(); // the running publish loops, for shutdown
    volatile bool _stopped;

    public PresenceTracker(string parentTopic, BrokerVoice voice, IDeviceDirectory devices, TimeProvider time)
    {
        _parentTopic = parentTopic;
        _voice = voice;
        _devices = devices;
        _time = time;
        devices.ChangedElsewhere += Changed;
    }

    public static string TopicOf(string parentTopic, string userId) => $"{parentTopic}/{userId}/{Level}";

    /// <summary>
    /// After a crash the store still shows users online who are not: every retained presence that says
    /// online (no client is connected yet) is republished offline, with <c>lastSeen</c> = this start. Not in a
    /// cluster, whose directory outlives this node: there the dead node's devices are removed by a survivor.
    /// </summary>
    public void CorrectAfterRestart(IEnumerable<string> parentTopics)
    {
        if (_devices.OutlivesProcess)
        {
            return;
        }

        var now = _time.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var parent in parentTopics)
        {
            foreach (var retained in _voice.Broker?.GetRetained($"{parent}/+/{Level}") ?? [])
            {
                if (TryRead(retained.Payload.Span, out var user, out var online, out _, out _) && online
                    && retained.Topic == TopicOf(parent, user))
                {
                    _voice.Publish(retained.Topic, Encode(user, [], now), MqttQualityOfServiceLevel.AtLeastOnce, retain: true);
                }
            }
        }
    }

    /// <summary>
    /// The user's device set may have changed: publish what the directory says, unless that is what the
    /// retained message says already (a takeover by the same device changes nothing: no offline flap).
    /// </summary>
    public void Changed(string user)
    {
        if (_stopped)
        {
            return;
        }

        lock (_gate)
        {
            if (_publishing.ContainsKey(user))
            {
                _publishing[user] = true; // the running task reads once more
                return;
            }

            _publishing[user] = false;
        }

        var loop = PublishAsync(user);
        if (!loop.IsCompleted)
        {
            _loops.TryAdd(loop, 0);
            loop.ContinueWith(static (t, state) => ((ConcurrentDictionary<Task, byte>)state!).TryRemove(t, out _), _loops, CancellationToken.None, TaskContinuationOptions.ExecuteSynchronously, TaskScheduler.Default);
        }
    }

    async Task PublishAsync(string user)
    {
        string[]? published = null;
        var failures = 0;
        while (true)
        {
            try
            {
                var devices = await _devices.DevicesAsync(user).ConfigureAwait(false);
                if (Publish(user, devices, published) is { } durable)
                {
                    published = devices;
                    await durable.ConfigureAwait(false);
                    continue; // read again: another node may have published older news after ours
                }
            }
            catch (Exception ex)
            {
                // A cluster's shared store out of reach: tried again every second for half a minute, logged once.
                if (failures++ == 0)
                {
                    _voice.LogPresenceFailed(user, ex);
                }

                if (failures < RetryLimit && !_stopped)
                {
                    await Task.Delay(TimeSpan.FromSeconds(1), _time).ConfigureAwait(false);
                    continue;
                }
            }

            lock (_gate)
            {
                if (!_publishing[user])
                {
                    _publishing.Remove(user);
                    return;
                }

                _publishing[user] = false;
            }
        }
    }

    /// <summary>Publishes <paramref name="devices"/> unless they are the list published last (<paramref name="published"/>, else the retained one); null when nothing was published.</summary>
    Task? Publish(string user, string[] devices, string[]? published)
    {
        var topic = TopicOf(_parentTopic, user);
        long? lastSeen = null;
        string[] shown = [];
        foreach (var retained in _voice.Broker?.GetRetained(topic) ?? [])
        {
            if (TryRead(retained.Payload.Span, out _, out _, out lastSeen, out var listed))
            {
                shown = listed;
            }
        }

        if (devices.AsSpan().SequenceEqual(published ?? shown))
        {
            return null;
        }

        // lastSeen: when the last device went away; kept while online.
        return _voice.PublishDurableAsync(topic, Encode(user, devices, devices.Length == 0 ? _time.GetUtcNow().ToUnixTimeMilliseconds() : lastSeen),
            MqttQualityOfServiceLevel.AtLeastOnce, retain: true);
    }

    /// <summary>
    /// Shutdown, once connections were told to close: this node's devices leave the directory and their users
    /// are published (offline, or still online on other nodes), through the same per-user loops as the closes
    /// that got there first; returns when those loops are done. Later changes are ignored.
    /// </summary>
    public async Task StopAsync()
    {
        try
        {
            foreach (var user in await _devices.RemoveThisNodeAsync().ConfigureAwait(false))
            {
                Changed(user);
            }
        }
        catch (Exception ex)
        {
            _voice.LogPresenceFailed("(every user of this node)", ex); // a cluster's sweep of this node publishes them
        }

        await Task.WhenAll(_loops.Keys).ConfigureAwait(false);
        _stopped = true;
    }

    /// <summary>The payload, fields in the contract's order; <c>lastSeen</c> is null until the user was first seen going offline.</summary>
    public static byte[] Encode(string user, string[] devices, long? lastSeen)
    {
        var buffer = new ArrayBufferWriter<byte>(64 + user.Length + devices.Length * 40);
        using (var json = new Utf8JsonWriter(buffer))
        {
            json.WriteStartObject();
            json.WriteString("user", user);
            json.WriteBoolean("online", devices.Length > 0);
            json.WriteStartArray("devices");
            foreach (var d in devices)
            {
                json.WriteStringValue(d);
            }

            json.WriteEndArray();
            if (lastSeen is { } seen)
            {
                json.WriteNumber("lastSeen", seen);
            }
            else
            {
                json.WriteNull("lastSeen");
            }

            json.WriteEndObject();
        }

        return buffer.WrittenSpan.ToArray();
    }

    public static bool TryRead(ReadOnlySpan<byte> payload, out string user, out bool online, out long? lastSeen, out string[] devices)
    {
        user = "";
        online = false;
        lastSeen = null;
        devices = [];
        try
        {
            var reader = new Utf8JsonReader(payload);
            if (!reader.Read() || reader.TokenType != JsonTokenType.StartObject)
            {
                return false;
            }

            while (reader.Read() && reader.TokenType == JsonTokenType.PropertyName)
            {
                var name = reader.GetString();
                reader.Read();
                switch (name)
                {
                    case "user" when reader.TokenType == JsonTokenType.String:
                        user = reader.GetString()!;
                        break;
                    case "online" when reader.TokenType is JsonTokenType.True or JsonTokenType.False:
                        online = reader.GetBoolean();
                        break;
                    case "lastSeen" when reader.TokenType == JsonTokenType.Number:
                        lastSeen = reader.GetInt64();
                        break;
                    case "devices" when reader.TokenType == JsonTokenType.StartArray:
                        var list = new List<string>(2);
                        while (reader.Read() && reader.TokenType == JsonTokenType.String)
                        {
                            list.Add(reader.GetString()!);
                        }

                        devices = [.. list];
                        break;
                    default:
                        reader.Skip();
                        break;
                }
            }

            return user.Length > 0;
        }
        catch (JsonException)
        {
            return false;
        }
    }
}
