using Broker.Engine.Policy;
using Broker.Ims.Acl;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Ims.Tests.Acl;

public sealed class AclRuleSetTests
{
    static AclRuleSet Compile(params AclRuleOptions[] rules) =>
        AclRuleSet.Compile(rules, new UserDirectory([]), new GroupDirectory([]), ["IMS"]);

    static readonly ClientPrincipal Alice = new("GID_IMS@@@a", "alice", Roles.User);

    [Fact]
    public void FirstMatchWins_AndNoMatchDenies()
    {
        var rules = Compile(
            new AclRuleOptions { Topic = "a/secret", Access = "all", Permission = "deny" },
            new AclRuleOptions { Topic = "a/#", Access = "all" });

        Assert.False(rules.IsAllowed(Alice, "a/secret", AclAccess.Publish, false));
        Assert.True(rules.IsAllowed(Alice, "a/open", AclAccess.Publish, false));
        Assert.False(rules.IsAllowed(Alice, "b/open", AclAccess.Publish, false));
    }

    [Fact]
    public void Tokens_AreWholeLevels()
    {
        var rules = Compile(new AclRuleOptions { Topic = "%p/%u/%c", Access = "publish" });

        Assert.True(rules.IsAllowed(Alice, "IMS/alice/GID_IMS@@@a", AclAccess.Publish, false));
        Assert.False(rules.IsAllowed(Alice, "IMS/alicex/GID_IMS@@@a", AclAccess.Publish, false));
        Assert.False(rules.IsAllowed(Alice, "IMS/alice", AclAccess.Publish, false));
    }

    [Fact]
    public void Roles_RestrictARule()
    {
        var rules = Compile(new AclRuleOptions { Topic = "ops/#", Access = "all", Roles = [Roles.Admin] });

        Assert.False(rules.IsAllowed(Alice, "ops/restart", AclAccess.Publish, false));
        Assert.True(rules.IsAllowed(new ClientPrincipal("c", "root", Roles.Admin), "ops/restart", AclAccess.Publish, false));
    }

    [Fact]
    public void HashInTheMiddle_MatchesZeroOrMoreLevels()
    {
        var rules = Compile(new AclRuleOptions { Topic = "x/#/%u", Access = "publish" });

        Assert.True(rules.IsAllowed(Alice, "x/alice", AclAccess.Publish, false));
        Assert.True(rules.IsAllowed(Alice, "x/a/b/c/alice", AclAccess.Publish, false));
        Assert.False(rules.IsAllowed(Alice, "x/a/b/c/bob", AclAccess.Publish, false));
    }

    [Fact]
    public void LeadingWildcardRule_DoesNotReachDollarTopics()
    {
        var rules = Compile(new AclRuleOptions { Topic = "#", Access = "all" });

        Assert.True(rules.IsAllowed(Alice, "a/b", AclAccess.Receive, false));
        Assert.False(rules.IsAllowed(Alice, "$internal/x", AclAccess.Receive, false)); // [MQTT-4.7.2-1]
    }

    [Theory]
    [InlineData("%p/%q/#", "Broker:Acl:0:Topic")]
    [InlineData("a+/b", "Broker:Acl:0:Topic")]
    [InlineData("", "Broker:Acl:0:Topic")]
    public void BadPattern_NamesTheKey(string topic, string key)
    {
        var ex = Assert.Throws<AclConfigurationException>(() => Compile(new AclRuleOptions { Topic = topic }));
        Assert.Contains(ex.Errors, e => e.StartsWith(key, StringComparison.Ordinal));
    }

    [Fact]
    public void EveryBadField_IsReported()
    {
        var ex = Assert.Throws<AclConfigurationException>(() => Compile(
            new AclRuleOptions { Topic = "a/#" },
            new AclRuleOptions { Topic = "b/#", Access = "fly", Permission = "maybe", Roles = ["root"] }));

        Assert.Equal(["Broker:Acl:1:Access", "Broker:Acl:1:Permission", "Broker:Acl:1:Roles"], ex.Errors.Select(e => e.Split(' ')[0]).ToArray());
    }
}
