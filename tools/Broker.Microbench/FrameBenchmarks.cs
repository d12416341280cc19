using System.Buffers;
using BenchmarkDotNet.Attributes;
using Broker.Engine.Connections;
using Broker.Engine.Options;
using Broker.Ims.Stamping;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.Microbench;

/// <summary>
/// One inbound PUBLISH (QoS 1, packet id 42, topic <c>IMS/user4711/Inbox/Msg/user42</c>, 64-byte payload) through
/// the engine's framing (<see cref="FrameReader.TryRead"/>) and MQTTnet's decoder, and one outbound PUBLISH
/// through MQTTnet's encoder, each set up as <c>MqttConnection</c> sets it up.
/// </summary>
[MemoryDiagnoser]
public class FrameBenchmarks
{
    const string Topic = "IMS/user4711/Inbox/Msg/user42";
    readonly int _maxPacketSize = new EngineOptions().Mqtt.MaxPacketSize;
    ReadOnlySequence<byte> _frame;
    byte _fixedHeader;
    byte[] _body = [];
    int _packetSize;
    MqttPacketFormatterAdapter _decoder = null!;
    MqttPacketFormatterAdapter _encoderV311 = null!;
    MqttPacketFormatterAdapter _encoderV5 = null!;
    MqttPublishPacket _outbound = null!;
    MqttPublishPacket _outboundStamped = null!;

    [GlobalSetup]
    public void Setup()
    {
        var payload = new byte[64];
        new Random(6).NextBytes(payload);
        _outbound = new MqttPublishPacket
        {
            Topic = Topic,
            PacketIdentifier = 42,
            QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce,
            Payload = new ReadOnlySequence<byte>(payload),
        };

        // What a v5 recipient gets: the same message with the broker's sender stamp (contract §4) and ims-id (§11).
        _outboundStamped = new MqttPublishPacket
        {
            Topic = Topic,
            PacketIdentifier = 42,
            QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce,
            Payload = new ReadOnlySequence<byte>(payload),
            UserProperties = SenderStamp.Apply("user42", Data.Device(42), null, 1_850_728_127_725_207_552), // and the message id (§11)
        };

        // The wire bytes of the inbound PUBLISH, as a v3.1.1 client sends them.
        var encoded = new MqttPacketFormatterAdapter(MqttProtocolVersion.V311, new MqttBufferWriter(256, 4096)).Encode(_outbound);
        var wire = new List<byte>(encoded.Packet);
        foreach (var segment in encoded.Payload)
        {
            wire.AddRange(segment.ToArray());
        }

        var bytes = wire.ToArray();
        _frame = new ReadOnlySequence<byte>(bytes);
        if (FrameReader.TryRead(_frame, _maxPacketSize, out _fixedHeader, out var body, out var size) != FrameStatus.Complete)
        {
            throw new InvalidOperationException("the PUBLISH frame does not read back");
        }

        _body = body.ToArray();
        _packetSize = (int)size;

        // As MqttConnection: one decoder per connection, one encoder per connection for its protocol version.
        _decoder = new MqttPacketFormatterAdapter(MqttProtocolVersion.V311, new MqttBufferWriter(256, 4096));
        _encoderV311 = new MqttPacketFormatterAdapter(MqttProtocolVersion.V311, new MqttBufferWriter(64, 64));
        _encoderV5 = new MqttPacketFormatterAdapter(MqttProtocolVersion.V500, new MqttBufferWriter(64, 64));
        if (EngineReadPath() is not MqttPublishPacket { Topic: Topic, PacketIdentifier: 42 })
        {
            throw new InvalidOperationException("the PUBLISH does not decode back");
        }
    }

    /// <summary>Framing only: fixed header, Remaining Length, size check, body slice.</summary>
    [Benchmark]
    public long FrameReaderTryRead()
    {
        FrameReader.TryRead(_frame, _maxPacketSize, out _, out var body, out var size);
        return body.Length + size;
    }

    /// <summary>The wire grammar check <c>MqttConnection</c> runs on every packet before MQTTnet decodes it (<see cref="PacketValidator"/>).</summary>
    [Benchmark]
    public bool PacketValidatorPublish() => PacketValidator.TryValidate(_fixedHeader, new ReadOnlySequence<byte>(_body), MqttProtocolVersion.V311, out _);

    /// <summary>MQTTnet's decode of the body (the <see cref="MqttPublishPacket"/>, its topic string and payload copy).</summary>
    [Benchmark]
    public MqttPacket MqttNetDecode() => _decoder.Decode(new ReceivedMqttPacket(_fixedHeader, new ArraySegment<byte>(_body), _packetSize));

    /// <summary>The engine's whole read of one packet: frame, copy the body into a pooled array, decode, return the array.</summary>
    [Benchmark]
    public MqttPacket EngineReadPath()
    {
        FrameReader.TryRead(_frame, _maxPacketSize, out var header, out var body, out var size);
        var length = (int)body.Length;
        var rented = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
        try
        {
            body.CopyTo(rented);
            return _decoder.Decode(new ReceivedMqttPacket(header, new ArraySegment<byte>(rented, 0, length), (int)size));
        }
        finally
        {
            ArrayPool<byte>.Shared.Return(rented);
        }
    }

    /// <summary>MQTTnet's encode of the outbound PUBLISH for a v3.1.1 client (header into the writer, payload by reference).</summary>
    [Benchmark]
    public int MqttNetEncodeV311() => _encoderV311.Encode(_outbound).Length;

    /// <summary>The same for a v5 client, with the two sender-stamp user properties.</summary>
    [Benchmark]
    public int MqttNetEncodeV5Stamped() => _encoderV5.Encode(_outboundStamped).Length;
}
