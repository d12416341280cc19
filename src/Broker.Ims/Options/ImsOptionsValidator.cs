using Broker.Ims.Acl;
using Broker.Ims.Identity;
using Microsoft.Extensions.Options;

namespace Broker.Ims.Options;

/// <summary>Checks the IM settings at start; every message names the configuration key at fault.</summary>
public sealed class ImsOptionsValidator : IValidateOptions<ImsOptions>
{
    public ValidateOptionsResult Validate(string? name, ImsOptions o)
    {
        var errors = new List<string>();
        for (var i = 0; i < o.ParentTopics.Count; i++)
        {
            var p = o.ParentTopics[i];
            if (string.IsNullOrEmpty(p) || p.IndexOfAny(['/', '+', '#', ' ', '$']) >= 0)
            {
                errors.Add($"Broker:ParentTopics:{i} \"{p}\" must be one non-empty topic level without '/', '+', '#', '$' or spaces.");
            }
        }

        for (var i = 0; i < o.GroupIds.Count; i++)
        {
            if (!Identifiers.IsGroupId(o.GroupIds[i]))
            {
                errors.Add($"Broker:GroupIds:{i} \"{o.GroupIds[i]}\" must start with GID_ or GID- followed by letters, digits, _ or -.");
            }
        }

        foreach (var (role, limits) in o.Limits.Roles)
        {
            var key = $"Broker:Limits:Roles:{role}";
            if (!Roles.IsKnown(role))
            {
                errors.Add($"{key}: \"{role}\" is not a role (user, service or admin).");
                continue;
            }

            if (limits.PublishRate is < 0 or > 1_000_000 || limits.PublishRate is double rate && !double.IsFinite(rate))
            {
                errors.Add($"{key}:PublishRate must be between 0 (no limit) and 1000000 publishes a second (was {limits.PublishRate}).");
            }

            if (limits.PublishBurst is < 1 or > 1_000_000)
            {
                errors.Add($"{key}:PublishBurst must be between 1 and 1000000 (was {limits.PublishBurst}).");
            }

            if (limits.PublishBytesRate is < 0 or > int.MaxValue)
            {
                errors.Add($"{key}:PublishBytesRate must be between 0 (no limit) and {int.MaxValue} bytes a second (was {limits.PublishBytesRate}).");
            }

            if (limits.MaxDevices is < 0)
            {
                errors.Add($"{key}:MaxDevices must be 0 (no limit) or more (was {limits.MaxDevices}).");
            }

            if (limits.MaxRetained is < 0)
            {
                errors.Add($"{key}:MaxRetained must be 0 (no limit) or more (was {limits.MaxRetained}).");
            }

            if (limits.MaxSubscriptions is < 0)
            {
                errors.Add($"{key}:MaxSubscriptions must be 0 (no limit) or more (was {limits.MaxSubscriptions}).");
            }

            if (limits.RateGraceSeconds is <= 0 or > 3600 || limits.RateGraceSeconds is double grace && !double.IsFinite(grace))
            {
                errors.Add($"{key}:RateGraceSeconds must be above 0 and at most 3600 (was {limits.RateGraceSeconds}).");
            }
        }

        var userNames = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < o.Users.Count; i++)
        {
            var u = o.Users[i];
            var key = $"Broker:Users:{i}";
            if (!Identifiers.IsUserId(u.Name))
            {
                errors.Add($"{key}:Name \"{u.Name}\" must be 1-64 letters, digits, _, - or .");
            }
            else if (Identifiers.IsReserved(u.Name))
            {
                errors.Add($"{key}:Name \"{u.Name}\" is reserved ({string.Join(", ", Identifiers.ReservedNames)}).");
            }
            else if (!userNames.Add(u.Name))
            {
                errors.Add($"{key}:Name \"{u.Name}\" is defined twice.");
            }

            if (!PasswordVerifier.IsHash(u.PasswordHash))
            {
                // Never echo the value: it may be a plain password pasted by mistake.
                errors.Add($"{key}:PasswordHash is not a password hash; make one with: dotnet run --project src/Broker -- hash-password");
            }

            if (!Roles.IsKnown(u.Role))
            {
                errors.Add($"{key}:Role \"{u.Role}\" must be user, service or admin.");
            }
        }

        var groupIds = new HashSet<string>(StringComparer.Ordinal);
        for (var i = 0; i < o.Groups.Count; i++)
        {
            var g = o.Groups[i];
            var key = $"Broker:Groups:{i}";
            if (!Identifiers.IsUserId(g.Id) || Identifiers.IsReserved(g.Id))
            {
                errors.Add($"{key}:Id \"{g.Id}\" must be 1-64 letters, digits, _, - or . and not a reserved name.");
            }
            else if (userNames.Contains(g.Id) || !groupIds.Add(g.Id))
            {
                errors.Add($"{key}:Id \"{g.Id}\" is already a user or group id (ids are unique across users and groups).");
            }

            for (var m = 0; m < g.Members.Count; m++)
            {
                if (!Identifiers.IsUserId(g.Members[m]))
                {
                    errors.Add($"{key}:Members:{m} \"{g.Members[m]}\" is not a valid user id.");
                }
            }
        }

        if (o.OfflineP2PTtl <= TimeSpan.Zero)
        {
            errors.Add($"Broker:OfflineP2PTtl must be positive (was {o.OfflineP2PTtl}).");
        }

        if (o.Presence.Enabled == true && !o.Conventions.Enabled)
        {
            errors.Add("Broker:Presence:Enabled is true but Broker:Conventions:Enabled is false: presence (P/<user>/Presence) is an IM convention; leave it unset or false in plain mode.");
        }

        ValidateJwt(o.Jwt, errors);
        for (var i = 0; i < o.Sys.Roles.Count; i++)
        {
            if (!Roles.IsKnown(o.Sys.Roles[i]))
            {
                errors.Add($"Broker:Sys:Roles:{i} \"{o.Sys.Roles[i]}\" must be user, service or admin.");
            }
        }

        try
        {
            AclRuleSet.Compile(o.Acl, new UserDirectory([]), new Groups.GroupDirectory([]), o.ParentTopics);
        }
        catch (AclConfigurationException ex)
        {
            errors.AddRange(ex.Errors);
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }

    /// <summary>Checked only when JWT is on; the signing key is never echoed.</summary>
    static void ValidateJwt(JwtOptions jwt, List<string> errors)
    {
        if (!jwt.Enabled)
        {
            return;
        }

        var hasKey = !string.IsNullOrEmpty(jwt.SigningKey);
        var hasPath = !string.IsNullOrEmpty(jwt.PublicKeyPath);
        if (hasKey == hasPath)
        {
            errors.Add("Broker:Jwt:SigningKey (HS256) or Broker:Jwt:PublicKeyPath (RS256) must be set, one of them, when Broker:Jwt:Enabled is true.");
        }
        else if (hasKey)
        {
            var bytes = System.Text.Encoding.UTF8.GetByteCount(jwt.SigningKey!);
            if (bytes < JwtOptions.MinSigningKeyBytes)
            {
                errors.Add($"Broker:Jwt:SigningKey must be at least {JwtOptions.MinSigningKeyBytes} bytes as UTF-8 (has {bytes}).");
            }
        }
        else if (JwtAuthenticator.TryLoadPublicKey(jwt.PublicKeyPath!, out _) is { } problem)
        {
            errors.Add($"Broker:Jwt:PublicKeyPath {problem}.");
        }

        if (jwt.Issuer is { Length: > 0 } issuer && string.IsNullOrWhiteSpace(issuer))
        {
            errors.Add("Broker:Jwt:Issuer must not be blank (leave it out to accept any issuer).");
        }

        if (jwt.Audience is { Length: > 0 } audience && string.IsNullOrWhiteSpace(audience))
        {
            errors.Add("Broker:Jwt:Audience must not be blank (leave it out to accept any audience).");
        }

        if (string.IsNullOrWhiteSpace(jwt.RoleClaim))
        {
            errors.Add("Broker:Jwt:RoleClaim must name a claim (default \"role\").");
        }

        if (jwt.ClockSkew < TimeSpan.Zero || jwt.ClockSkew > TimeSpan.FromHours(1))
        {
            errors.Add($"Broker:Jwt:ClockSkew must be between 00:00:00 and 01:00:00 (was {jwt.ClockSkew}).");
        }
    }
}
