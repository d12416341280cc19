using Broker.Engine.Diagnostics;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet.Packets;
using MQTTnet.Protocol;
using Serilog.Core;
using Serilog.Events;

namespace Broker.IntegrationTests.Engine;

/// <summary>The lines a client can cause are rate-limited, broker-wide per event id; the counters still count every one.</summary>
public sealed class LogFloodTests
{
    [Fact]
    public async Task ThousandRefusedPublishes_LogABoundedNumberOfLines_AndSayHowManyWereSuppressed()
    {
        var log = new LogCapture();
        // A fake clock: time stands still until the test moves it, so the first second lasts the whole flood.
        await using var broker = await TestBroker.StartAsync(
            s =>
            {
                s["Broker:Conventions:Enabled"] = "false";
                s["Broker:AllowAnonymous"] = "true";
            },
            fakeClock: true,
            configureServices: services => services.AddSingleton<ILogEventSink>(log));
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "flooder");

        // $SYS is read-only: each publish there is refused (3001). QoS 0, then a PINGREQ: its answer comes after all of them.
        for (var i = 0; i < 1000; i++)
        {
            await raw.SendAsync(Raw.Publish("$SYS/flood", "x"));
        }

        await raw.SendAsync(MqttPingReqPacket.Instance);
        await raw.ExpectAsync<MqttPingRespPacket>();

        Assert.Equal(1000, broker.Counters.PublishRefused);
        var lines = log.Lines(3001);
        Assert.Equal(ClientLogLimiter.LinesPerSecond, lines.Count);
        Assert.All(lines, line => Assert.DoesNotContain("suppressed", line, StringComparison.Ordinal));

        // A second later the next line goes out, with the count of those held back.
        broker.Clock!.Advance(TimeSpan.FromSeconds(1));
        await raw.SendAsync(Raw.Publish("$SYS/flood", "x"));
        await raw.SendAsync(MqttPingReqPacket.Instance);
        await raw.ExpectAsync<MqttPingRespPacket>();

        Assert.Equal(1001, broker.Counters.PublishRefused);
        var events = log.Events(3001);
        Assert.Equal(ClientLogLimiter.LinesPerSecond + 1, events.Count);
        var last = events[^1];
        Assert.EndsWith("(990 similar lines suppressed)", last.RenderMessage(System.Globalization.CultureInfo.InvariantCulture), StringComparison.Ordinal);
        Assert.Equal(990L, Assert.IsType<ScalarValue>(last.Properties["Suppressed"]).Value);
        Assert.Equal("flooder", Assert.IsType<ScalarValue>(last.Properties["ClientId"]).Value); // the line's own properties are kept
        Assert.Equal(LogEventLevel.Warning, last.Level);
    }

    [Fact]
    public async Task RefusedConnects_AreLimitedPerEventId_OtherEventsStillLogged()
    {
        var log = new LogCapture();
        await using var broker = await TestBroker.StartAsync(
            s => TestBroker.AddDemoUsers(s),
            fakeClock: true,
            configureServices: services => services.AddSingleton<ILogEventSink>(log));

        // A client id outside the conventions is refused (2001) before any password check: 30 in a row.
        for (var i = 0; i < 30; i++)
        {
            var (refused, ack) = await RawClient.ConnectAsync(broker.MqttPort, Raw.Connect("not-an-ims-id-" + i));
            await using var _ = refused;
            Assert.NotEqual(MqttConnectReturnCode.ConnectionAccepted, ack.ReturnCode);
        }

        Assert.Equal(30, broker.Counters.ConnectionsRefused);
        Assert.Equal(ClientLogLimiter.LinesPerSecond, log.Lines(2001).Count);

        // Another event has its own budget: a protocol error (1007) is still logged.
        await using var raw = await Raw.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", configure: c =>
        {
            c.Username = "alice";
            c.Password = "alice-pass"u8.ToArray();
        });
        await raw.SendAsync(new MqttConnectPacket { ClientId = "again" });
        Assert.Empty(await raw.ReadUntilClosedAsync());
        Assert.Single(log.Lines(1007));
    }

    [Fact]
    public async Task ABrokerNeitherSetsNorClosesTheStaticSerilogLogger()
    {
        // Each broker logs through its own logger: the engine's loggers once read the static Serilog.Log.Logger,
        // which every broker host set when built and silenced when disposed, so a broker started or stopped by a
        // test running alongside could send this one's lines elsewhere (0 of them captured above).
        var sentinel = new Serilog.LoggerConfiguration().CreateLogger();
        var before = Serilog.Log.Logger;
        Serilog.Log.Logger = sentinel;
        try
        {
            await using (var broker = await TestBroker.StartPlainAsync())
            {
                Assert.Same(sentinel, Serilog.Log.Logger);
            }

            Assert.Same(sentinel, Serilog.Log.Logger);
        }
        finally
        {
            Serilog.Log.Logger = before;
        }
    }
}
