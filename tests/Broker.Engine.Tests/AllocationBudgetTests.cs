using System.Buffers;
using System.IO.Pipelines;
using System.Text;
using Broker.Engine.Connections;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Adapter;
using MQTTnet.Formatter;
using MQTTnet.Packets;
using MQTTnet.Protocol;
using Xunit.Abstractions;

namespace Broker.Engine.Tests;

/// <summary>
/// Allocation budgets of the hot paths (performance issue): bytes allocated per decode, route and encode,
/// measured with <see cref="GC.GetAllocatedBytesForCurrentThread"/> on the test's own thread, after a
/// warm-up, as the minimum over a few rounds. Allocations, not timings: the numbers are deterministic, so a
/// change that allocates more on these paths fails here instead of growing silently. Each budget is a named
/// constant a little above the value measured when it was set (docs/performance.md, "Allocation budgets");
/// to change one on purpose, re-measure (the test output prints the value) and change the constant and the
/// table in the same commit, saying why.
/// The message is the one of tools/Broker.Microbench/FrameBenchmarks.cs: QoS 1, packet id 42, topic
/// <c>IMS/user4711/Inbox/Msg/user42</c>, 64-byte payload.
/// </summary>
public sealed class AllocationBudgetTests(ITestOutputHelper output) : IDisposable
{
    // Budgets in bytes per operation: each is the value measured when it was set (.NET 10, MQTTnet 5.2, x64)
    // plus 16, less than the smallest object (24 bytes on 64-bit), so one more object per operation fails.
    // Zero means the path allocates nothing in steady state; the 16 bytes of slack there only absorb a rare
    // amortized allocation (a pool or a collection growing once in a round), never a per-operation one.
    const double DecodeV311Budget = 296;         // measured 280: the MqttPublishPacket, its topic string, its payload copy
    const double DecodeV5Budget = 296;           // measured 280: the same (no properties on this PUBLISH)
    const double RouteTo1Budget = 16;            // measured 0
    const double RouteTo10Budget = 16;           // measured 0
    const double EncodeV311Budget = 16;          // measured 0 (before PublishEncoder: 0 for the encode, plus 112 for the MqttPublishPacket built per recipient)
    const double EncodeV5StampedBudget = 16;     // measured 0 (the same)

    const string Topic = "IMS/user4711/Inbox/Msg/user42";
    const int Iterations = 2_000;
    const int Rounds = 5;

    readonly BrokerCounters _counters = new();
    readonly byte[] _payload = Payload();

    public void Dispose() => _counters.Dispose();

    // ---- decode: MqttConnection.TryTakePacket + Decode -------------------------------------------------

    [Fact]
    public void Decode_V311Publish_StaysWithinBudget() => Check("decode v3.1.1 PUBLISH", DecodeV311Budget, DecodeOp(MqttProtocolVersion.V311));

    [Fact]
    public void Decode_V5Publish_StaysWithinBudget() => Check("decode v5 PUBLISH", DecodeV5Budget, DecodeOp(MqttProtocolVersion.V500));

    /// <summary>
    /// What the receive loop does per inbound PUBLISH: frame it, copy the body into a pooled array, check the
    /// wire grammar, decode with the thread's formatter, return the array. Includes the decoded
    /// <see cref="MqttPublishPacket"/>, its topic string and payload copy (MQTTnet's); not the pipe's own buffers.
    /// </summary>
    Action DecodeOp(MqttProtocolVersion version)
    {
        var frame = new ReadOnlySequence<byte>(Wire(version, InboundPacket()));
        var maxPacketSize = new EngineOptions().Mqtt.MaxPacketSize;
        MqttPacket? last = null;
        void Op()
        {
            if (FrameReader.TryRead(frame, maxPacketSize, out var header, out var body, out var size) != FrameStatus.Complete)
            {
                throw new InvalidOperationException("the PUBLISH frame does not read back");
            }

            var length = (int)body.Length;
            var rented = ArrayPool<byte>.Shared.Rent(Math.Max(length, 1));
            try
            {
                body.CopyTo(rented);
                var received = new ReceivedMqttPacket(header, new ArraySegment<byte>(rented, 0, length), (int)size);
                if (!PacketValidator.TryValidate(received.FixedHeader, new ReadOnlySequence<byte>(received.Body), version, out var violation))
                {
                    throw new InvalidOperationException(violation.Text);
                }

                last = PacketFormatters.For(version).Decode(received);
            }
            finally
            {
                ArrayPool<byte>.Shared.Return(rented);
            }
        }

        Op();
        Assert.True(last is MqttPublishPacket { Topic: Topic, PacketIdentifier: 42 }, "the PUBLISH does not decode back");
        return Op;
    }

    // ---- route: Router.RouteAsync to k online clean sessions -------------------------------------------

    [Fact]
    public void Route_Qos1To1Session_StaysWithinBudget() => Check("route QoS 1 to 1 session", RouteTo1Budget, RouteOp(1, out var drain), drain);

    [Fact]
    public void Route_Qos1To10Sessions_StaysWithinBudget() => Check("route QoS 1 to 10 sessions", RouteTo10Budget, RouteOp(10, out var drain), drain);

    /// <summary>
    /// One QoS 1 message routed to k clean sessions, each subscribed to the topic at QoS 1 and attached to a
    /// connection whose writer never opens (so the session's write signal is only a counter increment and
    /// nothing is encoded). Included: the policy calls, the index match, the router's per-recipient work and
    /// each session's Enqueue into its queue. Not included: the <see cref="BrokerMessage"/> itself (built once
    /// per publish by the publish handler, before routing), and the queue's storage: between operations, and
    /// outside the measurement, every session's queue is drained through <see cref="Session.TakeOutbound"/>
    /// and the in-flight entry completed (PUBACK), so the queues stay at their warmed-up capacity and each
    /// operation sees the same state.
    /// </summary>
    Action RouteOp(int k, out Action drain)
    {
        var engine = TestEngine.Create(_counters);
        var sessions = new List<(Session Session, MqttConnection Connection)>();
        for (var i = 0; i < k; i++)
        {
            var clientId = $"sub{i}";
            var principal = new ClientPrincipal(clientId, $"user{i}", "user");
            var session = new Session(engine, clientId, principal);
            var connection = new MqttConnection(engine, new NullDuplexPipe(), new ConnectionMetadata(clientId, null, "test"), CancellationToken.None);
            session.Attach(connection, principal, expirySeconds: 0, sendQuota: 20);
            session.Subscribe(new Subscription { Session = session, Key = Topic, Filter = Topic, Qos = MqttQualityOfServiceLevel.AtLeastOnce });
            sessions.Add((session, connection));
        }

        var message = new BrokerMessage
        {
            Topic = Topic,
            Payload = _payload,
            Qos = MqttQualityOfServiceLevel.AtLeastOnce,
            SenderClientId = "user42-phone",
            SenderUserId = "user42",
            Id = 1,
        };
        var batch = new List<Outbound>();
        drain = () =>
        {
            foreach (var (session, connection) in sessions)
            {
                batch.Clear();
                session.TakeOutbound(connection, batch, 64, engine.NowUnixMs);
                Assert.Single(batch);
                Assert.True(session.Complete(batch[0].PacketId, DeliveryState.AwaitingAck));
                Assert.Equal(0, session.QueuedCount);
            }
        };

        return () =>
        {
            var routed = engine.Router.RouteAsync(message);
            if (!routed.IsCompletedSuccessfully)
            {
                throw new InvalidOperationException("a clean session's route waits for nothing");
            }
        };
    }

    // ---- encode: ConnectionWriter.WritePublish (PublishEncoder) -----------------------------------------

    [Fact]
    public void Encode_V311Publish_StaysWithinBudget() => Check("encode v3.1.1 PUBLISH", EncodeV311Budget, EncodeOp(v5: false));

    [Fact]
    public void Encode_V5PublishWithSenderStamp_StaysWithinBudget() => Check("encode v5 PUBLISH, stamped", EncodeV5StampedBudget, EncodeOp(v5: true));

    /// <summary>
    /// What the writer does per recipient and send: the PUBLISH written into the output from the message's
    /// encoded parts (made once per message, on the first send: before the measurement here) and the
    /// delivery's own fields. The output is a buffer written over and over (a pipe's segments are pooled).
    /// </summary>
    Action EncodeOp(bool v5)
    {
        var message = new BrokerMessage
        {
            Topic = Topic,
            Payload = _payload,
            Qos = MqttQualityOfServiceLevel.AtLeastOnce,
            UserProperties = v5 ? Stamp() : null,
            Id = 1_850_728_127_725_207_552,
        };
        var delivery = new Delivery(message, MqttQualityOfServiceLevel.AtLeastOnce, false, null);
        var output = new ArrayBufferWriter<byte>(4096);
        var now = Environment.TickCount64;
        void Op()
        {
            output.ResetWrittenCount();
            if (!PublishEncoder.Write(output, delivery, 42, dup: false, v5, now, alias: 0, sendTopic: true, uint.MaxValue))
            {
                throw new InvalidOperationException("the PUBLISH was not written");
            }
        }

        Op();
        Assert.True(output.WrittenCount > 64 + Topic.Length);
        return Op;
    }

    // ---- measurement ---------------------------------------------------------------------------------------

    void Check(string name, double budget, Action op, Action? between = null)
    {
        var measured = BytesPerOp(op, between, budget);
        output.WriteLine($"{name}: {measured:F1} bytes/op (budget {budget})");
        Assert.True(measured <= budget, $"{name} allocates {measured:F1} bytes per operation, over its budget of {budget} (AllocationBudgetTests; docs/performance.md, \"Allocation budgets\")");
    }

    /// <summary>
    /// Bytes allocated on this thread per call of <paramref name="op"/>: the minimum over rounds of
    /// <see cref="Iterations"/> calls, after a warm-up. <paramref name="between"/> runs after each call,
    /// outside what is counted. Tiered JIT may still run a method's first tier in the first rounds, which
    /// can allocate more (no escape analysis there): past the fixed rounds, a few more are taken, with a pause
    /// for the background compiler, while the minimum is over the budget.
    /// </summary>
    static double BytesPerOp(Action op, Action? between, double budget)
    {
        for (var i = 0; i < Iterations; i++)
        {
            op();
            between?.Invoke();
        }

        var best = double.MaxValue;
        for (var round = 0; round < Rounds || (best > budget && round < Rounds * 4); round++)
        {
            if (round >= Rounds)
            {
                Thread.Sleep(100);
            }

            long allocated = 0;
            for (var i = 0; i < Iterations; i++)
            {
                var before = GC.GetAllocatedBytesForCurrentThread();
                op();
                allocated += GC.GetAllocatedBytesForCurrentThread() - before;
                between?.Invoke();
            }

            best = Math.Min(best, (double)allocated / Iterations);
        }

        return best;
    }

    // ---- the message ---------------------------------------------------------------------------------------

    static byte[] Payload()
    {
        var payload = new byte[64];
        new Random(6).NextBytes(payload);
        return payload;
    }

    MqttPublishPacket InboundPacket() => new()
    {
        Topic = Topic,
        PacketIdentifier = 42,
        QualityOfServiceLevel = MqttQualityOfServiceLevel.AtLeastOnce,
        Payload = new ReadOnlySequence<byte>(_payload),
    };

    /// <summary>
    /// The user properties Broker.Ims's SenderStamp.Apply puts on every message (contract §4 and §11:
    /// ims-sender, ims-client, ims-id), built here because the engine's tests do not reference Broker.Ims.
    /// </summary>
    static List<MqttUserProperty> Stamp() =>
    [
        new("ims-sender", Encoding.UTF8.GetBytes("user42").AsMemory()),
        new("ims-client", Encoding.UTF8.GetBytes("user42-phone").AsMemory()),
        new("ims-id", Encoding.UTF8.GetBytes("1850728127725207552").AsMemory()),
    ];

    /// <summary>The wire bytes of a PUBLISH as a client of that version sends them.</summary>
    static byte[] Wire(MqttProtocolVersion version, MqttPublishPacket packet)
    {
        var encoded = new MqttPacketFormatterAdapter(version, new MqttBufferWriter(256, 4096)).Encode(packet);
        var wire = new List<byte>(encoded.Packet);
        foreach (var segment in encoded.Payload)
        {
            wire.AddRange(segment.ToArray());
        }

        return [.. wire];
    }

    sealed class NullDuplexPipe : IDuplexPipe
    {
        readonly Pipe _pipe = new();

        public PipeReader Input => _pipe.Reader;

        public PipeWriter Output => _pipe.Writer;
    }
}
