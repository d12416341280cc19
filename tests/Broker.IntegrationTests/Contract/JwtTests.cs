using System.Security.Cryptography;
using System.Text;
using Broker.Configuration;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.Configuration;
using Microsoft.IdentityModel.JsonWebTokens;
using Microsoft.IdentityModel.Tokens;
using MQTTnet;
using MQTTnet.Formatter;
using MQTTnet.Protocol;

namespace Broker.IntegrationTests.Contract;

/// <summary>Broker:Jwt over real sockets: an app server mints a token, the client sends it as the MQTT password.</summary>
public sealed class JwtTests
{
    internal const string Secret = "the-app-servers-shared-secret-32+bytes";

    internal static void EnableJwt(Dictionary<string, string?> settings)
    {
        settings["Broker:Jwt:Enabled"] = "true";
        settings["Broker:Jwt:SigningKey"] = Secret;
    }

    /// <summary>What an app server does: sub = user id, role, exp.</summary>
    internal static string Mint(string sub, string? role = null, DateTimeOffset? expires = null, string secret = Secret)
    {
        var claims = new Dictionary<string, object> { ["sub"] = sub };
        if (role is not null)
        {
            claims["role"] = role;
        }

        var now = DateTime.UtcNow;
        var exp = (expires ?? DateTimeOffset.UtcNow.AddHours(1)).UtcDateTime;
        return new JsonWebTokenHandler { SetDefaultTimesOnTokenCreation = false }.CreateToken(new SecurityTokenDescriptor
        {
            Claims = claims,
            IssuedAt = exp < now ? exp.AddHours(-1) : now,
            Expires = exp,
            SigningCredentials = new SigningCredentials(new SymmetricSecurityKey(Encoding.UTF8.GetBytes(secret)), SecurityAlgorithms.HmacSha256),
        });
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311)]
    [InlineData(MqttProtocolVersion.V500)]
    public async Task MintedToken_Connects_PublishesToItsFeed_AndReceivesItsInbox(MqttProtocolVersion version)
    {
        // dave is in no user list: the token's signature vouches for him.
        await using var broker = await TestBroker.StartImsAsync(EnableJwt);
        await using var dave = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", version, password: Mint("dave"));
        await dave.SubscribeOkAsync("IMS/dave/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");
        await alice.SubscribeOkAsync("IMS/dave/status");

        await Expect.PublishAcceptedAsync(dave, "IMS/dave/status", "online");
        await alice.ExpectOnlyAsync("IMS/dave/status", "online");

        await Expect.PublishAcceptedAsync(alice, "IMS/dave/Inbox/Add/GFReq/alice", "be friends?");
        await dave.ExpectOnlyAsync("IMS/dave/Inbox/Add/GFReq/alice", "be friends?");

        // A token makes nobody somebody else.
        await Expect.PublishRefusedAsync(broker, dave, "IMS/alice/status", MqttClientPublishReasonCode.NotAuthorized);
    }

    [Fact]
    public async Task TokenWithAnEmptyUserName_Connects_AsItsSub()
    {
        // MQTTnet (like MQTT 3.1.1) sends no password without a user name; an empty one is enough.
        await using var broker = await TestBroker.StartImsAsync(EnableJwt);
        await using var dave = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@dave-laptop", configure: b => b.WithCredentials("", Encoding.ASCII.GetBytes(Mint("dave"))));

        await Expect.PublishAcceptedAsync(dave, "IMS/dave/status", "online");
    }

    [Fact]
    public async Task RoleClaim_GivesTheRole()
    {
        await using var broker = await TestBroker.StartImsAsync(EnableJwt);
        await using var bot = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@bot-1", "bot", password: Mint("bot", "service"));
        await using var dave = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", password: Mint("dave"));

        await Expect.PublishAcceptedAsync(bot, "IMS/System/announcements", "maintenance at noon");
        await Expect.PublishRefusedAsync(broker, dave, "IMS/System/announcements", MqttClientPublishReasonCode.NotAuthorized);
    }

    public static TheoryData<string, string> BadTokens => new()
    {
        { "expired", Mint("dave", expires: DateTimeOffset.UtcNow.AddMinutes(-5)) },
        { "wrong signature", Mint("dave", secret: "some-other-secret-that-is-32-bytes+") },
        { "sub is not the user name", Mint("alice") },
        { "unknown role", Mint("dave", "root") },
    };

    [Theory]
    [MemberData(nameof(BadTokens))]
    public async Task BadToken_IsRefused_AsBadUserNameOrPassword(string why, string token)
    {
        await using var broker = await TestBroker.StartImsAsync(EnableJwt);

        Assert.True(MqttConnectReturnCode.ConnectionRefusedBadUsernameOrPassword == await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", token), why);
        Assert.True(MqttClientConnectResultCode.BadUserNameOrPassword == await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", token), why);
    }

    [Fact]
    public async Task AfterExp_AReconnectIsRefused()
    {
        await using var broker = await TestBroker.StartImsAsync(EnableJwt, fakeClock: true);
        var token = Mint("dave", expires: broker.Clock!.GetUtcNow().AddMinutes(10));
        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", token));

        broker.Clock.Advance(TimeSpan.FromMinutes(11)); // past exp and the 30 s clock skew

        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", token));
    }

    [Fact]
    public async Task JwtOff_ATokenIsJustAWrongPassword()
    {
        await using var broker = await TestBroker.StartImsAsync();

        Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", Mint("dave")));
    }

    [Fact]
    public async Task JwtOn_PasswordUsersStillConnect()
    {
        await using var broker = await TestBroker.StartImsAsync(EnableJwt);

        Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"));
        Assert.Equal(MqttConnectReturnCode.ConnectionAccepted, await Connect.V311ReturnCodeAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"));
    }

    [Fact]
    public async Task Rs256_WithAPublicKeyPemFile()
    {
        using var rsa = RSA.Create(2048);
        var path = Path.Combine(Path.GetTempPath(), $"ims-jwt-{Guid.NewGuid():N}.pem");
        await File.WriteAllTextAsync(path, rsa.ExportSubjectPublicKeyInfoPem());
        try
        {
            await using var broker = await TestBroker.StartImsAsync(s =>
            {
                s["Broker:Jwt:Enabled"] = "true";
                s["Broker:Jwt:PublicKeyPath"] = path;
                s["Broker:Jwt:Issuer"] = "https://app.example";
            });
            var token = new JsonWebTokenHandler().CreateToken(new SecurityTokenDescriptor
            {
                Claims = new Dictionary<string, object> { ["sub"] = "dave" },
                Issuer = "https://app.example",
                Expires = DateTime.UtcNow.AddHours(1),
                SigningCredentials = new SigningCredentials(new RsaSecurityKey(rsa), SecurityAlgorithms.RsaSha256),
            });

            Assert.Equal(MqttClientConnectResultCode.Success, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", token));
            Assert.Equal(MqttClientConnectResultCode.BadUserNameOrPassword, await Connect.V5ResultAsync(broker.MqttPort, "GID_IMS@@@dave-phone", "dave", Mint("dave")));
        }
        finally
        {
            File.Delete(path);
        }
    }
}

/// <summary>Broker:Jwt:* and Broker:Sys:Roles are checked at start, with messages naming the key.</summary>
public sealed class JwtConfigurationTests
{
    static BrokerConfigurationException Refused(Action<Dictionary<string, string?>> configure)
    {
        var settings = new Dictionary<string, string?>();
        TestBroker.AddDemoUsers(settings);
        configure(settings);
        return Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()));
    }

    [Theory]
    [InlineData("Broker:Jwt:SigningKey", "too-short-secret", "Broker:Jwt:SigningKey must be at least 32 bytes")]
    [InlineData("Broker:Jwt:PublicKeyPath", "/nonexistent/jwt.pem", "Broker:Jwt:PublicKeyPath \"/nonexistent/jwt.pem\" does not exist")]
    [InlineData("Broker:Jwt:ClockSkew", "-00:00:10", "Broker:Jwt:ClockSkew")]
    [InlineData("Broker:Jwt:ClockSkew", "soon", "Broker:Jwt:ClockSkew")]
    [InlineData("Broker:Jwt:RoleClaim", " ", "Broker:Jwt:RoleClaim")]
    [InlineData("Broker:Jwt:Issuer", " ", "Broker:Jwt:Issuer")]
    [InlineData("Broker:Jwt:Enabled", "perhaps", "Broker:Jwt:Enabled")]
    public void BadJwtValue_FailsWithItsKey(string key, string value, string expected)
    {
        var ex = Refused(s =>
        {
            s["Broker:Jwt:Enabled"] = "true";
            if (key != "Broker:Jwt:SigningKey" && key != "Broker:Jwt:PublicKeyPath")
            {
                s["Broker:Jwt:SigningKey"] = JwtTests.Secret;
            }

            s[key] = value;
        });

        Assert.Contains(ex.Errors, e => e.Contains(expected, StringComparison.Ordinal));
    }

    [Fact]
    public void ShortSigningKey_IsNotEchoed()
    {
        var ex = Refused(s => (s["Broker:Jwt:Enabled"], s["Broker:Jwt:SigningKey"]) = ("true", "hunter2-secret"));

        Assert.DoesNotContain(ex.Errors, e => e.Contains("hunter2", StringComparison.Ordinal));
    }

    [Fact]
    public void Enabled_WithoutAKey_NamesBothKeys()
    {
        var ex = Refused(s => s["Broker:Jwt:Enabled"] = "true");

        Assert.Contains(ex.Errors, e => e.Contains("Broker:Jwt:SigningKey", StringComparison.Ordinal) && e.Contains("Broker:Jwt:PublicKeyPath", StringComparison.Ordinal));
    }

    [Fact]
    public void PublicKeyPath_NotAPublicKey_IsRefused()
    {
        var path = Path.GetTempFileName();
        try
        {
            using var rsa = RSA.Create(2048);
            File.WriteAllText(path, rsa.ExportPkcs8PrivateKeyPem());

            var ex = Refused(s => (s["Broker:Jwt:Enabled"], s["Broker:Jwt:PublicKeyPath"]) = ("true", path));

            Assert.Contains(ex.Errors, e => e.StartsWith("Broker:Jwt:PublicKeyPath", StringComparison.Ordinal) && e.Contains("not an RSA public key", StringComparison.Ordinal));
        }
        finally
        {
            File.Delete(path);
        }
    }

    [Fact]
    public void SysRoles_Unknown_IsRefused() =>
        Assert.Contains(Refused(s => s["Broker:Sys:Roles:0"] = "root").Errors, e => e.Contains("Broker:Sys:Roles:0", StringComparison.Ordinal));

    [Fact]
    public void Defaults()
    {
        var ims = BrokerConfiguration.Load(new ConfigurationBuilder().Build()).Ims;

        Assert.False(ims.Jwt.Enabled);
        Assert.Equal("role", ims.Jwt.RoleClaim);
        Assert.Equal(TimeSpan.FromSeconds(30), ims.Jwt.ClockSkew);
        Assert.Equal(["admin", "service"], ims.Sys.Roles);
    }

    [Fact]
    public void Disabled_KeysAreNotChecked()
    {
        var ims = BrokerConfiguration.Load(new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?> { ["Broker:Jwt:SigningKey"] = "short" }).Build()).Ims;

        Assert.False(ims.Jwt.Enabled);
    }
}
