using System.Net;

namespace Broker.Engine.Admission;

/// <summary>The address a connection comes from, as the limits key it: an IPv4 client on a dual-stack socket is its IPv4 address.</summary>
internal static class SourceAddress
{
    public static IPAddress? Of(EndPoint? remote) => remote is IPEndPoint ip
        ? ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address
        : null;
}
