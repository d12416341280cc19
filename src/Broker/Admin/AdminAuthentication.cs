using System.Net.Http.Headers;
using System.Text;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Admin;

/// <summary>
/// The admin API's gate: HTTP Basic with a configured user's name and password (so <c>curl -u
/// admin:...</c> works), role <c>admin</c>. 401 without valid credentials, 403 for any other role.
/// </summary>
public sealed class AdminAuthentication(IUserDirectory users, PasswordVerifier passwords, ImsOptions options, TimeProvider time) : IEndpointFilter
{
    // Bearer tokens are accepted when JWT authentication is on (Broker:Jwt), with the same rules as for MQTT.
    readonly JwtAuthenticator? _jwt = options.Jwt.Enabled ? new JwtAuthenticator(options.Jwt, time) : null;

    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        var (name, role) = await IdentifyAsync(http.Request.Headers.Authorization);
        if (name is null)
        {
            http.Response.Headers.WWWAuthenticate = _jwt is null
                ? "Basic realm=\"ims-broker\", charset=\"UTF-8\""
                : "Basic realm=\"ims-broker\", charset=\"UTF-8\", Bearer realm=\"ims-broker\"";
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Credentials of an admin user are required (HTTP Basic, or a bearer JWT).");
        }

        if (role != Roles.Admin)
        {
            return Results.Problem(statusCode: StatusCodes.Status403Forbidden, title: $"User {name} has role {role}; the admin API needs role admin.");
        }

        http.Items[AdminApi.AdminUserKey] = name;
        return await next(context);
    }

    /// <summary>The user and role behind the Authorization header, or (null, null).</summary>
    async ValueTask<(string? Name, string? Role)> IdentifyAsync(string? header)
    {
        if (_jwt is not null && AuthenticationHeaderValue.TryParse(header, out var value)
            && "Bearer".Equals(value.Scheme, StringComparison.OrdinalIgnoreCase) && value.Parameter is { } token)
        {
            var identity = await _jwt.ValidateAsync(Encoding.UTF8.GetBytes(token), userName: null);
            return identity.Succeeded ? (identity.UserId, identity.Role ?? Roles.User) : (null, null);
        }

        return TryReadBasic(header, out var name, out var password)
            && users.TryGet(name, out var account)
            && passwords.Verify(account, Encoding.UTF8.GetBytes(password))
            ? (account.Name, account.Role)
            : (null, null);
    }

    static bool TryReadBasic(string? header, out string name, out string password)
    {
        name = password = "";
        if (!AuthenticationHeaderValue.TryParse(header, out var value) || !"Basic".Equals(value.Scheme, StringComparison.OrdinalIgnoreCase) || value.Parameter is null)
        {
            return false;
        }

        Span<byte> bytes = stackalloc byte[value.Parameter.Length];
        if (!Convert.TryFromBase64String(value.Parameter, bytes, out var written))
        {
            return false;
        }

        var text = Encoding.UTF8.GetString(bytes[..written]);
        var colon = text.IndexOf(':', StringComparison.Ordinal);
        if (colon <= 0)
        {
            return false;
        }

        name = text[..colon];
        password = text[(colon + 1)..];
        return true;
    }
}
