using Broker.Engine.Policy;
using Broker.Ims.Acl;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Ims.Tests.Acl;

/// <summary>The default rule set against contract §3, as a table: one row per (who, what, where).</summary>
public sealed class DefaultRulesTests
{
    static readonly AclRuleSet Rules = AclRuleSet.Compile(
        ImsOptionsDefaults.AclRules,
        new UserDirectory(new[] { "alice", "bob", "carol", "assistant", "admin" }.Select(n => new UserAccount(n, "", n switch { "assistant" => Roles.Service, "admin" => Roles.Admin, _ => Roles.User }))),
        new GroupDirectory([KeyValuePair.Create("Group123", (IEnumerable<string>)["alice", "bob"])]),
        ["IMS"]);

    static ClientPrincipal Who(string user, string device = "phone") =>
        new($"GID_IMS@@@{user}-{device}", user, user switch { "assistant" => Roles.Service, "admin" => Roles.Admin, _ => Roles.User });

    [Theory]
    // own feed
    [InlineData("alice", "IMS/alice", true)]
    [InlineData("alice", "IMS/alice/status", true)]
    [InlineData("carol", "IMS/alice", false)]
    [InlineData("carol", "IMS/alice/status", false)]
    // inboxes: any user, signed with the sender's own id as the last level
    [InlineData("alice", "IMS/bob/Inbox/Add/GFReq/alice", true)]
    [InlineData("alice", "IMS/bob/Inbox/alice", true)]
    [InlineData("alice", "IMS/bob/Inbox/Add/GFReq/carol", false)]
    [InlineData("alice", "IMS/bob/Inbox", false)]
    [InlineData("alice", "IMS/alice/Inbox/note", false)]
    [InlineData("alice", "IMS/nobody/Inbox/alice", false)]
    // p2p: anyone to any device
    [InlineData("carol", "IMS/p2p/GID_IMS@@@bob-phone", true)]
    [InlineData("carol", "IMS/p2p/GID_IMS@@@bob-phone/x", false)]
    // groups: members, signed
    [InlineData("alice", "IMS/Group123/alice", true)]
    [InlineData("alice", "IMS/Group123/bob", false)]
    [InlineData("carol", "IMS/Group123/carol", false)]
    // system broadcasts
    [InlineData("assistant", "IMS/System/Beijing", true)]
    [InlineData("admin", "IMS/System/Beijing", true)]
    [InlineData("alice", "IMS/System/Beijing", false)]
    // a service may publish anywhere under the parent, even unsigned inbox messages
    [InlineData("assistant", "IMS/alice/Inbox/Reply", true)]
    // presence: only the broker, the user included, a service too (contract §10)
    [InlineData("alice", "IMS/alice/Presence", false)]
    [InlineData("alice", "IMS/bob/Presence", false)]
    [InlineData("assistant", "IMS/alice/Presence", false)]
    [InlineData("admin", "IMS/alice/Presence", false)]
    [InlineData("alice", "IMS/alice/Presence/note", true)]   // below it: the feed again
    // delivery receipts: only the broker (contract §11); read receipts are the app's
    [InlineData("alice", "IMS/bob/Inbox/Receipt/Delivered/alice", false)]
    [InlineData("assistant", "IMS/bob/Inbox/Receipt/Delivered/assistant", false)]
    [InlineData("alice", "IMS/bob/Inbox/Receipt/Read/alice", true)]
    // anything else
    [InlineData("alice", "IMS/nobody", false)]
    [InlineData("alice", "OTHER/alice", false)]
    public void Publish(string user, string topic, bool allowed) =>
        Assert.Equal(allowed, Rules.IsAllowed(Who(user), topic, AclAccess.Publish, isFilter: false));

    [Theory]
    [InlineData("carol", "IMS/alice", true)]
    [InlineData("carol", "IMS/alice/#", true)]
    [InlineData("carol", "IMS/bob/#", true)]          // allowed: delivery checks keep the inbox out
    [InlineData("carol", "IMS/bob/+/x", true)]
    [InlineData("bob", "IMS/bob/Inbox/#", true)]
    [InlineData("carol", "IMS/bob/Inbox/#", false)]
    [InlineData("carol", "IMS/bob/Inbox/+/+/alice", false)]
    [InlineData("carol", "IMS/+/Inbox/#", false)]
    [InlineData("carol", "IMS/#", false)]
    [InlineData("carol", "IMS/+", false)]
    [InlineData("carol", "IMS/nobody/#", false)]
    [InlineData("bob", "IMS/p2p/GID_IMS@@@bob-phone", false)]
    [InlineData("assistant", "IMS/p2p/#", false)]
    [InlineData("alice", "IMS/Group123/#", true)]
    [InlineData("carol", "IMS/Group123/#", false)]
    [InlineData("alice", "IMS/System/#", true)]
    [InlineData("assistant", "IMS/#", true)]
    [InlineData("assistant", "IMS/+/Inbox/#", true)]
    public void Subscribe(string user, string filter, bool allowed) =>
        Assert.Equal(allowed, Rules.IsAllowed(Who(user), filter, AclAccess.Subscribe, isFilter: true));

    [Theory]
    [InlineData("carol", "IMS/bob/status", true)]
    [InlineData("carol", "IMS/bob/Presence", true)]          // presence reads as the feed (contract §10)
    [InlineData("carol", "IMS/bob/Inbox/Add/GFReq/alice", false)]
    [InlineData("bob", "IMS/bob/Inbox/Add/GFReq/alice", true)]
    [InlineData("bob", "IMS/p2p/GID_IMS@@@bob-phone", true)]
    [InlineData("bob", "IMS/p2p/GID_IMS@@@bob-laptop", false)]
    [InlineData("carol", "IMS/Group123/alice", false)]
    [InlineData("bob", "IMS/Group123/alice", true)]
    public void Receive(string user, string topic, bool allowed) =>
        Assert.Equal(allowed, Rules.IsAllowed(Who(user), topic, AclAccess.Receive, isFilter: false));

    [Fact]
    public void Receive_P2p_IsForTheAddressedDeviceOnly()
    {
        Assert.True(Rules.IsAllowed(Who("bob", "laptop"), "IMS/p2p/GID_IMS@@@bob-laptop", AclAccess.Receive, isFilter: false));
        Assert.False(Rules.IsAllowed(Who("bob", "laptop"), "IMS/p2p/GID_IMS@@@bob-phone", AclAccess.Receive, isFilter: false));
    }
}
