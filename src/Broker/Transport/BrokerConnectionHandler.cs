using Broker.Engine;
using Broker.Engine.Connections;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Http.Connections.Features;

namespace Broker.Transport;

/// <summary>Kestrel hands us each connection (TCP, or WebSocket through /mqtt); the engine speaks MQTT on its pipe.</summary>
public sealed class BrokerConnectionHandler(BrokerEngine engine) : ConnectionHandler
{
    public override Task OnConnectedAsync(ConnectionContext connection)
    {
        var transport = connection.Features.Get<IHttpContextFeature>() is not null ? "websocket" : "tcp";
        return engine.HandleConnectionAsync(
            connection.Transport,
            new ConnectionMetadata(connection.ConnectionId, connection.RemoteEndPoint, transport),
            connection.ConnectionClosed);
    }
}
