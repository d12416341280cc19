using Broker.Engine;
using Broker.Engine.Connections;
using Microsoft.AspNetCore.Connections;
using Microsoft.AspNetCore.Connections.Features;
using Microsoft.AspNetCore.Http.Connections.Features;

namespace Broker.Transport;

/// <summary>Kestrel hands us each connection (TCP, or WebSocket through /mqtt); the engine speaks MQTT on its pipe.</summary>
public sealed class BrokerConnectionHandler(BrokerEngine engine) : ConnectionHandler
{
    public override Task OnConnectedAsync(ConnectionContext connection)
    {
        // MQTT is binary: WebSocket frames must be binary too, or a client drops the first non-UTF-8 byte.
        if (connection.Features.Get<ITransferFormatFeature>() is { } format)
        {
            format.ActiveFormat = TransferFormat.Binary;
        }

        var transport = connection.Features.Get<IHttpContextFeature>() is not null ? "websocket" : "tcp";
        return engine.HandleConnectionAsync(
            connection.Transport,
            new ConnectionMetadata(connection.ConnectionId, connection.RemoteEndPoint, transport),
            connection.ConnectionClosed);
    }
}
