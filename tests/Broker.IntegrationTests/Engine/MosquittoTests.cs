using Broker.IntegrationTests.Infrastructure;

namespace Broker.IntegrationTests.Engine;

/// <summary>The real mosquitto_pub / mosquitto_sub against the broker in plain mode, v3.1.1 and v5.</summary>
public sealed class MosquittoTests
{
    static string[] Args(TestBroker broker, string version, string clientId, params string[] more) =>
        ["-h", "127.0.0.1", "-p", broker.MqttPort.ToString(System.Globalization.CultureInfo.InvariantCulture), "-V", version, "-i", clientId, .. more];

    [Theory]
    [InlineData("mqttv311")]
    [InlineData("mqttv5")]
    public async Task MosquittoPub_ToMosquittoSub_Delivered(string version)
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartPlainAsync();
        await using var sub = await Mosquitto.Subscriber.StartAsync(Args(broker, version, "msub", "-t", "mq/#", "-q", "2", "-v"));

        foreach (var qos in new[] { "0", "1", "2" })
        {
            var (exit, output) = await Mosquitto.RunAsync("mosquitto_pub", Args(broker, version, "mpub", "-t", "mq/q" + qos, "-m", "hello " + qos, "-q", qos));
            Assert.True(exit == 0, output);
            Assert.Equal("mq/q" + qos + " hello " + qos, await sub.NextMessageAsync());
        }
    }

    [Theory]
    [InlineData("mqttv311")]
    [InlineData("mqttv5")]
    public async Task MosquittoPubRetained_LaterMosquittoSub_GetsIt(string version)
    {
        // [MQTT-3.3.1-5, -6]: a retained message goes to a later subscriber.
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await TestBroker.StartPlainAsync();
        var (exit, output) = await Mosquitto.RunAsync("mosquitto_pub", Args(broker, version, "mpub", "-t", "mq/state", "-m", "on", "-q", "1", "-r"));
        Assert.True(exit == 0, output);

        var (subExit, subOutput) = await Mosquitto.RunAsync("mosquitto_sub", Args(broker, version, "msub", "-t", "mq/#", "-v", "-C", "1", "-W", "10"));
        Assert.True(subExit == 0, subOutput);
        Assert.Equal("mq/state on", subOutput.Trim());
    }
}
