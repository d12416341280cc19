namespace Broker.IntegrationTests.Infrastructure;

/// <summary>Waits for state another process owns (Redis, a node's <c>/metrics</c>), which no event of ours announces.</summary>
public static class Poll
{
    /// <summary>Completes once <paramref name="condition"/> holds; fails the test with <paramref name="message"/> after <see cref="TestClient.Timeout"/>.</summary>
    public static async Task UntilAsync(Func<Task<bool>> condition, string message)
    {
        var deadline = DateTime.UtcNow + TestClient.Timeout;
        while (!await condition())
        {
            Assert.True(DateTime.UtcNow < deadline, message);
            await Task.Delay(20);
        }
    }
}
