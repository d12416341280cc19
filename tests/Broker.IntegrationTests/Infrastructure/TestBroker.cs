using Broker.Engine;
using Broker.Engine.Diagnostics;
using Broker.Ims.Identity;
using Broker.Transport;
using Microsoft.AspNetCore.Builder;
using Microsoft.Extensions.DependencyInjection;
using Microsoft.Extensions.Time.Testing;

namespace Broker.IntegrationTests.Infrastructure;

/// <summary>
/// The real broker host, in process, on free loopback ports (port 0), with its own configuration:
/// the demo users and group of contract §9 unless a test says otherwise. Disposing stops it.
/// </summary>
public sealed class TestBroker : IAsyncDisposable
{
    readonly WebApplication _app;

    TestBroker(WebApplication app, FakeTimeProvider? clock)
    {
        _app = app;
        Clock = clock;
        var endpoints = app.Services.GetRequiredService<ListenerEndpoints>();
        MqttPort = endpoints.MqttPort;
        HttpPort = endpoints.HttpPort;
        MqttTlsPort = endpoints.MqttTlsPort;
        HttpTlsPort = endpoints.HttpTlsPort;
    }

    public int MqttPort { get; }

    public int HttpPort { get; }

    /// <summary>0 unless the test configured a certificate.</summary>
    public int MqttTlsPort { get; }

    public int HttpTlsPort { get; }

    /// <summary>Set when started with a fake clock: tests move time instead of sleeping.</summary>
    public FakeTimeProvider? Clock { get; }

    public IServiceProvider Services => _app.Services;

    public BrokerEngine Engine => _app.Services.GetRequiredService<BrokerEngine>();

    public BrokerCounters Counters => _app.Services.GetRequiredService<BrokerCounters>();

    /// <remarks>
    /// The per-user publish rate and device limits of contract §13 are off here (floods, storms and batches of
    /// many tests are not what they test); the tests of §13 set the limits they check.
    /// </remarks>
    public static Task<TestBroker> StartImsAsync(Action<Dictionary<string, string?>>? configure = null, bool fakeClock = false) =>
        StartAsync(settings =>
        {
            AddDemoUsers(settings);
            TurnOffUserRateLimits(settings);
            configure?.Invoke(settings);
        }, fakeClock);

    /// <summary>Plain mode (contract §8): anonymous on, no rules, any client id.</summary>
    public static Task<TestBroker> StartPlainAsync(Action<Dictionary<string, string?>>? configure = null, bool fakeClock = false) =>
        StartAsync(settings =>
        {
            settings["Broker:Conventions:Enabled"] = "false";
            settings["Broker:AllowAnonymous"] = "true";
            configure?.Invoke(settings);
        }, fakeClock);

    public static async Task<TestBroker> StartAsync(Action<Dictionary<string, string?>> configure, bool fakeClock = false, Action<IServiceCollection>? configureServices = null)
    {
        var settings = new Dictionary<string, string?>
        {
            ["Broker:Mqtt:Host"] = "127.0.0.1",
            ["Broker:Mqtt:Port"] = "0",
            ["Broker:Http:Port"] = "0",
            ["Serilog:MinimumLevel:Default"] = "Warning",
            // In-process tests keep state in memory; the durability tests run the SQLite store for real.
            ["Broker:Store:Type"] = "memory",
            // No $SYS retained messages unless a test asks for them: they would show up in retained counts.
            ["Broker:Sys:Interval"] = "00:00:00",
            // Many brokers share this process and its GC: none of them decides when it collects (IdleCollectorTests).
            ["Broker:Memory:IdleCollect"] = "00:00:00",
        };
        configure(settings);
        var clock = fakeClock ? new FakeTimeProvider(DateTimeOffset.UtcNow) : null;
        var app = BrokerApp.Create([], settings, "Testing", services =>
        {
            if (clock is not null)
            {
                services.AddSingleton<TimeProvider>(clock);
            }

            configureServices?.Invoke(services);
        });
        await app.StartAsync();
        return new TestBroker(app, clock);
    }

    /// <summary>Contract §9's demo users (password "&lt;name&gt;-pass") and group Group123 = alice, bob.</summary>
    public static void AddDemoUsers(Dictionary<string, string?> settings)
    {
        var i = 0;
        foreach (var (name, role) in DemoUsers)
        {
            settings[$"Broker:Users:{i}:Name"] = name;
            settings[$"Broker:Users:{i}:Role"] = role;
            settings[$"Broker:Users:{i}:PasswordHash"] = Hashes.Value[name];
            i++;
        }

        settings["Broker:Groups:0:Id"] = "Group123";
        settings["Broker:Groups:0:Members:0"] = "alice";
        settings["Broker:Groups:0:Members:1"] = "bob";
    }

    /// <summary>Contract §13's publish rate and device limits for role user, off (the tests of §13 set their own).</summary>
    public static void TurnOffUserRateLimits(IDictionary<string, string?> settings)
    {
        settings["Broker:Limits:Roles:user:PublishRate"] = "0";
        settings["Broker:Limits:Roles:user:PublishBytesRate"] = "0";
        settings["Broker:Limits:Roles:user:MaxDevices"] = "0";
    }

    public static readonly (string Name, string Role)[] DemoUsers =
        [("alice", "user"), ("bob", "user"), ("carol", "user"), ("assistant", "service"), ("admin", "admin")];

    // Hashing is slow on purpose; once per test run is enough.
    static readonly Lazy<Dictionary<string, string>> Hashes = new(() =>
        DemoUsers.ToDictionary(u => u.Name, u => PasswordVerifier.Hash(u.Name + "-pass")));

    /// <summary>
    /// Until the broker has detached the client's session: a client's DISCONNECT returns before the broker
    /// has read it, and what a test publishes next must find the session offline.
    /// </summary>
    public async Task WaitOfflineAsync(string clientId)
    {
        var deadline = DateTime.UtcNow + TestClient.Timeout;
        while (Engine.FindSession(clientId) is { IsConnected: true })
        {
            Assert.True(DateTime.UtcNow < deadline, $"{clientId} is still connected");
            await Task.Delay(10);
        }
    }

    /// <summary>
    /// Until the client has acknowledged everything the broker sent it: MQTTnet's client acknowledges after
    /// the test has seen a message, and a DISCONNECT right after can overtake those acknowledgements.
    /// </summary>
    public async Task WaitAcknowledgedAsync(string clientId)
    {
        var deadline = DateTime.UtcNow + TestClient.Timeout;
        while (Engine.FindSession(clientId) is { InflightCount: > 0 })
        {
            Assert.True(DateTime.UtcNow < deadline, $"{clientId} still has unacknowledged messages");
            await Task.Delay(10);
        }
    }

    public async ValueTask DisposeAsync()
    {
        await _app.StopAsync();
        await _app.DisposeAsync();
    }
}
