using Broker.Ims.Identity;

namespace Broker.Ims.Tests.Identity;

public sealed class PasswordVerifierTests
{
    [Fact]
    public void Hash_IsSaltedAndVerifies()
    {
        var first = PasswordVerifier.Hash("correct horse");
        var second = PasswordVerifier.Hash("correct horse");

        Assert.NotEqual(first, second); // a random salt per hash
        Assert.True(PasswordVerifier.IsHash(first));
        var verifier = new PasswordVerifier();
        Assert.True(verifier.Verify(new UserAccount("u", first, "user"), "correct horse"u8));
        Assert.False(verifier.Verify(new UserAccount("u", first, "user"), "wrong"u8));
    }

    [Fact]
    public void RememberedSuccess_IsForgottenWhenTheHashChanges()
    {
        var verifier = new PasswordVerifier();
        var before = new UserAccount("u", PasswordVerifier.Hash("old"), "user");
        Assert.True(verifier.Verify(before, "old"u8));

        var after = before with { PasswordHash = PasswordVerifier.Hash("new") };

        Assert.False(verifier.Verify(after, "old"u8));
        Assert.True(verifier.Verify(after, "new"u8));
    }

    [Theory]
    [InlineData("hunter2")]
    [InlineData("")]
    [InlineData("AAAA")]
    public void IsHash_RefusesPlainText(string value) => Assert.False(PasswordVerifier.IsHash(value));
}
