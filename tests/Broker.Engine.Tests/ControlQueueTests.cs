using Broker.Engine.Connections;
using MQTTnet.Packets;

namespace Broker.Engine.Tests;

/// <summary>
/// The connection's control queue: many threads add acks, the writer takes them all at once in the
/// order they were added (acks go out in the order of the publishes [MQTT-4.6.0-2]).
/// </summary>
public sealed class ControlQueueTests
{
    static List<ushort> Ids(ControlQueue.Node? node)
    {
        var ids = new List<ushort>();
        for (; node is not null; node = node.Next)
        {
            ids.Add(((MqttPubAckPacket)node.Packet).PacketIdentifier);
        }

        return ids;
    }

    [Fact]
    public void TakeAll_ReturnsWhatWasAdded_OldestFirst_AndLeavesItEmpty()
    {
        var queue = new ControlQueue();
        Assert.True(queue.IsEmpty);
        Assert.Null(queue.TakeAll());

        for (ushort id = 1; id <= 5; id++)
        {
            queue.Add(new MqttPubAckPacket { PacketIdentifier = id });
        }

        Assert.False(queue.IsEmpty);
        Assert.Equal([1, 2, 3, 4, 5], Ids(queue.TakeAll()));
        Assert.True(queue.IsEmpty);
        queue.Add(new MqttPubAckPacket { PacketIdentifier = 6 });
        Assert.Equal([6], Ids(queue.TakeAll()));
    }

    [Fact]
    public async Task ConcurrentAdders_LoseNothing_AndEachAddersOrderIsKept()
    {
        var queue = new ControlQueue();
        const int PerThread = 20_000;
        var taken = new List<ushort>();
        using var start = new Barrier(3);
        Task Adder(ushort first) => Task.Run(() =>
        {
            start.SignalAndWait();
            for (var i = 0; i < PerThread; i++)
            {
                queue.Add(new MqttPubAckPacket { PacketIdentifier = (ushort)(first + i) });
            }
        });

        var adders = Task.WhenAll(Adder(1), Adder(30_001));
        start.SignalAndWait();
        while (!adders.IsCompleted || !queue.IsEmpty)
        {
            taken.AddRange(Ids(queue.TakeAll()));
        }

        await adders;
        Assert.Equal(2 * PerThread, taken.Count);
        Assert.Equal(taken.Where(id => id < 30_001).Order(), taken.Where(id => id < 30_001)); // adder 1 in its order
        Assert.Equal(taken.Where(id => id >= 30_001).Order(), taken.Where(id => id >= 30_001)); // adder 2 in its order
    }
}
