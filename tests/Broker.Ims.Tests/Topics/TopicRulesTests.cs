using Broker.Ims.Stamping;
using Broker.Ims.Topics;
using MQTTnet.Packets;

namespace Broker.Ims.Tests.Topics;

public sealed class TopicRulesTests
{
    static readonly TopicRules Rules = new(["IMS", "CHAT"]);

    [Theory]
    [InlineData("IMS/alice", true)]
    [InlineData("CHAT/x/y", true)]
    [InlineData("$SYS/broker/uptime", true)]
    [InlineData("chat/A_B", false)]
    [InlineData("IMS", true)]
    [InlineData("IMS//x", false)]
    [InlineData("IMS/a b", false)]
    [InlineData("/IMS/x", false)]
    public void Check(string topic, bool ok) => Assert.Equal(ok, Rules.Check(topic) is null);

    [Theory]
    [InlineData("IMS/p2p/GID_IMS@@@bob-phone", "GID_IMS@@@bob-phone")]
    [InlineData("CHAT/p2p/GID_IMS@@@x", "GID_IMS@@@x")]
    [InlineData("IMS/p2p/", null)]
    [InlineData("IMS/p2p/a/b", null)]
    [InlineData("IMS/p2p", null)]
    [InlineData("OTHER/p2p/x", null)]
    [InlineData("IMS/bob/p2p/x", null)]
    public void DirectTarget(string topic, string? target) => Assert.Equal(target, Rules.DirectTarget(topic));

    [Fact]
    public void SenderStamp_ReplacesForgedPropertiesAndKeepsOthers()
    {
        List<MqttUserProperty> sent = [new("ims-sender", "admin"u8.ToArray().AsMemory()), new("k", "v"u8.ToArray().AsMemory()), new("ims-id", "1"u8.ToArray().AsMemory())];

        var stamped = SenderStamp.Apply("alice", "GID_IMS@@@a", sent, 1234567890123);

        Assert.Equal([("k", "v"), ("ims-sender", "alice"), ("ims-client", "GID_IMS@@@a"), ("ims-id", "1234567890123")], stamped.Select(p => (p.Name, p.ReadValueAsString())));
        Assert.Equal(3, sent.Count); // the client's list is not mutated: it may be shared
        Assert.Equal(1234567890123, SenderStamp.IdIn(stamped));
    }
}
