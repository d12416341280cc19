using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using System.Text;
using Broker.Ims.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;

namespace Broker.Ims.Identity;

/// <summary>What a token says about its bearer, or why it was refused (never the token itself).</summary>
public readonly record struct JwtIdentity(string? UserId, string? Role, string? Problem)
{
    public bool Succeeded => Problem is null;

    public static JwtIdentity Refused(string problem) => new(null, null, problem);
}

/// <summary>
/// Validates a JWT sent as the MQTT password (<c>Broker:Jwt</c>): HS256 with a shared secret or
/// RS256 with an RSA public key, <c>exp</c> required, <c>nbf</c>, and <c>iss</c> / <c>aud</c> when
/// configured. <c>sub</c> is the user id, the role claim the role. The app server that minted the
/// token vouches for the user: it need not be in <c>Broker:Users</c>.
/// </summary>
public sealed class JwtAuthenticator
{
    readonly JwtOptions _options;
    readonly JsonWebTokenHandler _handler = new() { MapInboundClaims = false };
    readonly TokenValidationParameters _parameters;
    readonly TimeProvider _time;

    public JwtAuthenticator(JwtOptions options, TimeProvider? time = null)
    {
        _options = options;
        SecurityKey key;
        string algorithm;
        if (!string.IsNullOrEmpty(options.SigningKey))
        {
            key = new SymmetricSecurityKey(Encoding.UTF8.GetBytes(options.SigningKey));
            algorithm = SecurityAlgorithms.HmacSha256;
        }
        else
        {
            var problem = TryLoadPublicKey(options.PublicKeyPath ?? "", out var rsa);
            key = rsa ?? throw new InvalidOperationException($"Broker:Jwt:PublicKeyPath {problem}");
            algorithm = SecurityAlgorithms.RsaSha256;
        }

        _parameters = new TokenValidationParameters
        {
            IssuerSigningKey = key,
            ValidAlgorithms = [algorithm],
            RequireSignedTokens = true,
            // exp and nbf are checked below, against the broker's clock (tests move it).
            ValidateLifetime = false,
            ValidateIssuer = !string.IsNullOrEmpty(options.Issuer),
            ValidIssuer = string.IsNullOrEmpty(options.Issuer) ? null : options.Issuer,
            ValidateAudience = !string.IsNullOrEmpty(options.Audience),
            ValidAudience = string.IsNullOrEmpty(options.Audience) ? null : options.Audience,
        };
        _time = time ?? TimeProvider.System;
    }

    /// <summary>
    /// Whether a password is a JWT in compact form: three dot-separated base64url parts whose first
    /// (the header) is a JSON object. Anything else is checked as a plain password.
    /// </summary>
    public static bool LooksLikeJwt(ReadOnlySpan<byte> password)
    {
        var first = password.IndexOf((byte)'.');
        if (first <= 0)
        {
            return false;
        }

        var rest = password[(first + 1)..];
        var second = rest.IndexOf((byte)'.');
        if (second <= 0 || rest[(second + 1)..].IndexOf((byte)'.') >= 0)
        {
            return false;
        }

        // A base64url JSON object starts with "ey" ("{" followed by '"' or whitespace).
        return password[0] == (byte)'e' && password[1] == (byte)'y'
            && IsBase64Url(password[..first]) && IsBase64Url(rest[..second]) && IsBase64Url(rest[(second + 1)..]);
    }

    static bool IsBase64Url(ReadOnlySpan<byte> part) => part.IndexOfAnyExcept(Base64UrlChars) < 0;

    static readonly System.Buffers.SearchValues<byte> Base64UrlChars =
        System.Buffers.SearchValues.Create("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_"u8);

    /// <summary>Validates <paramref name="token"/>; <paramref name="userName"/>, when given, must equal <c>sub</c>.</summary>
    public async ValueTask<JwtIdentity> ValidateAsync(byte[] token, string? userName)
    {
        TokenValidationResult result;
        try
        {
            result = await _handler.ValidateTokenAsync(Encoding.ASCII.GetString(token), _parameters).ConfigureAwait(false);
        }
        catch (Exception ex) when (ex is ArgumentException or SecurityTokenException)
        {
            return JwtIdentity.Refused(Describe(ex));
        }

        if (!result.IsValid)
        {
            return JwtIdentity.Refused(Describe(result.Exception));
        }

        var jwt = (JsonWebToken)result.SecurityToken;
        var now = _time.GetUtcNow().UtcDateTime;
        if (!jwt.TryGetPayloadValue<long>(JwtRegisteredClaimNames.Exp, out _))
        {
            return JwtIdentity.Refused("the token has no exp claim");
        }

        if (now > jwt.ValidTo + _options.ClockSkew)
        {
            return JwtIdentity.Refused("the token has expired (exp)");
        }

        if (jwt.TryGetPayloadValue<long>(JwtRegisteredClaimNames.Nbf, out _) && now + _options.ClockSkew < jwt.ValidFrom)
        {
            return JwtIdentity.Refused("the token is not valid yet (nbf)");
        }

        if (!jwt.TryGetPayloadValue<string>(JwtRegisteredClaimNames.Sub, out var sub) || string.IsNullOrEmpty(sub))
        {
            return JwtIdentity.Refused("the token has no sub claim");
        }

        if (!Identifiers.IsUserId(sub))
        {
            return JwtIdentity.Refused("the token's sub claim is not a valid user id (1-64 letters, digits, _, - or .)");
        }

        if (Identifiers.IsReserved(sub))
        {
            return JwtIdentity.Refused($"the token's sub claim \"{sub}\" is a reserved name");
        }

        if (!string.IsNullOrEmpty(userName) && !string.Equals(userName, sub, StringComparison.Ordinal))
        {
            return JwtIdentity.Refused("the user name does not match the token's sub claim");
        }

        var roles = jwt.Claims.Where(c => c.Type == _options.RoleClaim).Select(c => c.Value).ToList();
        var role = roles.Count == 0 ? Roles.User : roles[0];
        if (roles.Count > 1 || !Roles.IsKnown(role))
        {
            return JwtIdentity.Refused($"the token's {_options.RoleClaim} claim must be user, service or admin");
        }

        return new JwtIdentity(sub, role, null);
    }

    /// <summary>A reason for the log and the v5 reason string: the kind of failure, never the token or a claim it could leak.</summary>
    static string Describe(Exception? ex) => ex switch
    {
        SecurityTokenInvalidIssuerException => "the token's issuer (iss) is not Broker:Jwt:Issuer",
        SecurityTokenInvalidAudienceException => "the token's audience (aud) is not Broker:Jwt:Audience",
        SecurityTokenInvalidAlgorithmException => "the token is signed with another algorithm than the configured key's",
        SecurityTokenInvalidSignatureException => "the token's signature is invalid",
        SecurityTokenMalformedException or ArgumentException => "the token is malformed",
        _ => "the token is invalid",
    };

    /// <summary>
    /// Reads an RSA public key from a PEM file (<c>PUBLIC KEY</c>, <c>RSA PUBLIC KEY</c> or a
    /// <c>CERTIFICATE</c>). Returns null, or what is wrong with the file (for a message naming the key).
    /// </summary>
    public static string? TryLoadPublicKey(string path, out RsaSecurityKey? key)
    {
        key = null;
        if (!File.Exists(path))
        {
            return $"\"{path}\" does not exist";
        }

        string pem;
        try
        {
            pem = File.ReadAllText(path);
        }
        catch (Exception ex) when (ex is IOException or UnauthorizedAccessException)
        {
            return $"\"{path}\" cannot be read ({ex.GetType().Name})";
        }

        if (!PemEncoding.TryFind(pem, out var fields))
        {
            return $"\"{path}\" is not a PEM file";
        }

        var label = pem[fields.Label];
        try
        {
            RSA? rsa;
            switch (label)
            {
                case "PUBLIC KEY" or "RSA PUBLIC KEY":
                    rsa = RSA.Create();
                    rsa.ImportFromPem(pem);
                    break;
                case "CERTIFICATE":
                    using (var certificate = X509Certificate2.CreateFromPem(pem))
                    {
                        rsa = certificate.GetRSAPublicKey();
                    }

                    break;
                default:
                    return $"\"{path}\" holds a {label}, not an RSA public key (PUBLIC KEY, RSA PUBLIC KEY or CERTIFICATE)";
            }

            if (rsa is null)
            {
                return $"\"{path}\" holds no RSA public key";
            }

            key = new RsaSecurityKey(rsa);
            return null;
        }
        catch (CryptographicException)
        {
            return $"\"{path}\" holds no readable RSA public key";
        }
    }
}
