using Broker.IntegrationTests.Infrastructure;
using MQTTnet;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Durability;

/// <summary>Issue #5's loop: five kill -9 at random moments under a QoS 1 load; no acknowledged message is lost.</summary>
public sealed class KillLoopTests : IDisposable
{
    const int Publishers = 3;
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-loop-");

    public void Dispose() => _dir.Delete(recursive: true);

    [Fact]
    public async Task FiveKillsUnderQos1Load_LoseNoAcknowledgedMessage()
    {
        var settings = new Dictionary<string, string> { ["Broker:MaxQueuedMessages"] = "100000" };
        var broker = await RunningBroker.StartAsync(_dir.FullName, settings);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 86400))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        var acknowledged = new HashSet<string>();
        for (var round = 0; round < 5; round++)
        {
            // Kill after a random number of acks, while every publisher still has a message in flight.
            var killAfter = Random.Shared.Next(20, 150);
            var reached = new TaskCompletionSource(TaskCreationOptions.RunContinuationsAsynchronously);
            var ackedThisRound = 0;
            var publishers = Enumerable.Range(0, Publishers).Select(p => Task.Run(async () =>
            {
                await using var alice = await TestClient.ConnectAsync(broker.MqttPort, $"GID_IMS@@@alice-{p}", "alice");
                for (var n = 0; ; n++)
                {
                    var payload = $"r{round}-p{p}-{n}";
                    try
                    {
                        var result = await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", payload);
                        Assert.Equal(MqttClientPublishReasonCode.Success, result.ReasonCode);
                    }
                    catch (Exception ex) when (ex is MQTTnet.Exceptions.MqttCommunicationException or OperationCanceledException or TimeoutException)
                    {
                        return; // the broker died under us: this one was not acknowledged
                    }

                    lock (acknowledged)
                    {
                        acknowledged.Add(payload);
                    }

                    if (Interlocked.Increment(ref ackedThisRound) == killAfter)
                    {
                        reached.TrySetResult();
                    }
                }
            })).ToArray();

            await reached.Task.WaitAsync(TimeSpan.FromSeconds(60));
            await broker.KillAsync();
            await Task.WhenAll(publishers).WaitAsync(TimeSpan.FromSeconds(60));
            await broker.DisposeAsync();
            broker = await RunningBroker.StartAsync(_dir.FullName, settings);
        }

        await using (broker)
        {
            await using var back = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 86400);
            Assert.True(back.ConnectResult.IsSessionPresent);
            var missing = new HashSet<string>(acknowledged);
            while (missing.Count > 0)
            {
                // At least once: an unacknowledged or re-sent message may come too; every acknowledged one must.
                missing.Remove(TestClient.Text(await back.NextAsync()));
            }

            Assert.True(acknowledged.Count >= 5 * 20);
        }
    }
}
