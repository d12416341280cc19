using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// The README's walkthrough, typed as a user would, with the real mosquitto_pub and mosquitto_sub
/// (contract §1–5, 7; issue #4 steps 2–8). mosquitto_sub -d prints the SUBACK, so each step waits on
/// a real event.
/// </summary>
public sealed class MosquittoWalkthroughTests
{
    static string[] Pub(TestBroker broker, string clientId, string user, params string[] rest) =>
        ["-h", "127.0.0.1", "-p", broker.MqttPort.ToString(), "-i", clientId, "-u", user, "-P", user + "-pass", .. rest];

    [Theory]
    [InlineData("mqttv311")]
    [InlineData("mqttv5")]
    public async Task Chat_InboxP2pGroupFeedSystem_WorksWithStockClients(string version)
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await Mosquitto.Subscriber.StartAsync(
            [.. Pub(broker, "GID_IMS@@@bob-phone", "bob", "-V", version, "-t", "IMS/bob/Inbox/#", "-t", "IMS/Group123/#", "-t", "IMS/alice", "-t", "IMS/System/#", "-q", "1", "-v")]);

        // Step 3: a friend request reaches bob; a forged one is refused and reaches nobody.
        var forged = await Mosquitto.RunAsync("mosquitto_pub", [.. Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", version, "-d", "-t", "IMS/bob/Inbox/Add/GFReq/carol", "-m", "forged", "-q", "1")]);
        Assert.Contains(version == "mqttv5" ? "RC:135" : "received PUBACK", forged.Output);
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", version, "-t", "IMS/bob/Inbox/Add/GFReq/alice", "-m", "{\"text\":\"hi\"}", "-q", "1"));
        Assert.Equal("IMS/bob/Inbox/Add/GFReq/alice {\"text\":\"hi\"}", await bob.NextMessageAsync());

        // Step 4: P2P reaches the bob-phone device without a subscription.
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", version, "-t", "IMS/p2p/GID_IMS@@@bob-phone", "-m", "hello", "-q", "1"));
        Assert.Equal("IMS/p2p/GID_IMS@@@bob-phone hello", await bob.NextMessageAsync());

        // Step 5: feed, group, system broadcast; refusals reach nobody.
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@carol-phone", "carol", "-V", version, "-t", "IMS/alice", "-m", "not alice", "-q", "1"));
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@carol-phone", "carol", "-V", version, "-t", "IMS/Group123/carol", "-m", "not a member", "-q", "1"));
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", version, "-t", "IMS/System/Beijing", "-m", "not a service", "-q", "1"));
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", version, "-t", "IMS/alice", "-m", "online", "-q", "1"));
        Assert.Equal("IMS/alice online", await bob.NextMessageAsync());
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", version, "-t", "IMS/Group123/alice", "-m", "group hi", "-q", "1"));
        Assert.Equal("IMS/Group123/alice group hi", await bob.NextMessageAsync());
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@bot", "assistant", "-V", version, "-t", "IMS/System/Beijing", "-m", "sunny", "-q", "1"));
        Assert.Equal("IMS/System/Beijing sunny", await bob.NextMessageAsync());
    }

    [Fact]
    public async Task Carol_CannotSubscribeToTheGroup()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartImsAsync();
        var result = await Mosquitto.RunAsync("mosquitto_sub", [.. Pub(broker, "GID_IMS@@@carol-phone", "carol", "-V", "mqttv5", "-t", "IMS/Group123/#", "-d", "-C", "1", "-W", "2")]);

        Assert.Contains("received SUBACK", result.Output);
        Assert.Contains("Subscribed (mid: 1): 135", result.Output); // v5 0x87 not authorized
    }

    [Fact]
    public async Task V5Subscriber_SeesTheSenderStamps()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartImsAsync();
        await using var bob = await Mosquitto.Subscriber.StartAsync(
            [.. Pub(broker, "GID_IMS@@@bob-phone", "bob", "-V", "mqttv5", "-t", "IMS/bob/Inbox/#", "-q", "1", "-F", "%t %p %P")]);

        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@alice-phone", "alice", "-V", "mqttv5", "-t", "IMS/bob/Inbox/Msg/alice", "-m", "hi", "-q", "1", "-D", "publish", "user-property", "ims-sender", "bob"));

        Assert.Matches(@"^IMS/bob/Inbox/Msg/alice hi ims-sender:alice ims-client:GID_IMS@@@alice-phone ims-id:\d+$", await bob.NextMessageAsync());
    }

    [Theory]
    [InlineData("bob-phone", "bob", "bob-pass", "Connection Refused: identifier rejected", "Client identifier not valid")]
    [InlineData("GID_OTHER@@@x", "bob", "bob-pass", "Connection Refused: identifier rejected", "Client identifier not valid")]
    [InlineData("GID_IMS@@@bob-phone", "bob", "wrong", "Connection Refused: bad user name or password", "Bad User Name or Password")]
    [InlineData("GID_IMS@@@bob-phone", "alice", "alice-pass", "Connection Refused: not authorised", "Not authorized")]
    public async Task WrongIdentity_GetsTheContractReason(string clientId, string user, string password, string v311Text, string v5Text)
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartImsAsync();
        // bob-phone belongs to bob once he has used it.
        await Run("mosquitto_pub", Pub(broker, "GID_IMS@@@bob-phone", "bob", "-t", "IMS/bob", "-m", "x"));

        string[] common = ["-h", "127.0.0.1", "-p", broker.MqttPort.ToString(), "-i", clientId, "-u", user, "-P", password, "-t", "IMS/x", "-m", "x"];
        var v311 = await Mosquitto.RunAsync("mosquitto_pub", common);
        var v5 = await Mosquitto.RunAsync("mosquitto_pub", [.. common, "-V", "mqttv5"]);

        Assert.NotEqual(0, v311.ExitCode);
        Assert.Contains(v311Text, v311.Output, StringComparison.OrdinalIgnoreCase);
        Assert.Contains(v5Text, v5.Output, StringComparison.OrdinalIgnoreCase);
    }

    static async Task Run(string tool, string[] args)
    {
        var (exitCode, output) = await Mosquitto.RunAsync(tool, args);
        Assert.True(exitCode == 0, $"{tool} failed: {output}");
    }
}
