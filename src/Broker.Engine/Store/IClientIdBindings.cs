namespace Broker.Engine.Store;

/// <summary>
/// Which user a client id belongs to (IM: the first user that connected with it, contract §1); kept by the
/// store. Asynchronous because a shared store answers over the network (a CONNECT must not hold a thread).
/// </summary>
public interface IClientIdBindings
{
    /// <summary>The user a client id belongs to, or null.</summary>
    ValueTask<string?> GetClientOwnerAsync(string clientId);

    /// <summary>Binds a client id to a user unless it is bound already; returns the owner after the call.</summary>
    ValueTask<string> BindClientOwnerAsync(string clientId, string userId);

    ValueTask<bool> ReleaseClientOwnerAsync(string clientId);
}
