using MQTTnet.Adapter;
using MQTTnet.Formatter;

namespace Broker.Engine.Connections;

/// <summary>
/// MQTTnet's formatters hold nothing of a connection, only scratch buffers, and every encode and
/// decode here runs to completion without awaiting: one formatter per thread and protocol version
/// serves all connections, so an idle connection holds none (issue 6: memory per connection).
/// </summary>
internal static class PacketFormatters
{
    [ThreadStatic] static MqttPacketFormatterAdapter? t_v310;
    [ThreadStatic] static MqttPacketFormatterAdapter? t_v311;
    [ThreadStatic] static MqttPacketFormatterAdapter? t_v500;

    public static MqttPacketFormatterAdapter For(MqttProtocolVersion version) => version switch
    {
        MqttProtocolVersion.V500 => t_v500 ??= Create(version),
        MqttProtocolVersion.V311 => t_v311 ??= Create(version),
        MqttProtocolVersion.V310 => t_v310 ??= Create(version),
        _ => throw new InvalidOperationException($"no formatter for protocol version {version}"),
    };

    /// <summary>The protocol version a CONNECT asks for [MQTT-3.1.2-2]; throws for an unsupported one.</summary>
    public static MqttProtocolVersion Detect(ReceivedMqttPacket connect)
    {
        var probe = new MqttPacketFormatterAdapter(new MqttBufferWriter(16, 16));
        probe.DetectProtocolVersion(connect);
        return probe.ProtocolVersion;
    }

    // Header and property bytes only (payloads are written from their own memory); grows on demand
    // and goes back to 4 KiB after each batch.
    static MqttPacketFormatterAdapter Create(MqttProtocolVersion version) => new(version, new MqttBufferWriter(4096, 4096));
}
