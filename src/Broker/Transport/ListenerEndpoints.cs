using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Broker.Transport;

/// <summary>The listeners Kestrel was told to open; after start they carry the bound ports (0 = any free port).</summary>
public sealed class ListenerEndpoints
{
    public ListenOptions? Mqtt { get; set; }

    public ListenOptions? Http { get; set; }

    public ListenOptions? MqttTls { get; set; }

    public ListenOptions? HttpTls { get; set; }

    public int MqttPort => Port(Mqtt);

    public int HttpPort => Port(Http);

    public int MqttTlsPort => Port(MqttTls);

    public int HttpTlsPort => Port(HttpTls);

    static int Port(ListenOptions? listen) => (listen?.EndPoint as IPEndPoint)?.Port ?? 0;
}
