using System.Net.Http.Headers;
using System.Text;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Admin;

/// <summary>
/// The admin API's gate: HTTP Basic with a configured user's name and password (so <c>curl -u
/// admin:...</c> works), role <c>admin</c>. 401 without valid credentials, 403 for any other role.
/// </summary>
public sealed class AdminAuthentication(IUserDirectory users, PasswordVerifier passwords) : IEndpointFilter
{
    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        if (!TryReadBasic(http.Request.Headers.Authorization, out var name, out var password)
            || !users.TryGet(name, out var account)
            || !passwords.Verify(account, Encoding.UTF8.GetBytes(password)))
        {
            http.Response.Headers.WWWAuthenticate = "Basic realm=\"ims-broker\", charset=\"UTF-8\"";
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Credentials of an admin user are required (HTTP Basic).");
        }

        if (account.Role != Roles.Admin)
        {
            return Results.Problem(statusCode: StatusCodes.Status403Forbidden, title: $"User {account.Name} has role {account.Role}; the admin API needs role admin.");
        }

        http.Items[AdminApi.AdminUserKey] = account.Name;
        return await next(context);
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
