using System.Net;

namespace Broker.Engine.Admission;

/// <summary>The address a connection comes from, as the limits key it: an IPv4 client on a dual-stack socket is its IPv4 address.</summary>
public static class SourceAddress
{
    public static IPAddress? Of(EndPoint? remote) => remote is IPEndPoint ip
        ? ip.Address.IsIPv4MappedToIPv6 ? ip.Address.MapToIPv4() : ip.Address
        : null;

    /// <inheritdoc cref="Of(EndPoint?)"/>
    public static IPAddress? Of(IPAddress? address) => address is { IsIPv4MappedToIPv6: true } ? address.MapToIPv4() : address;
}
