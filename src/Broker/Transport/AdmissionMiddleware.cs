using Broker.Engine.Admission;
using Microsoft.AspNetCore.Connections;

namespace Broker.Transport;

/// <summary>Puts <see cref="ConnectionAdmission"/> in front of a Kestrel listener: first thing after accept, before TLS or HTTP.</summary>
public static class AdmissionMiddleware
{
    public static IConnectionBuilder UseAdmission(this IConnectionBuilder listen, ConnectionAdmission admission) =>
        listen.Use(next => async connection =>
        {
            if (!admission.TryAdmit(connection.RemoteEndPoint))
            {
                return; // Kestrel closes a connection its middleware returns from without reading
            }

            try
            {
                await next(connection);
            }
            finally
            {
                admission.Release();
            }
        });
}
