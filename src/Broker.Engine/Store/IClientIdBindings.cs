namespace Broker.Engine.Store;

/// <summary>Which user a client id belongs to (IM: the first user that connected with it, contract §1); kept by the store.</summary>
public interface IClientIdBindings
{
    /// <summary>The user a client id belongs to, or null.</summary>
    string? GetClientOwner(string clientId);

    /// <summary>Binds a client id to a user unless it is bound already; returns the owner after the call.</summary>
    string BindClientOwner(string clientId, string userId);

    bool ReleaseClientOwner(string clientId);
}
