using System.Buffers;

namespace Broker.Engine.Connections;

internal enum FrameStatus
{
    Incomplete,
    Complete,
    TooLarge,
    Malformed,
}

/// <summary>
/// Splits the byte stream into MQTT packets [MQTT-2.1]: one fixed-header byte, a Remaining Length
/// of at most four bytes [MQTT-1.5.5], then the body. The size limit is checked as soon as the
/// Remaining Length is known, so an oversized packet is refused before a byte of it is buffered.
/// </summary>
internal static class FrameReader
{
    public static FrameStatus TryRead(in ReadOnlySequence<byte> buffer, int maxPacketSize, out byte fixedHeader, out ReadOnlySequence<byte> body, out long packetSize)
    {
        fixedHeader = 0;
        body = default;
        packetSize = 0;
        var reader = new SequenceReader<byte>(buffer);
        if (!reader.TryRead(out fixedHeader))
        {
            return FrameStatus.Incomplete;
        }

        var remaining = 0;
        var multiplier = 1;
        for (var i = 0; ; i++)
        {
            if (i == 4)
            {
                return FrameStatus.Malformed; // a fifth length byte [MQTT-1.5.5-1]
            }

            if (!reader.TryRead(out var b))
            {
                return FrameStatus.Incomplete;
            }

            remaining += (b & 0x7F) * multiplier;
            if ((b & 0x80) == 0)
            {
                packetSize = 1 + (i + 1) + (long)remaining;
                break;
            }

            multiplier *= 128;
        }

        if (packetSize > maxPacketSize)
        {
            return FrameStatus.TooLarge;
        }

        if (reader.Remaining < remaining)
        {
            return FrameStatus.Incomplete;
        }

        body = buffer.Slice(reader.Position, remaining);
        return FrameStatus.Complete;
    }
}
