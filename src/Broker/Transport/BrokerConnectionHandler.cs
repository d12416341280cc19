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

        // Over WebSocket the peer's address is on the HTTP request that was upgraded.
        var http = connection.Features.Get<IHttpContextFeature>()?.HttpContext;
        var remote = connection.RemoteEndPoint
            ?? (http?.Connection.RemoteIpAddress is { } ip ? new System.Net.IPEndPoint(ip, http.Connection.RemotePort) : null);
        return engine.HandleConnectionAsync(
            connection.Transport,
            new ConnectionMetadata(connection.ConnectionId, remote, http is not null ? "websocket" : "tcp"),
            connection.ConnectionClosed);
    }
}
