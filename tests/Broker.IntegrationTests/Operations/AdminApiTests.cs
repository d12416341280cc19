using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Net.Sockets;
using System.Text;
using System.Text.Json;
using Broker.Engine.Admission;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.DependencyInjection;
using MQTTnet;
using MQTTnet.Formatter;

namespace Broker.IntegrationTests.Operations;

/// <summary>Issue #7 item 6: the admin API under /api, over real HTTP against the running host.</summary>
public sealed class AdminApiTests
{
    static HttpClient Http(TestBroker broker, string? user = "admin", string? password = null)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        if (user is not null)
        {
            http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password ?? user + "-pass"}")));
        }

        return http;
    }

    [Fact]
    public async Task WithoutCredentials_Is401_AndANonAdminIs403()
    {
        await using var broker = await TestBroker.StartImsAsync();

        using var anonymous = Http(broker, user: null);
        var unauthorized = await anonymous.GetAsync("/api/users");
        Assert.Equal(HttpStatusCode.Unauthorized, unauthorized.StatusCode);
        Assert.Contains("Basic", unauthorized.Headers.WwwAuthenticate.ToString());
        Assert.Equal(0, broker.Counters.LoginFailures); // no credentials, no failed login

        using var wrong = Http(broker, "admin", "not-the-password");
        Assert.Equal(HttpStatusCode.Unauthorized, (await wrong.GetAsync("/api/users")).StatusCode);
        Assert.Equal(1, broker.Counters.LoginFailures);

        using var alice = Http(broker, "alice");
        Assert.Equal(HttpStatusCode.Forbidden, (await alice.GetAsync("/api/users")).StatusCode);
    }

    /// <summary>An HTTP client whose connections come from <paramref name="from"/> (127.0.0.2 is another source to the broker).</summary>
    static HttpClient HttpFrom(TestBroker broker, IPAddress from, string user, string password)
    {
        var handler = new SocketsHttpHandler
        {
            ConnectCallback = async (context, cancellationToken) =>
            {
                var socket = new Socket(AddressFamily.InterNetwork, SocketType.Stream, ProtocolType.Tcp) { NoDelay = true };
                try
                {
                    socket.Bind(new IPEndPoint(from, 0));
                    await socket.ConnectAsync(context.DnsEndPoint, cancellationToken);
                    return new NetworkStream(socket, ownsSocket: true);
                }
                catch
                {
                    socket.Dispose();
                    throw;
                }
            },
        };
        var http = new HttpClient(handler) { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes($"{user}:{password}")));
        return http;
    }

    [Fact]
    public async Task WrongBasicPasswords_AreFailedLogins_SharedWithMqtt_AndDelayed_WhileTheAdminStillGetsIn()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Limits:LoginFailureDelay"] = "00:00:00.100";
            s["Broker:Limits:LoginMaxDelay"] = "00:00:02";
        });

        // Guessing the admin's password over HTTP Basic, from 127.0.0.1: the usual 401, counted and delayed.
        for (var i = 0; i < 3; i++)
        {
            using var guesser = Http(broker, "admin", $"guess-{i}");
            var response = await guesser.GetAsync("/api/users");
            Assert.Equal(HttpStatusCode.Unauthorized, response.StatusCode);
            Assert.Contains("Basic", response.Headers.WwwAuthenticate.ToString());
        }

        Assert.Equal(3, broker.Counters.LoginFailures);
        Assert.Equal(3, broker.Counters.LoginsDelayed);

        // One attacker, one budget: an MQTT guess from the same address is counted with the HTTP ones (and delayed).
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@guesser", "alice", "guess-mqtt"));
        Assert.Equal(4, broker.Counters.LoginFailures);
        Assert.Equal(4, broker.Counters.LoginsDelayed);

        // The admin, from another address, with the right password: in, although her user name has failures on record.
        using (var admin = HttpFrom(broker, IPAddress.Parse("127.0.0.2"), "admin", "admin-pass"))
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/api/users")).StatusCode);
        }

        // And from the guesser's address too: later, but in (nobody is locked out).
        using (var admin = Http(broker))
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/api/users")).StatusCode);
        }

        Assert.Equal(4, broker.Counters.LoginFailures);
        var metrics = await MetricsAsync(broker);
        Assert.Equal(4, Value(metrics, "ims_broker_login_failures"));
        Assert.True(Value(metrics, "ims_broker_login_delayed") >= 4);
    }

    [Fact]
    public async Task BasicLogin_WithThePasswordCheckGateFull_Is503WithRetryAfter_AndNoFailure()
    {
        await using var broker = await TestBroker.StartImsAsync(s =>
        {
            s["Broker:Limits:MaxConcurrentPasswordChecks"] = "1";
            s["Broker:Limits:MaxQueuedPasswordChecks"] = "0";
        });

        // The test holds the only place itself, as MQTT CONNECTs being hashed would: nothing depends on timing.
        var gate = broker.Services.GetRequiredService<PasswordCheckGate>();
        using (var slowCheck = await gate.EnterAsync())
        {
            Assert.True(slowCheck.IsAcquired);
            using var admin = Http(broker);
            var busy = await admin.GetAsync("/api/users");
            Assert.Equal(HttpStatusCode.ServiceUnavailable, busy.StatusCode);
            Assert.NotNull(busy.Headers.RetryAfter);
        }

        Assert.Equal(1, broker.Counters.LoginsBusy);
        Assert.Equal(0, broker.Counters.LoginFailures);
        using (var admin = Http(broker))
        {
            Assert.Equal(HttpStatusCode.OK, (await admin.GetAsync("/api/users")).StatusCode);
        }
    }

    static Task<string> MetricsAsync(TestBroker broker) => Metrics.ReadAsync(broker);

    static double Value(string exposition, string name) => Metrics.Value(exposition, name);

    [Fact]
    public async Task Users_AddedAtRunTime_CanConnect_AndChangePassword_AndBeRemoved()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);

        var created = await http.PostAsJsonAsync("/api/users", new { name = "dave", password = "dave-secret-1", role = "user" });
        Assert.Equal(HttpStatusCode.Created, created.StatusCode);
        Assert.Contains(await http.GetFromJsonAsync<JsonElement[]>("/api/users") ?? [], u => u.GetProperty("name").GetString() == "dave");
        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", "dave-secret-1"));

        Assert.Equal(HttpStatusCode.NoContent, (await http.PutAsJsonAsync("/api/users/dave/password", new { password = "dave-secret-2" })).StatusCode);
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", "dave-secret-1"));
        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", "dave-secret-2"));

        Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/users/dave")).StatusCode);
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/users/dave")).StatusCode);
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", "dave-secret-2"));
    }

    [Fact]
    public async Task DeletingAUser_DisconnectsItsClients()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");

        Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/users/carol")).StatusCode);

        Assert.Equal(MqttClientDisconnectReason.AdministrativeAction, (await carol.Disconnected).Reason);
        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol"));
    }

    [Fact]
    public async Task BadInput_Is400NamingTheField_AndChangesNothing()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);

        var response = await http.PostAsJsonAsync("/api/users", new { name = "bad/name", password = "short", role = "root" });

        Assert.Equal(HttpStatusCode.BadRequest, response.StatusCode);
        var errors = (await response.Content.ReadFromJsonAsync<JsonElement>()).GetProperty("errors");
        Assert.True(errors.TryGetProperty("name", out _));
        Assert.True(errors.TryGetProperty("password", out _));
        Assert.True(errors.TryGetProperty("role", out _));
        Assert.DoesNotContain(await http.GetFromJsonAsync<JsonElement[]>("/api/users") ?? [], u => u.GetProperty("name").GetString() == "bad/name");

        var clash = await http.PostAsJsonAsync("/api/users", new { name = "alice", password = "long-enough" });
        Assert.Equal(HttpStatusCode.BadRequest, clash.StatusCode);

        var group = await http.PutAsJsonAsync("/api/groups/alice", new { members = new[] { "bob" } }); // a user's id
        Assert.Equal(HttpStatusCode.BadRequest, group.StatusCode);
    }

    [Fact]
    public async Task Groups_ChangedThroughTheApi_TakeEffectForTheAclAtOnce()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);
        await using var carol = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@carol-phone", "carol");
        await Expect.SubscribeRefusedAsync(carol, "IMS/Hiking/#");

        Assert.Equal(HttpStatusCode.Created, (await http.PutAsJsonAsync("/api/groups/Hiking", new { members = new[] { "carol", "alice" } })).StatusCode);

        await carol.SubscribeOkAsync("IMS/Hiking/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await Expect.PublishAcceptedAsync(alice, "IMS/Hiking/alice", "trail at 9");
        await carol.ExpectOnlyAsync("IMS/Hiking/alice", "trail at 9");
        var groups = await http.GetFromJsonAsync<JsonElement[]>("/api/groups") ?? [];
        Assert.Contains(groups, g => g.GetProperty("id").GetString() == "Hiking");

        Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/groups/Hiking")).StatusCode);
        await Expect.PublishRefusedAsync(broker, alice, "IMS/Hiking/alice", MqttClientPublishReasonCode.NotAuthorized);
    }

    [Fact]
    public async Task Sessions_AreListed_AndAClientCanBeDisconnected()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);
        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob", cleanStart: false, sessionExpiry: 600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");

        var sessions = await http.GetFromJsonAsync<JsonElement[]>("/api/sessions") ?? [];
        var session = Assert.Single(sessions, s => s.GetProperty("clientId").GetString() == "GID_IMS@@@bob-phone");
        Assert.True(session.GetProperty("connected").GetBoolean());
        Assert.Equal("bob", session.GetProperty("userId").GetString());
        Assert.Equal(["IMS/bob/Inbox/#"], session.GetProperty("subscriptions").EnumerateArray().Select(x => x.GetString() ?? "").ToArray());

        Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/sessions/GID_IMS@@@bob-phone/connection")).StatusCode);
        var gone = await bob.Disconnected;
        Assert.Equal(MqttClientDisconnectReason.AdministrativeAction, gone.Reason); // v5 0x98
        Assert.Equal(HttpStatusCode.NotFound, (await http.DeleteAsync("/api/sessions/GID_IMS@@@nobody/connection")).StatusCode);
    }

    [Fact]
    public async Task ReleasingABinding_LetsAnotherUserTakeTheClientIdWithAFreshSession()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);
        await using (var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@shared-tablet", "bob", cleanStart: false, sessionExpiry: 600))
        {
            await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        }

        Assert.Equal(MqttClientConnectResultCode.NotAuthorized, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@shared-tablet", "alice"));
        Assert.Equal(HttpStatusCode.NoContent, (await http.DeleteAsync("/api/bindings/GID_IMS@@@shared-tablet")).StatusCode);

        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@shared-tablet", "alice", cleanStart: false, sessionExpiry: 600);
        Assert.False(alice.ConnectResult.IsSessionPresent); // bob's session did not pass to alice
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task Broadcast_ReachesSystemSubscribers_AndOtherTopicsAreRefused(MqttProtocolVersion version)
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker);
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice", version);
        await alice.SubscribeOkAsync("IMS/System/#");

        Assert.Equal(HttpStatusCode.Accepted, (await http.PostAsJsonAsync("/api/broadcast", new { topic = "IMS/System/Announcements", payload = "maintenance at 2am" })).StatusCode);
        Assert.Equal(HttpStatusCode.BadRequest, (await http.PostAsJsonAsync("/api/broadcast", new { topic = "IMS/alice/Inbox/x/admin", payload = "x" })).StatusCode);

        await alice.ExpectOnlyAsync("IMS/System/Announcements", "maintenance at 2am");
    }

    [Fact]
    public async Task OpenApiDocument_DescribesTheApi()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = Http(broker, user: null);

        var document = await http.GetFromJsonAsync<JsonElement>("/openapi/v1.json");

        Assert.True(document.GetProperty("paths").TryGetProperty("/api/users", out _));
    }
}

/// <summary>With Broker:Jwt on, the admin API also takes a bearer token whose role is admin.</summary>
public sealed class AdminApiBearerTests
{
    [Fact]
    public async Task BearerToken_WithAdminRole_IsAccepted_OtherRolesAre403_BadTokens401()
    {
        await using var broker = await TestBroker.StartImsAsync(Contract.JwtTests.EnableJwt);
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };

        async Task<HttpStatusCode> GetUsers(string token)
        {
            using var request = new HttpRequestMessage(HttpMethod.Get, "/api/users");
            request.Headers.Authorization = new AuthenticationHeaderValue("Bearer", token);
            return (await http.SendAsync(request)).StatusCode;
        }

        Assert.Equal(HttpStatusCode.OK, await GetUsers(Contract.JwtTests.Mint("ops-bot", "admin")));
        Assert.Equal(HttpStatusCode.Forbidden, await GetUsers(Contract.JwtTests.Mint("dave", "user")));
        Assert.Equal(HttpStatusCode.Unauthorized, await GetUsers(Contract.JwtTests.Mint("ops-bot", "admin", DateTimeOffset.UtcNow.AddMinutes(-5))));
        Assert.Equal(HttpStatusCode.Unauthorized, await GetUsers(Contract.JwtTests.Mint("ops-bot", "admin", secret: "another-secret-that-is-32-bytes-long!")));
    }
}
