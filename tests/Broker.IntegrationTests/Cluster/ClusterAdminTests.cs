using System.Net;
using System.Net.Http.Headers;
using System.Net.Http.Json;
using System.Text;
using System.Text.Json;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet;

namespace Broker.IntegrationTests.Cluster;

/// <summary>
/// Issue #13, item 3: a user or group changed through the admin API of one node applies on every node
/// within a second, and <c>/api/sessions</c> lists the cluster's sessions with the node that hosts each.
/// </summary>
[Collection("cluster")]
public sealed class ClusterAdminTests(ThreeNodes nodes)
{
    BrokerCluster Cluster => nodes.Cluster;

    /// <summary>The admin API of one node, as the demo admin (HTTP Basic).</summary>
    internal static HttpClient Admin(RunningBroker node)
    {
        var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{node.HttpPort}") };
        http.DefaultRequestHeaders.Authorization = new AuthenticationHeaderValue("Basic", Convert.ToBase64String(Encoding.UTF8.GetBytes("admin:admin-pass")));
        return http;
    }

    /// <summary>Tries the CONNECT until it succeeds, for at most a second (the promise measured here).</summary>
    static async Task<TimeSpan> ConnectsWithinASecondAsync(RunningBroker node, string clientId, string user, string password)
    {
        var clock = System.Diagnostics.Stopwatch.StartNew();
        while (await Connect.V5ResultAsync(node.MqttPort, clientId, user, password) != MqttClientConnectResultCode.Success)
        {
            Assert.True(clock.Elapsed < TimeSpan.FromSeconds(1), $"{user} could not connect to the other node within a second of the change");
            await Task.Delay(20);
        }

        return clock.Elapsed;
    }

    [Fact]
    public async Task UsersAndGroupsChangedOnOneNode_ApplyOnEveryNode_DeletedUserDisconnectedEverywhere()
    {
        using var n1 = Admin(Cluster[0]);
        Assert.Equal(HttpStatusCode.Created, (await n1.PostAsJsonAsync("/api/users", new { name = "erin", password = "erin-secret-1", role = "user" })).StatusCode);
        await ConnectsWithinASecondAsync(Cluster[1], "GID_IMS@@@erin-probe", "erin", "erin-secret-1");

        Assert.Equal(HttpStatusCode.Created, (await n1.PutAsJsonAsync("/api/groups/Climbers", new { members = new[] { "erin", "carol" } })).StatusCode);
        await using var carol = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@carol-climb", "carol");
        await using var erin = await TestClient.ConnectAsync(Cluster[2].MqttPort, "GID_IMS@@@erin-phone", "erin", password: "erin-secret-1");
        await carol.SubscribeOkAsync("IMS/Climbers/#"); // allowed on n2 only if n2 knows the group changed on n1
        await erin.PublishAsync("IMS/Climbers/erin", "belay on");
        await carol.ExpectOnlyAsync("IMS/Climbers/erin", "belay on");

        Assert.Equal(HttpStatusCode.NoContent, (await n1.DeleteAsync("/api/users/erin")).StatusCode);
        Assert.Equal(MqttClientDisconnectReason.AdministrativeAction, (await erin.Disconnected.WaitAsync(TestClient.Timeout)).Reason);
        Assert.Equal(HttpStatusCode.NoContent, (await n1.DeleteAsync("/api/groups/Climbers")).StatusCode);
    }

    [Fact]
    public async Task Sessions_ListsTheClustersSessions_WithTheNodeThatHostsEach()
    {
        await using var bob = await TestClient.ConnectAsync(Cluster[1].MqttPort, "GID_IMS@@@bob-listed", "bob", cleanStart: false, sessionExpiry: 3600);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");

        using var n1 = Admin(Cluster[0]);
        var sessions = await n1.GetFromJsonAsync<JsonElement[]>("/api/sessions") ?? [];
        var listed = Assert.Single(sessions, s => s.GetProperty("clientId").GetString() == "GID_IMS@@@bob-listed");
        Assert.Equal(("bob", "n2", true), (listed.GetProperty("userId").GetString(), listed.GetProperty("node").GetString(), listed.GetProperty("connected").GetBoolean()));
        Assert.Contains("IMS/bob/Inbox/#", listed.GetProperty("subscriptions").EnumerateArray().Select(x => x.GetString()));
    }
}
