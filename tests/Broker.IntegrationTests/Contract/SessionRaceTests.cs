using System.Collections.Concurrent;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>
/// Races between a session's life and the messages for it (reliability issue, items 3 and 4), end to end
/// under load: each test runs the race many times and checks what must hold for every interleaving
/// (nothing acknowledged left behind, nobody left deaf, one connection per client id). Whether a given
/// run hits the narrow windows is up to timing; the rules that close them are checked deterministically
/// on the components in Broker.Engine.Tests/SessionLifecycleTests.
/// </summary>
public sealed class SessionRaceTests
{
    [Fact]
    public async Task P2pRacingWithTheTargetsFirstConnect_IsDelivered_NeverLeftInTheMailboxWhileOnline()
    {
        // Contract §5: a P2P to a client id with no session waits in the mailbox until it connects with a
        // persistent session. One that arrives while that session is being created must not be kept
        // there once the client is online (it would wait for its next connect, or be lost at its TTL).
        const int Targets = 40;
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        var acknowledged = new ConcurrentDictionary<int, ConcurrentBag<string>>();
        using var stop = new CancellationTokenSource();
        var publishing = Task.Run(async () =>
        {
            for (var round = 0; !stop.IsCancellationRequested; round++)
            {
                for (var i = 0; i < Targets; i++)
                {
                    await Expect.PublishAcceptedAsync(alice, $"IMS/p2p/GID_IMS@@@bob-d{i}", $"r{round}");
                    acknowledged.GetOrAdd(i, _ => []).Add($"r{round}");
                }
            }
        });

        var targets = new List<TestClient>();
        try
        {
            for (var i = 0; i < Targets; i++)
            {
                targets.Add(await TestClient.ConnectAsync(broker.MqttPort, $"GID_IMS@@@bob-d{i}", "bob", cleanStart: false, sessionExpiry: 3600));
            }

            await stop.CancelAsync();
            await publishing;
            for (var i = 0; i < Targets; i++)
            {
                await Expect.PublishAcceptedAsync(alice, $"IMS/p2p/GID_IMS@@@bob-d{i}", "marker");
            }

            Assert.Equal(0, broker.Engine.MailboxCount); // everyone is online: nothing waits for a connect
            for (var i = 0; i < Targets; i++)
            {
                var missing = new HashSet<string>(acknowledged.GetValueOrDefault(i) ?? []);
                string text;
                while ((text = TestClient.Text(await targets[i].NextAsync())) != "marker")
                {
                    missing.Remove(text);
                }

                Assert.Empty(missing);
            }
        }
        finally
        {
            await stop.CancelAsync();
            foreach (var t in targets)
            {
                await t.DisposeAsync();
            }
        }
    }

    [Fact]
    public async Task EndSessionRacingWithAReconnect_LeavesNoClientConnectedToAnEndedSession()
    {
        // An ended session must take its connection with it: a client that reconnects at that moment either
        // joins the session before it ends (and is closed with it) or gets a fresh one (session present 0).
        // Never connected, told "session present", and deaf.
        await using var broker = await TestBroker.StartImsAsync();
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        const string Bob = "GID_IMS@@@bob-phone";
        await using (var first = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await first.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        for (var round = 0; round < 30; round++)
        {
            await broker.WaitOfflineAsync(Bob);
            var connecting = TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600);
            broker.Engine.EndSession(Bob);
            await using var bob = await connecting;
            if (!bob.ConnectResult.IsSessionPresent)
            {
                await bob.SubscribeOkAsync("IMS/bob/Inbox/#"); // a fresh session: the client subscribes again
            }
            else if (!await StillConnectedAsync(bob))
            {
                continue; // joined the session before it ended, and was closed with it
            }

            // Connected: whatever the CONNACK said is true, and a message reaches it.
            await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"round {round}");
            await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", $"round {round}");
            Assert.Equal(1, broker.Engine.SubscriptionCount); // no entry left behind by an ended session
        }
    }

    [Fact]
    public async Task TakeoverStorm_OneConnectionStays_NoIndexEntryLeaks_NothingAcknowledgedLost()
    {
        // [MQTT-3.1.4-3]: a new connection with the client id of a connected one takes its session over.
        // Five connections racing for one client id, twenty times, while messages arrive.
        await using var broker = await TestBroker.StartImsAsync();
        const string Bob = "GID_IMS@@@bob-phone";
        await using (var first = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600))
        {
            await first.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        var acknowledged = new ConcurrentBag<string>();
        using var stop = new CancellationTokenSource();
        var publishing = Task.Run(async () =>
        {
            for (var n = 0; !stop.IsCancellationRequested; n++)
            {
                await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", $"m{n}");
                acknowledged.Add($"m{n}");
            }
        });

        var all = new List<TestClient>();
        try
        {
            for (var round = 0; round < 20; round++)
            {
                var racing = Enumerable.Range(0, 5).Select(_ => ConnectOrNullAsync(broker.MqttPort, Bob)).ToArray();
                foreach (var c in await Task.WhenAll(racing))
                {
                    if (c is not null)
                    {
                        all.Add(c);
                    }
                }
            }

            await stop.CancelAsync();
            await publishing;
            var last = await TestClient.ConnectAsync(broker.MqttPort, Bob, "bob", cleanStart: false, sessionExpiry: 3600);
            all.Add(last);
            Assert.True(last.ConnectResult.IsSessionPresent);
            await Expect.PublishAcceptedAsync(alice, "IMS/bob/Inbox/Msg/alice", "marker");

            // Every earlier connection was taken over (v5 0x8E): exactly one stays.
            foreach (var c in all.Where(c => !ReferenceEquals(c, last)))
            {
                await c.Disconnected.WaitAsync(TestClient.Timeout);
            }

            Assert.True(last.Client.IsConnected);
            Assert.Equal(1, broker.Engine.SubscriptionCount);

            // At least once across the takeovers: the racing connections never acknowledge, so everything
            // acknowledged to alice must reach the last one, re-sent or queued, by the marker.
            var missing = new HashSet<string>(acknowledged);
            string text;
            while ((text = TestClient.Text(await last.NextAsync())) != "marker")
            {
                missing.Remove(text);
            }

            Assert.Empty(missing);
        }
        finally
        {
            await stop.CancelAsync();
            foreach (var c in all)
            {
                await c.DisposeAsync();
            }
        }
    }

    static async Task<TestClient?> ConnectOrNullAsync(int port, string clientId)
    {
        try
        {
            return await TestClient.ConnectAsync(port, clientId, "bob", cleanStart: false, sessionExpiry: 3600, autoAcknowledge: false);
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or OperationCanceledException or InvalidOperationException)
        {
            return null; // taken over before its CONNACK was read
        }
    }

    /// <summary>A PINGREQ round trip: false when the broker has closed the connection.</summary>
    static async Task<bool> StillConnectedAsync(TestClient client)
    {
        try
        {
            await client.Client.PingAsync();
            return client.Client.IsConnected;
        }
        catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or OperationCanceledException or InvalidOperationException)
        {
            return false;
        }
    }
}
