namespace Broker.Admin;

public sealed record UserView(string Name, string Role);

public sealed record NewUser(string? Name, string? Password, string? Role);

public sealed record PasswordChange(string? Password);

public sealed record GroupView(string Id, IReadOnlyList<string> Members);

public sealed record GroupMembers(IReadOnlyList<string>? Members);

/// <summary>A session; <c>Node</c>: the cluster node that hosts it (null: on none, its node is gone).</summary>
public sealed record SessionView(string ClientId, string UserId, string Role, bool Connected, int Queued, int Inflight, uint ExpirySeconds, IReadOnlyList<string> Subscriptions, string? Node);

/// <summary>A system broadcast: <c>Topic</c> is below <c>{parent}/System/</c>.</summary>
public sealed record Broadcast(string? Topic, string? Payload, int Qos = 1, bool Retain = false);
