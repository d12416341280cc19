using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Store;
using Broker.Ims.Blocks;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Limits;
using Broker.Ims.Options;

namespace Broker.Ims.Tests.Blocks;

/// <summary>Contract §12 in the read check, and §13's limits as data: the rules without a broker around them.</summary>
public sealed class BlockRulesTests
{
    static (ImsPolicy Policy, BlockLists Blocks) Policy(bool conventions = true)
    {
        var options = new ImsOptions();
        options.Conventions.Enabled = conventions;
        ImsOptionsDefaults.Apply(options);
        var store = new InMemoryBrokerStore();
        var blocks = new BlockLists(store);
        var users = new UserDirectory(new[] { "alice", "bob", "carol" }.Select(n => new UserAccount(n, "", Roles.User)));
        var groups = new GroupDirectory([KeyValuePair.Create("Group123", (IEnumerable<string>)["alice", "bob"])]);
        return (new ImsPolicy(options, users, groups, new PasswordVerifier(), store, blocks: blocks), blocks);
    }

    static ClientPrincipal Who(string user) => new($"GID_IMS@@@{user}-phone", user, Roles.User);

    static BrokerMessage From(string sender, string topic) => new() { Topic = topic, SenderUserId = sender, SenderClientId = $"GID_IMS@@@{sender}-phone" };

    [Theory]
    [InlineData("bob", "IMS/alice/Inbox/Msg/bob", "alice", false)] // inbox
    [InlineData("bob", "IMS/p2p/GID_IMS@@@alice-phone", "alice", false)] // P2P
    [InlineData("bob", "IMS/Group123/bob", "alice", false)] // a shared group
    [InlineData("bob", "IMS/bob/status", "alice", false)] // the blocked user's own feed
    [InlineData("alice", "IMS/alice/status", "bob", false)] // the blocker's feed, to the blocked user
    [InlineData("alice", "IMS/alice", "bob", false)]
    [InlineData("system", "IMS/alice/Presence", "bob", false)] // presence, whoever publishes it
    [InlineData("alice", "IMS/bob/Inbox/Msg/alice", "bob", true)] // the blocker may still write to the blocked user
    [InlineData("bob", "IMS/Group123/bob", "bob", true)] // one's own message
    [InlineData("carol", "IMS/alice/Inbox/Msg/carol", "alice", true)] // others are not affected
    [InlineData("alice", "IMS/alice/status", "carol", true)]
    public async Task AliceBlockedBob(string sender, string topic, string recipient, bool delivered)
    {
        var (policy, blocks) = Policy();
        await blocks.SetAsync("alice", "bob", blocked: true);

        Assert.Equal(delivered, policy.CanRead(Who(recipient), From(sender, topic)));
    }

    [Fact]
    public async Task Unblocking_Restores_AndEveryChangeMovesTheVersion()
    {
        var (policy, blocks) = Policy();
        var before = policy.ReadRulesVersion;
        await blocks.SetAsync("alice", "bob", blocked: true);
        await blocks.SetAsync("alice", "bob", blocked: true); // no change
        var blocked = policy.ReadRulesVersion;
        await blocks.SetAsync("alice", "bob", blocked: false);

        Assert.Equal(before + 1, blocked);
        Assert.Equal(blocked + 1, policy.ReadRulesVersion);
        Assert.True(policy.CanRead(Who("alice"), From("bob", "IMS/alice/Inbox/Msg/bob")));
        Assert.Empty(blocks.Get("alice"));
    }

    [Theory]
    [InlineData("$IMS/block/bob", PolicyDecision.Allow)]
    [InlineData("$IMS/unblock/bob", PolicyDecision.Allow)]
    [InlineData("$IMS/block/dave", PolicyDecision.Allow)] // no account (yet): accepted, tells nothing
    [InlineData("$IMS/block/alice", PolicyDecision.TopicInvalid)]
    [InlineData("$IMS/block/Group123", PolicyDecision.TopicInvalid)]
    [InlineData("$IMS/block/System", PolicyDecision.TopicInvalid)]
    [InlineData("$IMS/block", PolicyDecision.TopicInvalid)]
    [InlineData("$IMS/follow/bob", PolicyDecision.TopicInvalid)]
    public async Task Commands(string topic, PolicyDecision expected)
    {
        var (policy, _) = Policy();

        Assert.True(policy.TryHandleCommand(Who("alice"), topic, ReadOnlyMemory<byte>.Empty, out var result));
        Assert.Equal(expected, result.Decision);
        await result.Durable;
    }

    [Fact]
    public void NotCommands_AreRouted()
    {
        Assert.False(Policy().Policy.TryHandleCommand(Who("alice"), "IMS/alice", ReadOnlyMemory<byte>.Empty, out _));
        Assert.False(Policy().Policy.TryHandleCommand(Who("alice"), "$IMSX/block/bob", ReadOnlyMemory<byte>.Empty, out _));
        Assert.False(Policy(conventions: false).Policy.TryHandleCommand(Who("alice"), "$IMS/block/bob", ReadOnlyMemory<byte>.Empty, out _));
    }

    [Fact]
    public async Task BlockLists_AreRestoredFromTheStore()
    {
        var store = new InMemoryBrokerStore();
        var first = new BlockLists(store);
        await first.SetAsync("alice", "bob", true);
        await first.SetAsync("alice", "carol", true);
        await first.SetAsync("alice", "carol", false);

        var second = new BlockLists(store);
        second.Restore();

        Assert.Equal(["bob"], second.Get("alice"));
    }

    [Fact]
    public void Limits_Defaults_UserOnlyWithConventions()
    {
        var ims = new ImsOptions();
        var limits = new UserLimits(ims);
        Assert.Equal(new RoleLimits(20, 100, 256 * 1024, 20, 1000, 200, TimeSpan.FromSeconds(10)), limits.For(Roles.User));
        Assert.Null(limits.For(Roles.Service));
        Assert.Null(limits.For(Roles.Admin));

        var plain = new ImsOptions();
        plain.Conventions.Enabled = false;
        Assert.Null(new UserLimits(plain).For(Roles.User));
        plain.Limits.Roles["user"] = new RoleLimitsOptions { MaxDevices = 3 };
        Assert.Equal(new RoleLimits(0, 1, 0, 3, 0, 0, TimeSpan.FromSeconds(10)), new UserLimits(plain).For(Roles.User));
    }

    [Fact]
    public async Task Limits_DevicesPerUser_ReleasedOnClose_SameClientIdIsOneDevice()
    {
        var ims = new ImsOptions();
        ims.Limits.Roles["user"] = new RoleLimitsOptions { MaxDevices = 1 };
        var limits = new UserLimits(ims);

        var phone = await limits.OpenAsync(new ClientPrincipal("GID_IMS@@@a-phone", "a", Roles.User));
        var again = await limits.OpenAsync(new ClientPrincipal("GID_IMS@@@a-phone", "a", Roles.User)); // a takeover: the same device
        var laptop = await limits.OpenAsync(new ClientPrincipal("GID_IMS@@@a-laptop", "a", Roles.User));
        Assert.Equal((false, false, true), (phone.QuotaExceeded, again.QuotaExceeded, laptop.QuotaExceeded));
        Assert.Null(laptop.Limits);

        phone.Limits!.Close(); // the older connection: the device stays, held by the newer one
        Assert.Equal(["GID_IMS@@@a-phone"], await limits.Devices.DevicesAsync("a"));
        again.Limits!.Close();
        again.Limits.Close(); // once only
        Assert.Empty(await limits.Devices.DevicesAsync("a"));
        Assert.False((await limits.OpenAsync(new ClientPrincipal("GID_IMS@@@a-laptop", "a", Roles.User))).QuotaExceeded);
    }

    [Fact]
    public void Limits_AreValidated_NamingTheKey()
    {
        var ims = new ImsOptions();
        ims.Limits.Roles["robot"] = new RoleLimitsOptions();
        ims.Limits.Roles["user"] = new RoleLimitsOptions { PublishRate = -1, PublishBurst = 0, RateGraceSeconds = 0 };
        ImsOptionsDefaults.Apply(ims);

        var failures = new ImsOptionsValidator().Validate(null, ims).Failures!.ToList();

        Assert.Contains(failures, f => f.StartsWith("Broker:Limits:Roles:robot", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Broker:Limits:Roles:user:PublishRate", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Broker:Limits:Roles:user:PublishBurst", StringComparison.Ordinal));
        Assert.Contains(failures, f => f.StartsWith("Broker:Limits:Roles:user:RateGraceSeconds", StringComparison.Ordinal));
    }
}
