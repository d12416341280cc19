using System.Text;
using Broker.Engine;
using Broker.Engine.Policy;
using Broker.Engine.Store;
using Broker.Ims.Blocks;
using Broker.Ims.Groups;
using Broker.Ims.Identity;
using Broker.Ims.Options;
using MQTTnet.Protocol;

namespace Broker.Admin;

/// <summary>
/// <c>/api</c>: users, chat groups, sessions, client-id bindings and system broadcasts, for the
/// <c>admin</c> role. Changes take effect at once (the ACL reads the directories on every check)
/// and are kept in the store (recorded before they apply), so they survive a restart.
/// Each request is validated whole before anything changes; errors name the field.
/// </summary>
public static class AdminApi
{
    public static void MapAdminApi(this WebApplication app)
    {
        var api = app.MapGroup("/api").AddEndpointFilter<AdminAuthentication>().WithTags("admin");

        api.MapGet("/users", (IUserDirectory users) =>
            users.All.OrderBy(u => u.Name, StringComparer.Ordinal).Select(u => new UserView(u.Name, u.Role)));

        api.MapPost("/users", async (NewUser body, IUserDirectory users, IGroupDirectory groups, DirectoryPersistence persistence) =>
        {
            var errors = new Dictionary<string, string[]>();
            if (body.Name is null || !Identifiers.IsUserId(body.Name) || Identifiers.IsReserved(body.Name))
            {
                errors["name"] = ["1-64 letters, digits, _, - or . and not a reserved name (p2p, System)."];
            }
            else if (users.TryGet(body.Name, out _) || groups.Exists(body.Name))
            {
                errors["name"] = [$"\"{body.Name}\" is already a user or a group."];
            }

            CheckPassword(body.Password, errors);
            var role = body.Role ?? Roles.User;
            if (!Roles.IsKnown(role))
            {
                errors["role"] = ["user, service or admin."];
            }

            if (errors.Count > 0)
            {
                return Results.ValidationProblem(errors);
            }

            var account = new UserAccount(body.Name!, PasswordVerifier.Hash(body.Password!), role);
            await persistence.SaveUserAsync(account);
            users.Upsert(account);
            return Results.Created($"/api/users/{body.Name}", new UserView(body.Name!, role));
        });

        // A deleted user, or one whose password changed, is disconnected everywhere (as mosquitto's dynamic security does).
        api.MapPut("/users/{name}/password", async (string name, PasswordChange body, IUserDirectory users, DirectoryPersistence persistence, BrokerEngine engine) =>
        {
            if (!users.TryGet(name, out var account))
            {
                return Results.NotFound();
            }

            var errors = new Dictionary<string, string[]>();
            CheckPassword(body.Password, errors);
            if (errors.Count > 0)
            {
                return Results.ValidationProblem(errors);
            }

            var changed = account with { PasswordHash = PasswordVerifier.Hash(body.Password!) };
            await persistence.SaveUserAsync(changed);
            users.Upsert(changed);
            engine.DisconnectUser(name);
            return Results.NoContent();
        });

        api.MapDelete("/users/{name}", async (string name, IUserDirectory users, DirectoryPersistence persistence, BrokerEngine engine) =>
        {
            if (!users.Remove(name))
            {
                return Results.NotFound();
            }

            await persistence.DeleteUserAsync(name);
            engine.DisconnectUser(name);
            return Results.NoContent();
        });

        // Contract §12: an app server manages a user's block list. A well-formed user id without an account is
        // accepted, as over MQTT ($IMS/block/<user>): JWT users are not in the directory.
        api.MapGet("/users/{name}/blocks", (string name, BlockLists blocks) =>
            Identifiers.IsUserId(name) ? Results.Ok(blocks.Get(name)) : Results.NotFound());

        api.MapPut("/users/{name}/blocks/{blocked}", (string name, string blocked, BlockLists blocks, IGroupDirectory groups) =>
            ChangeBlockAsync(name, blocked, true, blocks, groups));

        api.MapDelete("/users/{name}/blocks/{blocked}", (string name, string blocked, BlockLists blocks, IGroupDirectory groups) =>
            ChangeBlockAsync(name, blocked, false, blocks, groups));

        api.MapGet("/groups", (IGroupDirectory groups) =>
            groups.All.OrderBy(g => g.Key, StringComparer.Ordinal).Select(g => new GroupView(g.Key, [.. g.Value.Order(StringComparer.Ordinal)])));

        api.MapPut("/groups/{id}", async (string id, GroupMembers body, IGroupDirectory groups, IUserDirectory users, DirectoryPersistence persistence) =>
        {
            var errors = new Dictionary<string, string[]>();
            if (!Identifiers.IsUserId(id) || Identifiers.IsReserved(id) || users.TryGet(id, out _))
            {
                errors["id"] = ["1-64 letters, digits, _, - or ., not a reserved name and not a user id."];
            }

            if (body.Members is null)
            {
                errors["members"] = ["a list of user ids is required (it may be empty)."];
            }
            else if (body.Members.FirstOrDefault(m => !Identifiers.IsUserId(m)) is { } bad)
            {
                errors["members"] = [$"\"{bad}\" is not a valid user id."];
            }

            if (errors.Count > 0)
            {
                return Results.ValidationProblem(errors);
            }

            var existed = groups.Exists(id);
            await persistence.SaveGroupAsync(id, body.Members!);
            groups.Set(id, body.Members!);
            var view = new GroupView(id, [.. body.Members!.Distinct().Order(StringComparer.Ordinal)]);
            return existed ? Results.Ok(view) : Results.Created($"/api/groups/{id}", view);
        });

        api.MapDelete("/groups/{id}", async (string id, IGroupDirectory groups, DirectoryPersistence persistence) =>
        {
            if (!groups.Remove(id))
            {
                return Results.NotFound();
            }

            await persistence.DeleteGroupAsync(id);
            return Results.NoContent();
        });

        // In a cluster: this node's sessions and the persistent sessions the cluster keeps elsewhere.
        api.MapGet("/sessions", async (BrokerEngine engine, CancellationToken cancellationToken) => engine.GetSessions()
            .Select(s => new SessionView(s.ClientId, s.Principal.UserId, s.Principal.Role, s.IsConnected, s.QueuedCount, s.InflightCount, s.ExpirySeconds,
                [.. s.GetSubscriptions().Select(x => x.Key)], engine.Cluster.NodeId))
            .Concat((await engine.Cluster.RemoteSessionsAsync(cancellationToken)).Select(r => new SessionView(r.Record.ClientId, r.Record.UserId, r.Record.Role,
                r.Connected, r.Queued, r.Inflight, r.Record.ExpirySeconds, [.. r.Record.Subscriptions.Select(x => x.Filter)], r.Node)))
            .OrderBy(s => s.ClientId, StringComparer.Ordinal));

        api.MapDelete("/sessions/{clientId}/connection", (string clientId, BrokerEngine engine) =>
            engine.Disconnect(clientId) ? Results.NoContent() : Results.NotFound());

        // Releasing a binding ends the client id's session too: the next owner must not inherit the old
        // owner's subscriptions and queued messages.
        api.MapDelete("/bindings/{clientId}", async (string clientId, IClientIdBindings store, BrokerEngine engine) =>
        {
            var released = await store.ReleaseClientOwnerAsync(clientId);
            var ended = engine.EndSession(clientId);
            return released || ended ? Results.NoContent() : Results.NotFound();
        });

        api.MapPost("/broadcast", async (Broadcast body, BrokerEngine engine, ImsOptions ims, HttpContext http) =>
        {
            var errors = new Dictionary<string, string[]>();
            if (body.Topic is null || !ims.ParentTopics.Any(p => body.Topic.StartsWith(p + "/System/", StringComparison.Ordinal)) || body.Topic.IndexOfAny(['+', '#']) >= 0)
            {
                errors["topic"] = [$"a topic below {string.Join(" or ", ims.ParentTopics.Select(p => p + "/System/"))}, without wildcards."];
            }

            if (body.Qos is < 0 or > 2)
            {
                errors["qos"] = ["0, 1 or 2."];
            }

            if (errors.Count > 0)
            {
                return Results.ValidationProblem(errors);
            }

            // Sent as the admin who asked, so receivers' stamps say who broadcast it.
            var user = http.Items[AdminUserKey] as string ?? "admin";
            await engine.PublishAsync(new ClientPrincipal("admin-api", user, Roles.Admin), body.Topic!, Encoding.UTF8.GetBytes(body.Payload ?? ""), (MqttQualityOfServiceLevel)body.Qos, body.Retain);
            return Results.Accepted();
        });
    }

    internal const string AdminUserKey = "ims.admin.user";

    /// <summary>Recorded in the store, then applied: 204 once durable (idempotent both ways).</summary>
    static async Task<IResult> ChangeBlockAsync(string name, string blocked, bool block, BlockLists blocks, IGroupDirectory groups)
    {
        if (!Identifiers.IsUserId(name) || Identifiers.IsReserved(name))
        {
            return Results.NotFound();
        }

        if (BlockLists.TargetProblem(name, blocked, groups) is { } problem)
        {
            return Results.ValidationProblem(new Dictionary<string, string[]> { ["blocked"] = [$"\"{blocked}\": {problem}."] });
        }

        await blocks.SetAsync(name, blocked, block);
        return Results.NoContent();
    }

    static void CheckPassword(string? password, Dictionary<string, string[]> errors)
    {
        if (string.IsNullOrEmpty(password) || password.Length < 8)
        {
            errors["password"] = ["at least 8 characters."];
        }
    }
}
