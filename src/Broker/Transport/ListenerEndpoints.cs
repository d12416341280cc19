using System.Net;
using Microsoft.AspNetCore.Server.Kestrel.Core;

namespace Broker.Transport;

/// <summary>The listeners Kestrel was told to open; after start they carry the bound ports (0 = any free port).</summary>
public sealed class ListenerEndpoints
{
    public ListenOptions? Mqtt { get; set; }

    public ListenOptions? Http { get; set; }

    public int MqttPort => (Mqtt?.EndPoint as IPEndPoint)?.Port ?? 0;

    public int HttpPort => (Http?.EndPoint as IPEndPoint)?.Port ?? 0;
}
