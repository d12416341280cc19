using System.Buffers.Binary;
using System.Diagnostics;

namespace Broker.Bench;

/// <summary>The first 24 payload bytes: run id, send timestamp (Stopwatch ticks), sequence number.</summary>
internal static class Stamp
{
    public const int Size = 24;

    public static void Write(Span<byte> payload, long run, long seq)
    {
        BinaryPrimitives.WriteInt64LittleEndian(payload, run);
        BinaryPrimitives.WriteInt64LittleEndian(payload[8..], Stopwatch.GetTimestamp());
        BinaryPrimitives.WriteInt64LittleEndian(payload[16..], seq);
    }

    /// <summary>The send timestamp, or -1 when the payload is not from this run (a leftover queued message).</summary>
    public static long Read(ReadOnlySpan<byte> payload, long run)
    {
        if (payload.Length < Size || BinaryPrimitives.ReadInt64LittleEndian(payload) != run)
        {
            return -1;
        }

        return BinaryPrimitives.ReadInt64LittleEndian(payload[8..]);
    }
}
