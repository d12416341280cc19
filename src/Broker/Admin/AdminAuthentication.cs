using System.Net.Http.Headers;
using System.Text;
using Broker.Engine;
using Broker.Engine.Admission;
using Broker.Ims.Identity;
using Broker.Ims.Options;

namespace Broker.Admin;

/// <summary>
/// The admin API's gate: HTTP Basic with a configured user's name and password (so <c>curl -u
/// admin:...</c> works), role <c>admin</c>. 401 without valid credentials, 403 for any other role.
/// Every check goes through the engine's <see cref="LoginThrottle"/> and the password hash through the
/// <see cref="PasswordCheckGate"/> (via <see cref="PasswordVerifier.VerifyAsync"/>), the same instances as
/// MQTT CONNECT: failures are counted and delayed with the MQTT ones, and a full gate is 503 with Retry-After.
/// </summary>
public sealed class AdminAuthentication(IUserDirectory users, PasswordVerifier passwords, BrokerEngine engine, ImsOptions options, TimeProvider time) : IEndpointFilter
{
    // Bearer tokens are accepted when JWT authentication is on (Broker:Jwt), with the same rules as for MQTT.
    readonly JwtAuthenticator? _jwt = options.Jwt.Enabled ? new JwtAuthenticator(options.Jwt, time) : null;

    /// <summary>Who the Authorization header names; <see cref="Busy"/>: not checked, no place at the password check gate.</summary>
    readonly record struct Login(string? Name, string? Role, bool Busy)
    {
        public static readonly Login Refused = new(null, null, false);

        public bool Failed => Name is null && !Busy;
    }

    public async ValueTask<object?> InvokeAsync(EndpointFilterInvocationContext context, EndpointFilterDelegate next)
    {
        var http = context.HttpContext;
        string? header = http.Request.Headers.Authorization;
        var source = SourceAddress.Of(http.Connection.RemoteIpAddress);

        // Any Authorization header is an attempt: the source's penalty applies before it is looked at, and a
        // refusal is a failed login, counted (and held back) with those over MQTT. No header: nothing to check.
        var credentials = !string.IsNullOrEmpty(header);
        var login = await engine.Logins.CheckAsync(source, TryReadBasic(header, out var basicName, out _) ? basicName : null,
            credentials, () => IdentifyAsync(header, http.RequestAborted), l => credentials && l.Failed);

        if (login.Busy)
        {
            // Says nothing about the password, like MQTT's server busy; the client may try again shortly.
            http.Response.Headers.RetryAfter = "1";
            return Results.Problem(statusCode: StatusCodes.Status503ServiceUnavailable, title: "Too many password checks at once (Broker:Limits:MaxConcurrentPasswordChecks); try again later.");
        }

        if (login.Name is null)
        {
            http.Response.Headers.WWWAuthenticate = _jwt is null
                ? "Basic realm=\"ims-broker\", charset=\"UTF-8\""
                : "Basic realm=\"ims-broker\", charset=\"UTF-8\", Bearer realm=\"ims-broker\"";
            return Results.Problem(statusCode: StatusCodes.Status401Unauthorized, title: "Credentials of an admin user are required (HTTP Basic, or a bearer JWT).");
        }

        if (login.Role != Roles.Admin)
        {
            return Results.Problem(statusCode: StatusCodes.Status403Forbidden, title: $"User {login.Name} has role {login.Role}; the admin API needs role admin.");
        }

        http.Items[AdminApi.AdminUserKey] = login.Name;
        return await next(context);
    }

    /// <summary>The user and role behind the Authorization header, <see cref="Login.Refused"/>, or busy.</summary>
    async Task<Login> IdentifyAsync(string? header, CancellationToken cancellationToken)
    {
        if (_jwt is not null && AuthenticationHeaderValue.TryParse(header, out var value)
            && "Bearer".Equals(value.Scheme, StringComparison.OrdinalIgnoreCase) && value.Parameter is { } token)
        {
            var identity = await _jwt.ValidateAsync(Encoding.UTF8.GetBytes(token), userName: null);
            return identity.Succeeded ? new Login(identity.UserId, identity.Role ?? Roles.User, false) : Login.Refused;
        }

        if (!TryReadBasic(header, out var name, out var password) || !users.TryGet(name, out var account))
        {
            return Login.Refused;
        }

        // A remembered password answers at once; a hash needs a place at the gate shared with MQTT CONNECT.
        return await passwords.VerifyAsync(account, Encoding.UTF8.GetBytes(password), cancellationToken).ConfigureAwait(false) switch
        {
            PasswordCheck.Valid => new Login(account.Name, account.Role, false),
            PasswordCheck.Busy => new Login(null, null, true),
            _ => Login.Refused,
        };
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
