using System.Collections.Concurrent;

namespace Broker.Engine.Routing;

/// <summary>
/// The last retained message per topic [MQTT-3.3.1-5]. An exact filter is one lookup; a wildcard
/// filter scans the retained set, which happens once per SUBSCRIBE, never per publish.
/// </summary>
public sealed class RetainedMessages
{
    readonly ConcurrentDictionary<string, BrokerMessage> _byTopic = new(StringComparer.Ordinal);

    public int Count => _byTopic.Count;

    public void Set(BrokerMessage message) => _byTopic[message.Topic] = message;

    public bool Remove(string topic) => _byTopic.TryRemove(topic, out _);

    public BrokerMessage? Get(string topic) => _byTopic.TryGetValue(topic, out var m) ? m : null;

    public void CollectMatching(string filter, List<BrokerMessage> into)
    {
        if (!MqttTopic.HasWildcard(filter))
        {
            if (_byTopic.TryGetValue(filter, out var exact))
            {
                into.Add(exact);
            }

            return;
        }

        foreach (var (topic, message) in _byTopic)
        {
            if (MqttTopic.Matches(filter, topic))
            {
                into.Add(message);
            }
        }
    }
}
