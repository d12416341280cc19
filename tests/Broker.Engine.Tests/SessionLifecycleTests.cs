using Broker.Engine;
using Broker.Engine.Diagnostics;
using Broker.Engine.Options;
using Broker.Engine.Policy;
using Broker.Engine.Routing;
using Broker.Engine.Sessions;
using Broker.Engine.Store;
using Microsoft.Extensions.Logging.Abstractions;
using MQTTnet.Protocol;

namespace Broker.Engine.Tests;

/// <summary>
/// The invariants that close the races between a session's life and what arrives for it (reliability
/// issue, items 3 and 4), checked on the components in the state the race would leave them in: each
/// fails if its rule is removed, whatever the timing.
/// </summary>
public sealed class SessionLifecycleTests : IDisposable
{
    readonly BrokerCounters _counters = new();
    readonly EngineContext _engine;

    public SessionLifecycleTests() =>
        _engine = TestEngine.Create(_counters);

    public void Dispose() => _counters.Dispose();

    [Fact]
    public void Mailbox_RefusesAClientIdThatHasASession_SoARacingP2pGoesToTheSession()
    {
        // Contract §5: the mailbox is for a client id with no session. A P2P that looked for the session
        // just before its connect registered it finds it here, under the lock the connect's DeliverTo
        // takes, instead of waiting in the mailbox while the client is online.
        _engine.Sessions.AddRestored(new Session(_engine, "bob-phone", new ClientPrincipal("bob-phone", "bob", "user")));

        Assert.False(_engine.Mailbox.TryAdd("bob-phone", Message(), null, out _));
        Assert.Equal(0, _engine.Mailbox.Count);
        Assert.True(_engine.Mailbox.TryAdd("bob-tab", Message(), null, out _)); // no session: kept for it
        Assert.Equal(1, _engine.Mailbox.Count);
    }

    [Fact]
    public void Subscribe_OnAnEndedSession_LeavesNoIndexEntry()
    {
        // A SUBSCRIBE handled while its session ends (takeover, admin API) must not leave an index entry
        // that nobody removes: the index would grow, and route to a session that no longer exists.
        var session = new Session(_engine, "bob-phone", new ClientPrincipal("bob-phone", "bob", "user"));
        session.Discard();

        session.Subscribe(new Subscription { Session = session, Key = "chat/#", Filter = "chat/#", Qos = MqttQualityOfServiceLevel.AtLeastOnce });

        Assert.Equal(0, _engine.Index.Count);
        Assert.Empty(session.GetSubscriptions());
    }

    [Fact]
    public void EndSession_RemovesTheSessionAndItsSubscriptionsTogether()
    {
        var session = new Session(_engine, "bob-phone", new ClientPrincipal("bob-phone", "bob", "user"));
        _engine.Sessions.AddRestored(session);
        session.Subscribe(new Subscription { Session = session, Key = "chat/#", Filter = "chat/#", Qos = MqttQualityOfServiceLevel.AtLeastOnce });

        Assert.True(_engine.Sessions.End("bob-phone"));

        Assert.Null(_engine.Sessions.Get("bob-phone"));
        Assert.True(session.IsDiscarded);
        Assert.Equal(0, _engine.Index.Count);
        Assert.False(_engine.Sessions.End("bob-phone"));
    }

    static BrokerMessage Message() => new() { Topic = "IMS/p2p/x", Payload = new byte[] { 1 }, Qos = MqttQualityOfServiceLevel.AtLeastOnce, Id = 1 };
}
