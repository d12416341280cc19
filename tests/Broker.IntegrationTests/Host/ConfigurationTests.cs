using Broker.Configuration;
using Broker.Ims.Identity;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.Configuration;

namespace Broker.IntegrationTests.Host;

/// <summary>A bad setting stops the start with a message naming its key (contract §9).</summary>
public sealed class ConfigurationTests
{
    [Theory]
    [InlineData("Broker:Mqtt:Port", "70000", "Broker:Mqtt:Port must be between 0 and 65535")]
    [InlineData("Broker:Mqtt:Port", "abc", "Broker:Mqtt:Port")]
    [InlineData("Broker:Http:Port", "-1", "Broker:Http:Port")]
    [InlineData("Broker:Mqtt:MaxPacketSize", "10", "Broker:Mqtt:MaxPacketSize")]
    [InlineData("Broker:Mqtt:ConnectTimeout", "soon", "Broker:Mqtt:ConnectTimeout")]
    [InlineData("Broker:MaxQueuedMessages", "0", "Broker:MaxQueuedMessages")]
    [InlineData("Broker:Limits:MaxTopicLevels", "0", "Broker:Limits:MaxTopicLevels")]
    [InlineData("Broker:ParentTopics:0", "IMS/chat", "Broker:ParentTopics:0")]
    [InlineData("Broker:GroupIds:0", "IMS", "Broker:GroupIds:0")]
    [InlineData("Broker:OfflineP2PTtl", "-01:00:00", "Broker:OfflineP2PTtl")]
    [InlineData("Broker:Store:CommitDelay", "00:00:01", "Broker:Store:CommitDelay")]
    [InlineData("Broker:Store:Type", "postgres", "Broker:Store:Type must be sqlite or memory")] // host's StoreOptions
    [InlineData("Broker:Store:MaxPendingWrites", "5", "Broker:Store:MaxPendingWrites must be between 100 and 100000000")]
    [InlineData("Broker:Store:Synchronous", "off", "Broker:Store:Synchronous must be full or normal")] // SqliteStoreOptions
    [InlineData("Broker:DataPath", "", "Broker:DataPath must not be empty")]
    [InlineData("Broker:Mqtt:Transport", "libuv", "Broker:Mqtt:Transport must be sockets or kestrel")]
    [InlineData("Broker:Memory:IdleCollect", "00:00:00.500", "Broker:Memory:IdleCollect must be 00:00:00 (off) or between 00:00:01 and 01:00:00")]
    [InlineData("Broker:Memory:IdleCollect", "often", "Broker:Memory:IdleCollect must be 00:00:00 (off)")]
    [InlineData("Broker:Conventions:Enabled", "maybe", "Broker:Conventions:Enabled")]
    [InlineData("Broker:Acl:0:Topic", "%p/%x/#", "Broker:Acl:0:Topic")]
    [InlineData("Broker:Acl:0:Roles:0", "root", "Broker:Acl:0:Roles")]
    [InlineData("Broker:Mqtt:Host", "localhost", "Broker:Mqtt:Host")]
    [InlineData("Broker:Acl:0:Access", "fly", "Broker:Acl:0:Access")]
    [InlineData("Broker:Acl:0:Permission", "maybe", "Broker:Acl:0:Permission")]
    [InlineData("Broker:Users:0:Name", "p2p", "Broker:Users:0:Name")]
    [InlineData("Broker:Users:0:Name", "bad/name", "Broker:Users:0:Name")]
    [InlineData("Broker:Users:0:Role", "root", "Broker:Users:0:Role")]
    [InlineData("Broker:Groups:0:Id", "alice", "Broker:Groups:0:Id")] // a user already has that id
    [InlineData("Broker:Groups:0:Members:0", "a b", "Broker:Groups:0:Members:0")]
    [InlineData("Broker:Limits:ConnectRatePerSource", "-1", "Broker:Limits:ConnectRatePerSource must be between 0 and 1000000")]
    [InlineData("Broker:Limits:ConnectBurstPerSource", "0", "Broker:Limits:ConnectBurstPerSource must be between 1 and 1000000")]
    [InlineData("Broker:Limits:MaxConcurrentPasswordChecks", "0", "Broker:Limits:MaxConcurrentPasswordChecks must be between 1 and 1024")]
    [InlineData("Broker:Limits:MaxQueuedPasswordChecks", "-1", "Broker:Limits:MaxQueuedPasswordChecks must be between 0 and 1000000")]
    [InlineData("Broker:Limits:LoginFailureDelay", "00:02:00", "Broker:Limits:LoginFailureDelay (milliseconds) must be between 0 and 60000")]
    [InlineData("Broker:Limits:LoginFailureDelay", "slow", "Broker:Limits:LoginFailureDelay")]
    [InlineData("Broker:Limits:LoginMaxDelay", "01:00:00", "Broker:Limits:LoginMaxDelay (milliseconds) must be between 0 and 300000")]
    [InlineData("Broker:Limits:LoginMaxDelay", "00:00:00.100", "Broker:Limits:LoginMaxDelay must not be below Broker:Limits:LoginFailureDelay")]
    [InlineData("Broker:Limits:LoginFailureReset", "00:00:00", "Broker:Limits:LoginFailureReset (seconds) must be between 1 and 86400")]
    [InlineData("Broker:Mqtt:ServerKeepAlive", "65536", "Broker:Mqtt:ServerKeepAlive must be between 0 and 65535")]
    [InlineData("Broker:Mqtt:ServerKeepAlive", "-1", "Broker:Mqtt:ServerKeepAlive must be between 0 and 65535")]
    [InlineData("Broker:Mqtt:MaxKeepAliveSeconds", "70000", "Broker:Mqtt:MaxKeepAliveSeconds (deprecated: use Broker:Mqtt:ServerKeepAlive) must be between 0 and 65535")]
    public void BadValue_FailsWithItsKey(string key, string value, string expected)
    {
        var settings = new Dictionary<string, string?>();
        TestBroker.AddDemoUsers(settings);
        settings[key] = value;

        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()));

        Assert.Contains(ex.Errors, e => e.Contains(expected, StringComparison.Ordinal));
    }

    [Theory]
    [InlineData("Broker:Cluster:RouteDepth", "0", "Broker:Cluster:RouteDepth must be between 1 and 8")]
    [InlineData("Broker:Cluster:NodeTtl", "00:00:01", "Broker:Cluster:NodeTtl must be between")]
    [InlineData("Broker:Cluster:ClaimWait", "later", "Broker:Cluster:ClaimWait")]
    [InlineData("Broker:Cluster:Redis", "127.0.0.1:6379,nosuchoption=1", "Broker:Cluster:Redis is not a valid Redis configuration string")]
    public void BadClusterValue_FailsWithItsKey(string key, string value, string expected)
    {
        var settings = new Dictionary<string, string?> { ["Broker:Cluster:Redis"] = "127.0.0.1:6379", [key] = value };
        TestBroker.AddDemoUsers(settings);
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(settings).Build();

        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.LoadCluster(configuration));

        Assert.Contains(ex.Errors, e => e.Contains(expected, StringComparison.Ordinal));
    }

    [Fact]
    public void ServerKeepAlive_DeprecatedNameStillRead_ButNotAgainstTheContractKey()
    {
        // Contract §9 fixes Broker:Mqtt:ServerKeepAlive; the old Broker:Mqtt:MaxKeepAliveSeconds is read only when the
        // new key is off, and two different values are refused rather than one silently winning.
        var old = new Dictionary<string, string?> { ["Broker:Mqtt:MaxKeepAliveSeconds"] = "45" };
        var engine = BrokerConfiguration.Load(new ConfigurationBuilder().AddInMemoryCollection(old).Build()).Engine;
        Assert.Equal(45, engine.Mqtt.KeepAliveCap);

        var both = new Dictionary<string, string?> { ["Broker:Mqtt:ServerKeepAlive"] = "30", ["Broker:Mqtt:MaxKeepAliveSeconds"] = "45" };
        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Load(new ConfigurationBuilder().AddInMemoryCollection(both).Build()));
        Assert.Contains(ex.Errors, e => e.Contains("set only Broker:Mqtt:ServerKeepAlive", StringComparison.Ordinal));
    }

    [Fact]
    public void PlainPasswordInsteadOfHash_IsRefusedWithoutEchoingIt()
    {
        var settings = new Dictionary<string, string?>
        {
            ["Broker:Users:0:Name"] = "alice",
            ["Broker:Users:0:PasswordHash"] = "hunter2",
        };

        var ex = Assert.Throws<BrokerConfigurationException>(() => BrokerConfiguration.Load(new ConfigurationBuilder().AddInMemoryCollection(settings).Build()));

        var error = Assert.Single(ex.Errors);
        Assert.Contains("Broker:Users:0:PasswordHash", error);
        Assert.Contains("hash-password", error);
        Assert.DoesNotContain("hunter2", error);
    }

    [Fact]
    public void Defaults_AreTheContracts()
    {
        var (engine, ims, listener, _, sqlite) = BrokerConfiguration.Load(new ConfigurationBuilder().Build());

        Assert.Equal(1883, listener.Port);
        Assert.Equal(0, engine.Mqtt.ServerKeepAlive); // contract §9: server keep alive off
        Assert.Equal(0, engine.Mqtt.KeepAliveCap);
        Assert.Equal(1000, engine.MaxQueuedMessages);
        Assert.Equal("data", sqlite.DataPath);
        Assert.Equal(["IMS"], ims.ParentTopics);
        Assert.Equal(["GID_IMS"], ims.GroupIds);
        Assert.False(ims.AllowAnonymous);
        Assert.True(ims.Conventions.Enabled);
        Assert.Equal(TimeSpan.FromDays(3), ims.OfflineP2PTtl);
        Assert.Empty(ims.Users);
        Assert.NotEmpty(ims.Acl);

        // docs/reliability.md: limits a normal user never meets.
        Assert.Equal(50, engine.Limits.ConnectRatePerSource);
        Assert.Equal(200, engine.Limits.ConnectBurstPerSource);
        Assert.Equal(2, engine.Limits.MaxConcurrentPasswordChecks);
        Assert.Equal(100, engine.Limits.MaxQueuedPasswordChecks);
        Assert.Equal(TimeSpan.FromMilliseconds(500), engine.Limits.LoginFailureDelay);
        Assert.Equal(TimeSpan.FromSeconds(10), engine.Limits.LoginMaxDelay);
        Assert.Equal(TimeSpan.FromMinutes(10), engine.Limits.LoginFailureReset);
    }

    [Fact]
    public async Task Process_WithBadEnvironmentValue_ExitsNonZeroNamingTheKey()
    {
        var (exitCode, _, stderr) = await BrokerProcess.RunAsync(new Dictionary<string, string> { ["Broker__MaxQueuedMessages"] = "lots" });

        Assert.Equal(2, exitCode);
        Assert.Contains("Broker:MaxQueuedMessages", stderr);
    }

    [Fact]
    public async Task HashPassword_PrintsAHashTheBrokerAccepts()
    {
        var (exitCode, stdout, _) = await BrokerProcess.RunAsync(stdin: "s3cret!", args: "hash-password");

        Assert.Equal(0, exitCode);
        var hash = stdout.Trim();
        Assert.True(PasswordVerifier.IsHash(hash));
        Assert.DoesNotContain("s3cret!", hash);
        var verifier = new PasswordVerifier();
        Assert.True(verifier.Verify(new UserAccount("dave", hash, "user"), "s3cret!"u8));
        Assert.False(verifier.Verify(new UserAccount("dave", hash, "user"), "s3cret"u8));
    }
}
