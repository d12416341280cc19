using Broker.Ims.Identity;

namespace Broker.Ims.Tests.Identity;

public sealed class IdentifiersTests
{
    [Theory]
    [InlineData("GID_IMS@@@bob-phone", "GID_IMS", "bob-phone")]
    [InlineData("GID-a_1@@@x.y:z_1-2", "GID-a_1", "x.y:z_1-2")]
    public void ParseClientId_Valid(string clientId, string group, string device)
    {
        Assert.Null(Identifiers.ParseClientId(clientId, out var g, out var d));
        Assert.Equal((group, device), (g, d));
    }

    [Theory]
    [InlineData("")]
    [InlineData("bob-phone")]
    [InlineData("GID_IMS@@@")]
    [InlineData("@@@phone")]
    [InlineData("GID_@@@phone")]
    [InlineData("GID_IMS@@@a@@@b")]
    [InlineData("GID_IMS@@@a b")]
    [InlineData("GID_IMS@@@a/b")]
    [InlineData("GID_IMS@@@a+b")]
    [InlineData("GID_I#S@@@ab")]
    [InlineData("XID_IMS@@@ab")]
    public void ParseClientId_Invalid_SaysWhy(string clientId) =>
        Assert.NotNull(Identifiers.ParseClientId(clientId, out _, out _));

    [Fact]
    public void ParseClientId_LongerThan64_IsInvalid()
    {
        Assert.Null(Identifiers.ParseClientId("GID_IMS@@@" + new string('d', 54), out _, out _));
        Assert.Contains("65", Identifiers.ParseClientId("GID_IMS@@@" + new string('d', 55), out _, out _));
    }

    [Theory]
    [InlineData("alice", true)]
    [InlineData("a.b-c_1", true)]
    [InlineData("", false)]
    [InlineData("a/b", false)]
    [InlineData("a+b", false)]
    [InlineData("a#b", false)]
    [InlineData("a b", false)]
    [InlineData("a:b", false)]
    public void IsUserId(string userId, bool valid) => Assert.Equal(valid, Identifiers.IsUserId(userId));

    [Fact]
    public void IsUserId_AtMost64() =>
        Assert.Equal((true, false), (Identifiers.IsUserId(new string('u', 64)), Identifiers.IsUserId(new string('u', 65))));
}
