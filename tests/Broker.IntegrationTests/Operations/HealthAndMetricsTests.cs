using System.Net;
using Broker.IntegrationTests.Infrastructure;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Operations;

/// <summary>Issue #7 items 3–5: /healthz, /readyz, /metrics (Prometheus text) and $SYS.</summary>
public sealed class HealthAndMetricsTests
{
    [Fact]
    public async Task Health_AndReadiness_AnswerOk()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };

        Assert.Equal("ok", await http.GetStringAsync("/healthz"));
        var ready = await http.GetAsync("/readyz");
        Assert.Equal(HttpStatusCode.OK, ready.StatusCode);
        Assert.Equal("ready", await ready.Content.ReadAsStringAsync());
    }

    [Fact]
    public async Task Metrics_ArePrometheusText_AndMoveWithTraffic()
    {
        await using var broker = await TestBroker.StartImsAsync();
        using var http = new HttpClient { BaseAddress = new Uri($"http://127.0.0.1:{broker.HttpPort}") };
        var before = await http.GetStringAsync("/metrics");

        await using var bob = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bob-phone", "bob");
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "hi");
        await alice.PublishAsync("IMS/bob/Inbox/Msg/carol", "forged");
        await Expect.SubscribeRefusedAsync(alice, "IMS/bob/Inbox/#");
        await Expect.SubscribeRefusedAsync(alice, "chat/#", MQTTnet.MqttClientSubscribeResultCode.TopicFilterInvalid);
        await bob.NextAsync();
        var after = await http.GetStringAsync("/metrics");

        Assert.Equal(0, Value(before, "ims_broker_messages_received"));
        Assert.Equal(2, Value(after, "ims_broker_messages_received"));
        Assert.Equal(1, Value(after, "ims_broker_publish_refused"));
        Assert.Equal(2, Value(after, "ims_broker_connections"));
        Assert.True(Value(after, "ims_broker_messages_sent") >= 1);
        Assert.Equal(2, Value(after, "ims_broker_sessions"));
        Assert.Contains("# TYPE ims_broker_messages_received ", after);
        Assert.Contains("ims_broker_messages_received{qos=\"1\"} 2", after);
        Assert.Contains("ims_broker_publish_refused{reason=\"not_authorized\"} 1", after);
        Assert.Contains("ims_broker_subscribe_refused{reason=\"not_authorized\"} 1", after);
        Assert.Contains("ims_broker_subscribe_refused{reason=\"topic_invalid\"} 1", after);
        Assert.Contains("process_cpu_seconds_total", after);
    }

    [Fact]
    public async Task Sys_BrokerTopics_AreRetainedAndReadableByAnAdmin()
    {
        await using var broker = await TestBroker.StartImsAsync(s => s["Broker:Sys:Interval"] = "00:00:10");
        await using var admin = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@console", "admin");

        await admin.SubscribeOkAsync("$SYS/broker/clients/connected", MqttQualityOfServiceLevel.AtMostOnce);

        var connected = await admin.NextAsync();
        Assert.True(connected.ApplicationMessage.Retain);
        Assert.True(int.Parse(TestClient.Text(connected)) >= 0);
    }

    /// <summary>prometheus-net names a metric {meter}_{instrument}.</summary>
    static double Value(string exposition, string name) => Metrics.Value(exposition, name);
}
