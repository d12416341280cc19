using System.Buffers;
using System.Collections.Concurrent;
using System.Text.Json;
using Broker.Engine.Policy;
using MQTTnet.Protocol;

namespace Broker.Ims.Presence;

/// <summary>
/// Contract §10: the broker keeps <c>P/u/Presence</c> retained, QoS 1, durable, for every user:
/// <c>{"user":"bob","online":true,"devices":["GID_IMS@@@bob-phone"],"lastSeen":1764633600000}</c>.
/// Follows the engine's connection events (<see cref="IConnectionObserver"/>): a connect or a close costs a
/// lookup of its user and one publish when the device set changed, never a walk over users. State is kept
/// for online users only; a user coming back reads its last <c>lastSeen</c> from the retained message.
/// Each user's updates are routed under that user's lock, so they are retained and stored in order.
/// </summary>
internal sealed class PresenceTracker(string parentTopic, BrokerVoice voice, TimeProvider time)
{
    public const string Level = "Presence";

    readonly ConcurrentDictionary<string, UserPresence> _users = new(StringComparer.Ordinal);
    volatile bool _stopped;

    public static string TopicOf(string parentTopic, string userId) => $"{parentTopic}/{userId}/{Level}";

    /// <summary>
    /// After a crash the store still shows users online who are not: every retained presence that says
    /// online (no client is connected yet) is republished offline, with <c>lastSeen</c> = this start.
    /// </summary>
    public void CorrectAfterRestart(IEnumerable<string> parentTopics)
    {
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var parent in parentTopics)
        {
            foreach (var retained in voice.Broker?.GetRetained($"{parent}/+/{Level}") ?? [])
            {
                if (TryRead(retained.Payload.Span, out var user, out var online, out _) && online
                    && retained.Topic == TopicOf(parent, user))
                {
                    voice.Publish(retained.Topic, Encode(user, [], now), MqttQualityOfServiceLevel.AtLeastOnce, retain: true);
                }
            }
        }
    }

    public void Connected(ClientPrincipal client, long connection)
    {
        if (_stopped)
        {
            return;
        }

        while (true)
        {
            var state = _users.GetOrAdd(client.UserId, static _ => new UserPresence());
            lock (state)
            {
                if (state.Removed)
                {
                    continue; // went offline meanwhile: start afresh
                }

                if (!state.Loaded)
                {
                    state.LastSeen = ReadLastSeen(client.UserId);
                    state.Loaded = true;
                }

                var at = state.IndexOf(client.ClientId);
                if (at >= 0)
                {
                    // The same device again (a takeover, or a reconnect racing with its old close): no change to tell.
                    state.Devices[at] = (client.ClientId, connection);
                    return;
                }

                state.Devices.Add((client.ClientId, connection));
                PublishLocked(client.UserId, state);
                return;
            }
        }
    }

    public void Disconnected(ClientPrincipal client, long connection, bool takenOver)
    {
        // A takeover: the device reconnects at this moment and stays in the set (no offline → online flap).
        if (takenOver || _stopped || !_users.TryGetValue(client.UserId, out var state))
        {
            return;
        }

        lock (state)
        {
            var at = state.IndexOf(client.ClientId);
            if (state.Removed || at < 0 || state.Devices[at].Connection != connection)
            {
                return; // an older connection of a device that is connected again
            }

            state.Devices.RemoveAt(at);
            if (state.Devices.Count == 0)
            {
                state.LastSeen = time.GetUtcNow().ToUnixTimeMilliseconds();
            }

            PublishLocked(client.UserId, state);
            if (state.Devices.Count == 0)
            {
                state.Removed = true;
                _users.TryRemove(new KeyValuePair<string, UserPresence>(client.UserId, state));
            }
        }
    }

    /// <summary>Shutdown: whoever is still shown online goes offline now (lastSeen = now); later events are ignored.</summary>
    public void Stop()
    {
        _stopped = true;
        var now = time.GetUtcNow().ToUnixTimeMilliseconds();
        foreach (var (user, state) in _users)
        {
            lock (state)
            {
                if (state.Removed)
                {
                    continue;
                }

                state.Devices.Clear();
                state.LastSeen = now;
                state.Removed = true;
                PublishLocked(user, state);
            }
        }

        _users.Clear();
    }

    void PublishLocked(string user, UserPresence state)
    {
        var devices = new string[state.Devices.Count];
        for (var i = 0; i < devices.Length; i++)
        {
            devices[i] = state.Devices[i].ClientId;
        }

        voice.Publish(TopicOf(parentTopic, user), Encode(user, devices, state.LastSeen), MqttQualityOfServiceLevel.AtLeastOnce, retain: true);
    }

    long? ReadLastSeen(string user)
    {
        foreach (var retained in voice.Broker?.GetRetained(TopicOf(parentTopic, user)) ?? [])
        {
            if (TryRead(retained.Payload.Span, out _, out _, out var lastSeen))
            {
                return lastSeen;
            }
        }

        return null;
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

    public static bool TryRead(ReadOnlySpan<byte> payload, out string user, out bool online, out long? lastSeen)
    {
        user = "";
        online = false;
        lastSeen = null;
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

    sealed class UserPresence
    {
        /// <summary>Connected devices in the order they came, with the connection that holds each.</summary>
        public readonly List<(string ClientId, long Connection)> Devices = new(2);
        public long? LastSeen;
        public bool Loaded;
        public bool Removed;

        public int IndexOf(string clientId)
        {
            for (var i = 0; i < Devices.Count; i++)
            {
                if (Devices[i].ClientId == clientId)
                {
                    return i;
                }
            }

            return -1;
        }
    }
}
