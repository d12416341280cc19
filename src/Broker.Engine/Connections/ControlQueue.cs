using MQTTnet.Packets;

namespace Broker.Engine.Connections;

/// <summary>
/// Acks, CONNACK, PINGRESP, DISCONNECT waiting for the writer: many threads add, the writer takes
/// everything at once in the order it was added. A lock-free stack that is reversed on taking, so an
/// idle connection holds one null reference instead of a queue segment.
/// </summary>
internal struct ControlQueue
{
    Node? _head;

    public bool IsEmpty => Volatile.Read(ref _head) is null;

    public void Add(MqttPacket packet)
    {
        var node = new Node(packet);
        while (true)
        {
            var head = Volatile.Read(ref _head);
            node.Next = head;
            if (ReferenceEquals(Interlocked.CompareExchange(ref _head, node, head), head))
            {
                return;
            }
        }
    }

    /// <summary>Everything added so far, oldest first; null when empty.</summary>
    public Node? TakeAll()
    {
        Node? node = Interlocked.Exchange(ref _head, null), reversed = null;
        while (node is not null)
        {
            var next = node.Next;
            node.Next = reversed;
            reversed = node;
            node = next;
        }

        return reversed;
    }

    internal sealed class Node(MqttPacket packet)
    {
        public MqttPacket Packet { get; } = packet;

        public Node? Next { get; set; }
    }
}
