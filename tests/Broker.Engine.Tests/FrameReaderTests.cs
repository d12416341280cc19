using System.Buffers;
using Broker.Engine.Connections;

namespace Broker.Engine.Tests;

/// <summary>Splitting the byte stream into packets [MQTT-2.1, 1.5.5], with the size limit on the fixed header.</summary>
public sealed class FrameReaderTests
{
    static FrameStatus Read(byte[] bytes, int max, out byte header, out byte[] body, out long size)
    {
        var status = FrameReader.TryRead(new ReadOnlySequence<byte>(bytes), max, out header, out var b, out size);
        body = b.ToArray();
        return status;
    }

    [Theory]
    [InlineData(new byte[0])]
    [InlineData(new byte[] { 0x30 })] // fixed header, no length yet
    [InlineData(new byte[] { 0x30, 0x80 })] // length continues
    [InlineData(new byte[] { 0x30, 0x03, 0x00 })] // body shorter than the Remaining Length
    public void TryRead_Incomplete_WaitsForMore(byte[] bytes)
    {
        Assert.Equal(FrameStatus.Incomplete, Read(bytes, 1024, out _, out _, out _));
    }

    [Fact]
    public void TryRead_Complete_ReturnsHeaderBodyAndSize()
    {
        byte[] bytes = [0x32, 0x03, 0x0A, 0x0B, 0x0C, 0xC0 /* next packet */];

        Assert.Equal(FrameStatus.Complete, Read(bytes, 1024, out var header, out var body, out var size));
        Assert.Equal(0x32, header);
        Assert.Equal(new byte[] { 0x0A, 0x0B, 0x0C }, body);
        Assert.Equal(5, size);
    }

    [Fact]
    public void TryRead_EmptyBody_Complete()
    {
        Assert.Equal(FrameStatus.Complete, Read([0xC0, 0x00], 1024, out var header, out var body, out var size));
        Assert.Equal(0xC0, header);
        Assert.Empty(body);
        Assert.Equal(2, size);
    }

    [Fact]
    public void TryRead_MultiByteLength_Decoded()
    {
        // 321 = 0xC1 0x02 [MQTT-1.5.5]
        var bytes = new byte[3 + 321];
        bytes[0] = 0x30;
        bytes[1] = 0xC1;
        bytes[2] = 0x02;

        Assert.Equal(FrameStatus.Complete, Read(bytes, 1024, out _, out var body, out var size));
        Assert.Equal(321, body.Length);
        Assert.Equal(324, size);
    }

    [Fact]
    public void TryRead_SplitAcrossSegments_Complete()
    {
        var first = new Segment([0x30, 0x04, 0x01]);
        var last = first.Append([0x02, 0x03, 0x04]);
        var sequence = new ReadOnlySequence<byte>(first, 0, last, last.Memory.Length);

        Assert.Equal(FrameStatus.Complete, FrameReader.TryRead(sequence, 1024, out _, out var body, out _));
        Assert.Equal(new byte[] { 1, 2, 3, 4 }, body.ToArray());
    }

    [Fact]
    public void TryRead_TooLarge_DecidedFromHeaderBeforeBodyArrives()
    {
        // Remaining Length 2000 (0xD0 0x0F) and not one byte of body: refused already.
        Assert.Equal(FrameStatus.TooLarge, Read([0x30, 0xD0, 0x0F], 1024, out _, out _, out var size));
        Assert.Equal(2003, size);
    }

    [Fact]
    public void TryRead_ExactlyMaxSize_Complete()
    {
        var bytes = new byte[1024];
        bytes[0] = 0x30;
        bytes[1] = 0xFD; // 1021 = 0xFD 0x07
        bytes[2] = 0x07;

        Assert.Equal(FrameStatus.Complete, Read(bytes, 1024, out _, out _, out var size));
        Assert.Equal(1024, size);
        bytes[1] = 0xFE; // one more byte of Remaining Length
        Assert.Equal(FrameStatus.TooLarge, Read(bytes, 1024, out _, out _, out _));
    }

    [Theory]
    [InlineData(new byte[] { 0x30, 0xFF, 0xFF, 0xFF, 0xFF, 0x01 })]
    [InlineData(new byte[] { 0x30, 0x80, 0x80, 0x80, 0x80 })] // a fifth length byte is announced
    [InlineData(new byte[] { 0xFF, 0xFF, 0xFF, 0xFF, 0xFF })]
    public void TryRead_FiveByteRemainingLength_Malformed(byte[] bytes)
    {
        // [MQTT-1.5.5-1]: the Remaining Length is at most four bytes.
        Assert.Equal(FrameStatus.Malformed, Read(bytes, int.MaxValue, out _, out _, out _));
    }

    sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(byte[] bytes) => Memory = bytes;

        public Segment Append(byte[] bytes)
        {
            var next = new Segment(bytes) { RunningIndex = RunningIndex + Memory.Length };
            Next = next;
            return next;
        }
    }
}
