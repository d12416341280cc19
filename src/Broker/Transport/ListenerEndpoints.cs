using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Broker.Transport;

/// <summary>The listeners Kestrel was told to open; after start they carry the bound ports (0 = any free port).</summary>
public sealed class ListenerEndpoints
{
    public ListenOptions? Mqtt { get; set; }

    /// <summary>Where MQTT over TCP listens when Broker:Mqtt:Transport is "sockets" (not Kestrel).</summary>
    public EndPoint? MqttSockets { get; set; }

    /// <summary>MQTT over plain TCP, whichever transport serves it.</summary>
    public EndPoint? MqttEndPoint => MqttSockets ?? Mqtt?.EndPoint;

    public ListenOptions? Http { get; set; }

    public ListenOptions? MqttTls { get; set; }

    public ListenOptions? HttpTls { get; set; }

    public int MqttPort => (MqttEndPoint as IPEndPoint)?.Port ?? 0;

    public int HttpPort => Port(Http);

    public int MqttTlsPort => Port(MqttTls);

    public int HttpTlsPort => Port(HttpTls);

    static int Port(ListenOptions? listen) => (listen?.EndPoint as IPEndPoint)?.Port ?? 0;
}
