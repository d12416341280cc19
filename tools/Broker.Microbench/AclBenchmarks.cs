using BenchmarkDotNet.Attributes;
using Broker.Engine.Policy;
using Broker.Ims.Acl;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Microbench;

/// <summary>
/// <see cref="AclRuleSet.IsAllowed"/> with the default rules (contract §3, <see cref="ImsOptionsDefaults.AclRules"/>),
/// 10,000 users and 300 groups of 20. One benchmark per question the broker asks on the hot path:
/// publish (every PUBLISH), subscribe (every filter) and receive (every message, every recipient).
/// </summary>
[MemoryDiagnoser]
public class AclBenchmarks
{
    AclRuleSet _rules = null!;
    ClientPrincipal _alice = null!;   // user42
    ClientPrincipal _bob = null!;     // user4711
    ClientPrincipal _member = null!;  // a member of group17
    string _memberToGroup = "";       // IMS/group17/<member>

    [GlobalSetup]
    public void Setup()
    {
        var users = new UserDirectory(Enumerable.Range(0, Data.Users).Select(i => new UserAccount(Data.User(i), "", Roles.User)));
        var groups = new GroupDirectory(Enumerable.Range(0, Data.Groups).Select(g =>
            KeyValuePair.Create(Data.Group(g), Data.Members(g).Select(Data.User))));
        _rules = AclRuleSet.Compile(ImsOptionsDefaults.AclRules, users, groups, ImsOptionsDefaults.ParentTopics);
        _alice = new ClientPrincipal(Data.Device(42), Data.User(42), Roles.User);
        _bob = new ClientPrincipal(Data.Device(4711), Data.User(4711), Roles.User);
        var m = Data.Members(17).First();
        _member = new ClientPrincipal(Data.Device(m), Data.User(m), Roles.User);
        _memberToGroup = $"IMS/group17/{_member.UserId}";
        if (!PublishToInbox() || !PublishP2p() || !PublishToGroup() || !SubscribeOwnInbox() || !SubscribeGroup()
            || !ReceiveInbox() || !ReceiveP2p() || !ReceiveGroup() || !ReceiveFeed() || ReceiveOthersInbox())
        {
            throw new InvalidOperationException("the default rules do not answer as contract §3 says: the benchmark data is wrong");
        }
    }

    /// <summary>Rule 9 of 15: <c>%p/%U/Inbox/#/%u</c> (a user lookup, then '#' backtracking to the last level).</summary>
    [Benchmark]
    public bool PublishToInbox() => _rules.IsAllowed(_alice, "IMS/user4711/Inbox/Msg/user42", AclAccess.Publish, isFilter: false);

    /// <summary>Rule 1: <c>%p/p2p/+</c>.</summary>
    [Benchmark]
    public bool PublishP2p() => _rules.IsAllowed(_alice, "IMS/p2p/GID_IMS@@@user4711-phone", AclAccess.Publish, isFilter: false);

    /// <summary>Rule 11: <c>%p/%m/%u</c> (a group membership lookup).</summary>
    [Benchmark]
    public bool PublishToGroup() => _rules.IsAllowed(_member, _memberToGroup, AclAccess.Publish, isFilter: false);

    /// <summary>Rule 8: <c>%p/%u/Inbox/#</c> as a filter.</summary>
    [Benchmark]
    public bool SubscribeOwnInbox() => _rules.IsAllowed(_bob, "IMS/user4711/Inbox/#", AclAccess.Subscribe, isFilter: true);

    /// <summary>Rule 12: <c>%p/%m/#</c> as a filter.</summary>
    [Benchmark]
    public bool SubscribeGroup() => _rules.IsAllowed(_member, "IMS/group17/#", AclAccess.Subscribe, isFilter: true);

    /// <summary>Delivery check of a direct message to its owner: rule 8.</summary>
    [Benchmark]
    public bool ReceiveInbox() => _rules.IsAllowed(_bob, "IMS/user4711/Inbox/Msg/user42", AclAccess.Receive, isFilter: false);

    /// <summary>Delivery check of a P2P message: rule 2, <c>%p/p2p/%c</c>.</summary>
    [Benchmark]
    public bool ReceiveP2p() => _rules.IsAllowed(_bob, "IMS/p2p/GID_IMS@@@user4711-phone", AclAccess.Receive, isFilter: false);

    /// <summary>Delivery check of a group message to a member: rule 12.</summary>
    [Benchmark]
    public bool ReceiveGroup() => _rules.IsAllowed(_member, "IMS/group17/user42", AclAccess.Receive, isFilter: false);

    /// <summary>Delivery check of another user's feed: the last rule, 15, after group and user lookups fail.</summary>
    [Benchmark]
    public bool ReceiveFeed() => _rules.IsAllowed(_alice, "IMS/user4711/status", AclAccess.Receive, isFilter: false);

    /// <summary>Someone else's inbox reached through a wildcard (<c>IMS/user4711/#</c>): denied by rule 10.</summary>
    [Benchmark]
    public bool ReceiveOthersInbox() => _rules.IsAllowed(_alice, "IMS/user4711/Inbox/Msg/user7", AclAccess.Receive, isFilter: false);
}
