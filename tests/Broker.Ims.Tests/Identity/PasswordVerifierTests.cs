using Broker.Engine.Admission;
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

public sealed class PasswordVerifierGateTests
{
    static PasswordCheckGate Gate(int permits, int queue) => new(
        Microsoft.Extensions.Options.Options.Create(new Broker.Engine.Options.EngineOptions { Limits = { MaxConcurrentPasswordChecks = permits, MaxQueuedPasswordChecks = queue } }),
        new Broker.Engine.Diagnostics.BrokerCounters(),
        Microsoft.Extensions.Logging.Abstractions.NullLogger<PasswordCheckGate>.Instance);

    /// <summary>A gate of one place and one queue slot, its place held by the test; a verifier behind it and alice's account.</summary>
    static async Task<(PasswordCheckGate Gate, PasswordVerifier Verifier, UserAccount User, IDisposable Held)> HeldGateAsync()
    {
        var gate = Gate(permits: 1, queue: 1);
        var held = await gate.EnterAsync();
        Assert.True(held.IsAcquired);
        return (gate, new PasswordVerifier(gate), new UserAccount("alice", PasswordVerifier.Hash("s3cret"), "user"), held);
    }

    [Fact]
    public async Task ManyDevicesOfOneUser_AtOnce_ShareOneHash_NoneAnsweredBusy()
    {
        // One place at the gate, one in its queue, and the place held by the test: the first check queues. Before checks
        // of the same user and password were shared, the other nine found the queue full and were answered "busy".
        var (gate, verifier, user, held) = await HeldGateAsync();
        using var _ = gate;

        var checks = Enumerable.Range(0, 10).Select(_ => verifier.VerifyAsync(user, "s3cret"u8.ToArray(), CancellationToken.None).AsTask()).ToList();
        Assert.All(checks, c => Assert.False(c.IsCompleted)); // all wait for the one hash, none was refused
        held.Dispose();

        Assert.All(await Task.WhenAll(checks), r => Assert.Equal(PasswordCheck.Valid, r));
    }

    [Fact]
    public async Task ADifferentPassword_IsNotAnsweredByAnotherOnesCheck()
    {
        var (gate, verifier, user, held) = await HeldGateAsync();
        using var _ = gate;

        var right = verifier.VerifyAsync(user, "s3cret"u8.ToArray(), CancellationToken.None).AsTask();
        var wrong = verifier.VerifyAsync(user, "guess"u8.ToArray(), CancellationToken.None).AsTask();
        Assert.Equal(PasswordCheck.Busy, await wrong); // its own check, and the queue is taken by the right one
        held.Dispose();

        Assert.Equal(PasswordCheck.Valid, await right);
        Assert.Equal(PasswordCheck.Invalid, await verifier.VerifyAsync(user, "guess"u8.ToArray(), CancellationToken.None));
    }
}
