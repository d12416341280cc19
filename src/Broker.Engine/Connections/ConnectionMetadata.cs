using System.Net;

namespace Broker.Engine.Connections;

/// <summary>What the transport knows about a connection; the engine needs nothing else from it.</summary>
public sealed record ConnectionMetadata(string ConnectionId, EndPoint? RemoteEndPoint, string Transport);
