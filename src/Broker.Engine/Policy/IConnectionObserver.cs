namespace Broker.Engine.Policy;

/// <summary>
/// Optional seam, implemented by a policy that wants to follow who is connected (the engine looks for it
/// on the <see cref="IBrokerPolicy"/> it is given). Calls come from connection threads, never under an
/// engine lock; they must not block. A policy may publish from them through the
/// <see cref="IBrokerPublisher"/> it was handed at start.
/// </summary>
public interface IConnectionObserver
{
    /// <summary>After the store is restored, before the first connection is accepted.</summary>
    Task BrokerStartedAsync(IBrokerPublisher broker, CancellationToken cancellationToken);

    /// <summary>
    /// A connection took its client id's session (its CONNACK is queued). <paramref name="connection"/>
    /// names this connection, unique for the broker's run: the matching <see cref="ClientDisconnected"/>
    /// carries the same number, so a late close of an older connection of the same client id can be told apart.
    /// </summary>
    void ClientConnected(ClientPrincipal client, long connection);

    /// <summary>
    /// A connection that had a session ended (DISCONNECT, keep-alive timeout, lost socket, administrator,
    /// shutdown). <paramref name="takenOver"/>: another connection with the same client id replaced it
    /// and has connected or is connecting now [MQTT-3.1.4-3].
    /// </summary>
    void ClientDisconnected(ClientPrincipal client, long connection, bool takenOver);

    /// <summary>At shutdown, once connections were told to close, before the store goes away: what the policy still has to store, it stores now.</summary>
    Task BrokerStoppingAsync(CancellationToken cancellationToken);
}
