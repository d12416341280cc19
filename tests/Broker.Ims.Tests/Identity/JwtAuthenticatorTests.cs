using System.Security.Cryptography;
using System.Text;
using Broker.Engine.Policy;
using Broker.Engine.Store;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Options;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using MQTTnet.Protocol;

namespace Broker.Ims.Tests.Identity;

/// <summary>Broker:Jwt: tokens minted the way an app server would, checked by the authenticator and by the policy.</summary>
public sealed class JwtAuthenticatorTests
{
    const string Secret = "an-app-server-secret-of-32-bytes!";

    static readonly DateTime Now = DateTime.UtcNow;

    static JwtOptions Hs256(Action<JwtOptions>? configure = null)
    {
        var options = new JwtOptions { Enabled = true, SigningKey = Secret };
        configure?.Invoke(options);
        return options;
    }

    /// <summary>An HS256 (or given key) token with sub, optional role, exp in an hour unless told.</summary>
    internal static string Mint(string? sub = "dave", string? role = null, SecurityKey? key = null, string algorithm = SecurityAlgorithms.HmacSha256,
        DateTime? expires = null, DateTime? notBefore = null, string? issuer = null, string? audience = null, Dictionary<string, object>? claims = null)
    {
        var payload = new Dictionary<string, object>(claims ?? []);
        if (sub is not null)
        {
            payload["sub"] = sub;
        }

        if (role is not null)
        {
            payload["role"] = role;
        }

        var handler = new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false };
        var descriptor = new SecurityTokenDescriptor
        {
            Claims = payload,
            SigningCredentials = new SigningCredentials(key ?? new SymmetricSecurityKey(Encoding.UTF8.GetBytes(Secret)), algorithm),
            Issuer = issuer,
            Audience = audience,
            IssuedAt = Now,
            Expires = expires ?? Now.AddHours(1),
            NotBefore = notBefore,
        };
        return handler.CreateToken(descriptor);
    }

    static ValueTask<JwtIdentity> Check(string token, JwtOptions? options = null, string? userName = null, TimeProvider? time = null) =>
        new JwtAuthenticator(options ?? Hs256(), time).ValidateAsync(Encoding.ASCII.GetBytes(token), userName);

    [Fact]
    public async Task ValidToken_GivesSubAndRole()
    {
        var identity = await Check(Mint("dave", "service"));

        Assert.Null(identity.Problem);
        Assert.Equal(("dave", Roles.Service), (identity.UserId, identity.Role));
    }

    [Fact]
    public async Task MissingRole_IsUser() =>
        Assert.Equal(Roles.User, (await Check(Mint("dave"))).Role);

    [Fact]
    public async Task RoleClaim_IsConfigurable()
    {
        var token = Mint("dave", claims: new() { ["ims_role"] = "admin" });

        var identity = await Check(token, Hs256(o => o.RoleClaim = "ims_role"));

        Assert.Equal(Roles.Admin, identity.Role);
    }

    [Fact]
    public async Task Expired_IsRefused()
    {
        var identity = await Check(Mint(expires: Now.AddMinutes(-5), notBefore: Now.AddHours(-1)));

        Assert.Equal("the token has expired (exp)", identity.Problem);
    }

    [Fact]
    public async Task Expiry_HonoursClockSkewAndTheBrokersClock()
    {
        var token = Mint(expires: Now.AddMinutes(10));
        var clock = new FixedClock(Now.AddMinutes(10).AddSeconds(20));

        Assert.True((await Check(token, time: clock)).Succeeded);           // within the 30 s skew
        clock.Now = Now.AddMinutes(10).AddSeconds(31);
        Assert.Contains("expired", (await Check(token, time: clock)).Problem);
    }

    [Fact]
    public async Task NotYetValid_IsRefused() =>
        Assert.Contains("nbf", (await Check(Mint(notBefore: Now.AddMinutes(5), expires: Now.AddHours(1)))).Problem);

    [Fact]
    public async Task NoExp_IsRefused()
    {
        var handler = new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false };
        var token = handler.CreateToken("""{"sub":"dave"}""", new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(Secret)), SecurityAlgorithms.HmacSha256));

        Assert.Equal("the token has no exp claim", (await Check(token)).Problem);
    }

    [Fact]
    public async Task WrongSignature_IsRefused()
    {
        var token = Mint(key: new SymmetricSecurityKey(Encoding.UTF8.GetBytes("another-secret-that-is-32-bytes-long!")));

        Assert.Equal("the token's signature is invalid", (await Check(token)).Problem);
    }

    [Fact]
    public async Task TamperedPayload_IsRefused()
    {
        var parts = Mint("dave", "user").Split('.');
        var forged = Base64UrlEncoder.Encode($$"""{"sub":"dave","role":"admin","exp":{{new DateTimeOffset(Now.AddHours(1)).ToUnixTimeSeconds()}}}""");

        Assert.Equal("the token's signature is invalid", (await Check($"{parts[0]}.{forged}.{parts[2]}")).Problem);
    }

    [Fact]
    public async Task UnsignedToken_IsRefused()
    {
        var header = Base64UrlEncoder.Encode("""{"alg":"none","typ":"JWT"}""");
        var payload = Base64UrlEncoder.Encode($$"""{"sub":"dave","exp":{{new DateTimeOffset(Now.AddHours(1)).ToUnixTimeSeconds()}}}""");

        Assert.False((await Check($"{header}.{payload}.")).Succeeded);
    }

    [Theory]
    [InlineData("https://app.example", null, "https://evil.example", null, "issuer")]
    [InlineData(null, "ims-broker", null, "other-api", "audience")]
    [InlineData("https://app.example", null, null, null, "issuer")]
    public async Task WrongIssuerOrAudience_IsRefused(string? wantIssuer, string? wantAudience, string? issuer, string? audience, string problem)
    {
        var token = Mint(issuer: issuer, audience: audience);

        var identity = await Check(token, Hs256(o => (o.Issuer, o.Audience) = (wantIssuer, wantAudience)));

        Assert.Contains(problem, identity.Problem);
    }

    [Fact]
    public async Task RightIssuerAndAudience_IsAccepted()
    {
        var token = Mint(issuer: "https://app.example", audience: "ims-broker");

        var identity = await Check(token, Hs256(o => (o.Issuer, o.Audience) = ("https://app.example", "ims-broker")));

        Assert.True(identity.Succeeded, identity.Problem);
    }

    [Fact]
    public async Task UserName_MustEqualSub()
    {
        Assert.True((await Check(Mint("dave"), userName: "dave")).Succeeded);
        Assert.Equal("the user name does not match the token's sub claim", (await Check(Mint("dave"), userName: "alice")).Problem);
    }

    [Theory]
    [InlineData(null, "no sub")]
    [InlineData("a/b", "not a valid user id")]
    [InlineData("p2p", "reserved")]
    [InlineData("System", "reserved")]
    public async Task BadSub_IsRefused(string? sub, string problem) =>
        Assert.Contains(problem, (await Check(Mint(sub))).Problem);

    [Theory]
    [InlineData("root")]
    [InlineData("Admin")]
    [InlineData("")]
    public async Task UnknownRole_IsRefused(string role) =>
        Assert.Contains("role claim must be user, service or admin", (await Check(Mint("dave", role))).Problem);

    [Fact]
    public async Task Rs256_WithAPublicKeyPemFile()
    {
        using var rsa = RSA.Create(2048);
        var path = Path.Combine(Path.GetTempPath(), $"jwt-{Guid.NewGuid():N}.pem");
        await File.WriteAllTextAsync(path, rsa.ExportSubjectPublicKeyInfoPem());
        try
        {
            var options = new JwtOptions { Enabled = true, PublicKeyPath = path };
            var token = Mint("dave", "admin", new RsaSecurityKey(rsa), SecurityAlgorithms.RsaSha256);

            var identity = await Check(token, options);

            Assert.True(identity.Succeeded, identity.Problem);
            Assert.Equal(("dave", Roles.Admin), (identity.UserId, identity.Role));

            // Another key pair, or an HS256 token made with the public key as the secret: refused.
            using var other = RSA.Create(2048);
            Assert.Equal("the token's signature is invalid", (await Check(Mint(key: new RsaSecurityKey(other), algorithm: SecurityAlgorithms.RsaSha256), options)).Problem);
            var confused = Mint(key: new SymmetricSecurityKey(Encoding.UTF8.GetBytes(rsa.ExportSubjectPublicKeyInfoPem())));
            Assert.False((await Check(confused, options)).Succeeded);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void TryLoadPublicKey_SaysWhatIsWrong()
    {
        Assert.Contains("does not exist", JwtAuthenticator.TryLoadPublicKey("/nonexistent/key.pem", out _));
        using var rsa = RSA.Create(2048);
        var path = Path.GetTempFileName();
        try
        {
            File.WriteAllText(path, "not a pem");
            Assert.Contains("is not a PEM file", JwtAuthenticator.TryLoadPublicKey(path, out _));
            File.WriteAllText(path, rsa.ExportPkcs8PrivateKeyPem());
            Assert.Contains("holds a PRIVATE KEY", JwtAuthenticator.TryLoadPublicKey(path, out _));
            File.WriteAllText(path, rsa.ExportRSAPublicKeyPem());
            Assert.Null(JwtAuthenticator.TryLoadPublicKey(path, out var key));
            Assert.NotNull(key);
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Theory]
    [InlineData("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJkYXZlIn0.c2ln", true)]
    [InlineData("eyJhbGciOiJub25lIn0.eyJzdWIiOiJkYXZlIn0.", true)]
    [InlineData("alice-pass", false)]
    [InlineData("my.pass.word", false)]
    [InlineData("eyJ.a.b.c", false)]
    [InlineData("eyJhbGc.eyJ=.c2ln", false)]
    [InlineData("ey..c2ln", false)]
    public void LooksLikeJwt(string password, bool expected) =>
        Assert.Equal(expected, JwtAuthenticator.LooksLikeJwt(Encoding.UTF8.GetBytes(password)));

    // --- through the policy ---

    static ImsPolicy Policy(Action<ImsOptions>? configure = null)
    {
        var options = new ImsOptions { Jwt = Hs256() };
        options.Users.Add(new UserOptions { Name = "alice", PasswordHash = PasswordVerifier.Hash("alice-pass") });
        configure?.Invoke(options);
        ImsOptionsDefaults.Apply(options);
        return new ImsPolicy(
            options,
            new UserDirectory(options.Users.Select(u => new UserAccount(u.Name, u.PasswordHash, u.Role))),
            new GroupDirectory([KeyValuePair.Create("Group123", (IEnumerable<string>)["alice"])]),
            new PasswordVerifier(),
            new InMemoryBrokerStore());
    }

    static async Task<AuthenticationResult> Connect(ImsPolicy policy, string? user, string password, string clientId = "GID_IMS@@@dave-phone") =>
        await policy.AuthenticateAsync(new ConnectRequest { ClientId = clientId, UserName = user, Password = Encoding.UTF8.GetBytes(password) }, default);

    [Fact]
    public async Task Policy_TokenConnects_WithOrWithoutUserName()
    {
        var policy = Policy();

        var named = await Connect(policy, "dave", Mint("dave", "service"));
        var unnamed = await Connect(policy, null, Mint("dave"));

        Assert.Equal(("dave", Roles.Service), (named.Principal?.UserId, named.Principal?.Role));
        Assert.Equal(("dave", Roles.User), (unnamed.Principal?.UserId, unnamed.Principal?.Role));
    }

    [Fact]
    public async Task Policy_BadToken_IsBadUserNameOrPassword_AndTheReasonHasNoToken()
    {
        var policy = Policy();
        var token = Mint(expires: Now.AddMinutes(-5), notBefore: Now.AddHours(-1));

        var result = await Connect(policy, "dave", token);

        Assert.False(result.Succeeded);
        Assert.Equal(MqttConnectReasonCode.BadUserNameOrPassword, result.ReasonCode);
        Assert.Equal("JWT refused: the token has expired (exp)", result.ReasonText);
        Assert.DoesNotContain(token.Split('.')[2], result.ReasonText);
    }

    [Theory]
    [InlineData("alice", "dave")]   // user name is not sub
    [InlineData("dave", "root")]    // unknown role
    public async Task Policy_SubMismatchOrBadRole_IsRefused(string userName, string role)
    {
        var result = await Connect(Policy(), userName, Mint("dave", role == "root" ? role : null));

        Assert.Equal(MqttConnectReasonCode.BadUserNameOrPassword, result.ReasonCode);
    }

    [Fact]
    public async Task Policy_SubNamingAGroup_IsRefused() =>
        Assert.Equal(MqttConnectReasonCode.BadUserNameOrPassword, (await Connect(Policy(), null, Mint("Group123"))).ReasonCode);

    [Fact]
    public async Task Policy_PasswordsStillWork_AndTokensAreIgnoredWhenJwtIsOff()
    {
        Assert.True((await Connect(Policy(), "alice", "alice-pass", "GID_IMS@@@alice-phone")).Succeeded);

        var off = Policy(o => o.Jwt.Enabled = false);
        Assert.False((await Connect(off, "dave", Mint("dave"))).Succeeded);
        Assert.Equal(MqttConnectReasonCode.BadUserNameOrPassword, (await Connect(off, "alice", Mint("alice"), "GID_IMS@@@alice-phone")).ReasonCode);
    }

    [Fact]
    public async Task Policy_AJwtUser_IsKnownToTheAclOnceConnected()
    {
        var policy = Policy();
        var alice = (await Connect(policy, "alice", "alice-pass", "GID_IMS@@@alice-phone")).Principal!;
        Assert.Equal(PolicyDecision.NotAuthorized, policy.AuthorizePublish(alice, "IMS/dave/Inbox/alice"));

        var dave = (await Connect(policy, "dave", Mint("dave"))).Principal!;

        Assert.Equal(PolicyDecision.Allow, policy.AuthorizePublish(alice, "IMS/dave/Inbox/alice"));
        Assert.Equal(PolicyDecision.Allow, policy.AuthorizePublish(dave, "IMS/dave/status"));
        Assert.Equal(PolicyDecision.Allow, policy.AuthorizeSubscribe(alice, "IMS/dave/#"));
        Assert.True(policy.CanRead(dave, new Broker.Engine.Routing.BrokerMessage { Topic = "IMS/dave/Inbox/alice" }));
        Assert.False(policy.CanRead(alice, new Broker.Engine.Routing.BrokerMessage { Topic = "IMS/dave/Inbox/alice" }));
    }

    [Theory]
    [InlineData(Roles.User, false)]
    [InlineData(Roles.Service, true)]
    [InlineData(Roles.Admin, true)]
    public void Sys_IsReadableByTheConfiguredRoles(string role, bool allowed)
    {
        var policy = Policy();
        var who = new ClientPrincipal("GID_IMS@@@x", "x", role);

        Assert.Equal(allowed ? PolicyDecision.Allow : PolicyDecision.NotAuthorized, policy.AuthorizeSubscribe(who, "$SYS/#"));
        Assert.Equal(allowed, policy.CanRead(who, new Broker.Engine.Routing.BrokerMessage { Topic = "$SYS/broker/uptime" }));
    }

    [Fact]
    public void Sys_RolesAreConfigurable_AndOpenInPlainModeWithoutRules()
    {
        var user = new ClientPrincipal("x", "x", Roles.User);
        var service = new ClientPrincipal("y", "y", Roles.Service);

        var usersToo = Policy(o => o.Sys.Roles.AddRange([Roles.User]));
        Assert.True(usersToo.CanRead(user, new Broker.Engine.Routing.BrokerMessage { Topic = "$SYS/broker/uptime" }));
        Assert.False(usersToo.CanRead(service, new Broker.Engine.Routing.BrokerMessage { Topic = "$SYS/broker/uptime" }));

        var plain = Policy(o => o.Conventions.Enabled = false);
        Assert.Equal(PolicyDecision.Allow, plain.AuthorizeSubscribe(user, "$SYS/#"));
    }

    sealed class FixedClock(DateTime now) : TimeProvider
    {
        public DateTime Now { get; set; } = now;

        public override DateTimeOffset GetUtcNow() => new(Now, TimeSpan.Zero);
    }
}
