namespace Broker.Ims.Options;

/// <summary>
/// <c>Broker:Jwt</c>: an app server mints a JWT and the client sends it as the MQTT password
/// (docs/conventions.md, "Authenticating with a JWT"). Off by default.
/// </summary>
public sealed class JwtOptions
{
    public const int MinSigningKeyBytes = 32;

    public bool Enabled { get; set; }

    /// <summary>When set, the token's <c>iss</c> must equal it.</summary>
    public string? Issuer { get; set; }

    /// <summary>When set, the token's <c>aud</c> must contain it.</summary>
    public string? Audience { get; set; }

    /// <summary>HS256 shared secret, at least <see cref="MinSigningKeyBytes"/> bytes as UTF-8. Never logged.</summary>
    public string? SigningKey { get; set; }

    /// <summary>PEM file with an RSA public key (SubjectPublicKeyInfo or PKCS#1, or a certificate): RS256.</summary>
    public string? PublicKeyPath { get; set; }

    /// <summary>The claim that carries the role (user, service, admin); missing means user.</summary>
    public string RoleClaim { get; set; } = "role";

    /// <summary>Tolerance for exp and nbf between the app server's clock and the broker's.</summary>
    public TimeSpan ClockSkew { get; set; } = TimeSpan.FromSeconds(30);
}

/// <summary><c>Broker:Sys</c>: who may read the <c>$SYS/...</c> topics.</summary>
public sealed class SysOptions
{
    /// <summary>Roles that may subscribe to and receive <c>$SYS/...</c> (default ["admin", "service"]).</summary>
    public List<string> Roles { get; set; } = [];
}
