using System.Diagnostics;
using System.Net;
using System.Net.WebSockets;
using Broker.Engine.Admission;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Packets;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Engine;

/// <summary>
/// The front of the pipeline (src/Broker.Engine/Admission/): failed-login penalties, the bound on password
/// checks, the per-source connect rate and one MaxConnections count over every listener (docs/reliability.md).
/// </summary>
public sealed class AdmissionTests
{
    /// <summary>Another loopback address: to the broker, another source than the tests' 127.0.0.1.</summary>
    static readonly IPAddress OtherSource = IPAddress.Parse("127.0.0.2");

    [Fact]
    public async Task FailedLogins_AreAnsweredLaterAndLater_WithTheUsualRefusal_WhileAValidUserConnects()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Limits:LoginFailureDelay"] = "00:00:00.200";
            s["Broker:Limits:LoginMaxDelay"] = "00:00:05";
        });

        // An attacker guessing alice's password, one attempt after the other, from 127.0.0.1.
        var took = new List<TimeSpan>();
        for (var i = 0; i < 4; i++)
        {
            var clock = Stopwatch.StartNew();
            Assert.Equal(MqttConnectReturnCode.ConnectionRefusedBadUsernameOrPassword, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@guesser", "alice", $"guess-{i}"));
            took.Add(clock.Elapsed);
        }

        Assert.Equal(4, broker.Counters.LoginFailures);
        Assert.Equal(4, broker.Counters.LoginsDelayed);

        // The 4th refusal comes no sooner than 200 ms × 2³ (a lower bound: load only makes it later).
        Assert.True(took[3] >= TimeSpan.FromMilliseconds(1500), $"the 4th refusal took {took[3].TotalMilliseconds} ms");

        // Meanwhile (the 5th guess waits out its penalty) alice connects from her own address, for the first time:
        // her password is hashed, not remembered, and she is not held back by the guesser's failures.
        var fifth = Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@guesser", "alice", "guess-4");
        Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", from: OtherSource));
        Assert.Equal(MqttConnectReturnCode.ConnectionRefusedBadUsernameOrPassword, await fifth); // the same answer, later
        Assert.Equal(5, broker.Counters.LoginFailures);

        var metrics = await MetricsAsync(broker);
        Assert.Equal(5, Value(metrics, "ims_broker_login_failures"));
        Assert.Equal(5, Value(metrics, "ims_broker_login_delayed"));
    }

    [Fact]
    public async Task PasswordChecks_BeyondTheBound_AreAnsweredServerBusy_ARememberedPasswordIsNot()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Limits:MaxConcurrentPasswordChecks"] = "1";
            s["Broker:Limits:MaxQueuedPasswordChecks"] = "0";
        });
        Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"));

        // A password check that never ends holds the only place: the test takes it itself, so nothing depends on timing.
        var gate = broker.Services.GetRequiredService<PasswordCheckGate>();
        using (var slowCheck = await gate.EnterAsync())
        {
            Assert.True(slowCheck.IsAcquired);

            // bob's password must be hashed: no place, no queue. v3.1.1 0x03 server unavailable, v5 0x89 server busy.
            Assert.Equal(MqttConnectReturnCode.ConnectionRefusedServerUnavailable, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob"));
            Assert.Equal(MqttClientConnectResultCode.ServerBusy, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob"));

            // alice's password was checked before and is remembered: it needs no place.
            Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"));
        }

        Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob"));
        Assert.Equal(2, broker.Counters.LoginsBusy);
        Assert.Equal(0, broker.Counters.LoginFailures); // busy says nothing about the password, and is no failure
        Assert.Equal(2, Value(await MetricsAsync(broker), "ims_broker_login_busy"));
    }

    [Fact]
    public async Task ConnectionsAboveTheSourceRate_AreClosedBeforeConnect_AndCounted_UntilTheBucketRefills()
    {
        await using var broker = await TestBroker.StartPlainAsync(s =>
        {
            s["Broker:Limits:ConnectRatePerSource"] = "1";
            s["Broker:Limits:ConnectBurstPerSource"] = "2";
        });
        await using var first = await Raw.ConnectAsync(broker.MqttPort, "first");
        await using var second = await Raw.ConnectAsync(broker.MqttPort, "second");

        // The burst is spent; on a slow machine a token may have come back meanwhile, so connect until one
        // is refused: closed on accept, without a CONNACK.
        var served = new List<RawClient>();
        try
        {
            while (true)
            {
                var extra = await RawClient.OpenAsync(broker.MqttPort);
                await extra.SendAsync(Raw.Connect($"extra-{served.Count}"));
                if (await extra.ReceiveAsync() is null)
                {
                    await extra.DisposeAsync();
                    break;
                }

                served.Add(extra);
                Assert.True(served.Count < 10, "no connection was refused above the source's rate");
            }
        }
        finally
        {
            foreach (var c in served)
            {
                await c.DisposeAsync();
            }
        }

        Assert.Equal(1, broker.Counters.OverSourceRate);

        // Another source has its own bucket.
        var (other, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("other"), from: OtherSource);
        await using (other)
        {
            Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, ack.ReturnCode);
        }

        // One token a second: a later connection from 127.0.0.1 is served again.
        var deadline = DateTime.UtcNow + TestClient.Timeout;
        while (true)
        {
            await using var later = await RawClient.OpenAsync(broker.MqttPort);
            await later.SendAsync(Raw.Connect("later"));
            if (await later.ReceiveAsync() is MqttConnAckPacket accepted)
            {
                Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, accepted.ReturnCode);
                break;
            }

            Assert.True(DateTime.UtcNow < deadline, "the bucket never refilled");
            await Task.Delay(200); // the refill is a matter of time, not of an event
        }
    }

    [Theory]
    [InlineData("sockets")]
    [InlineData("kestrel")]
    public async Task MaxConnections_CountsEveryListenerTogether(string transport)
    {
        // Broker:Limits:MaxConnections = 2, filled by one TCP and one WebSocket connection: the next on either
        // is closed at once, and a freed place is taken by either.
        await using var broker = await TestBroker.StartPlainAsync(s =>
        {
            s["Broker:Limits:MaxConnections"] = "2";
            s["Broker:Mqtt:Transport"] = transport;
        });
        var tcp = await TestClient.ConnectAsync(broker.MqttPort, "tcp-1");
        await using var ws = await TestClient.ConnectAsync(broker.HttpPort, "ws-1", webSocket: true);

        await using (var thirdTcp = await RawClient.OpenAsync(broker.MqttPort))
        {
            await thirdTcp.SendAsync(Raw.Connect("tcp-2"));
            Assert.Empty(await thirdTcp.ReadUntilClosedAsync());
        }

        Assert.Equal(1, broker.Counters.OverMaxConnections);
        using (var thirdWs = new ClientWebSocket())
        {
            thirdWs.Options.AddSubProtocol("mqtt");
            await Assert.ThrowsAnyAsync<WebSocketException>(() => thirdWs.ConnectAsync(new Uri($"ws://127.0.0.1:{broker.HttpPort}/mqtt"), CancellationToken.None));
        }

        // .NET's HTTP client tries a closed-before-answering connection again, so the WebSocket refusals are one or more.
        Assert.True(broker.Counters.OverMaxConnections >= 2);

        // The TCP client leaves; once the broker has seen it go, a WebSocket client takes its place.
        await tcp.DisposeAsync();
        var deadline = DateTime.UtcNow + TestClient.Timeout;
        while (true)
        {
            try
            {
                await using var next = await TestClient.ConnectAsync(broker.HttpPort, "ws-2", webSocket: true);
                Assert.True(next.Client.IsConnected);
                break;
            }
            catch (Exception ex) when (ex is not Xunit.Sdk.XunitException && DateTime.UtcNow < deadline)
            {
                await Task.Delay(50); // the place is freed when the broker reads the close: no event to await here
            }
        }
    }

    static Task<string> MetricsAsync(TestBroker broker) => Metrics.ReadAsync(broker);

    static double Value(string exposition, string name) => Metrics.Value(exposition, name);
}
