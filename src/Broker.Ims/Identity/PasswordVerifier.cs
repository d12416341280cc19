using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Broker.Engine.Admission;
using Microsoft.AspNetCore.Identity;

namespace Broker.Ims.Identity;

/// <summary>
/// Passwords at rest are ASP.NET Core Identity hashes (PBKDF2-HMAC-SHA512, 100,000 iterations,
/// random salt): slow on purpose. A client that reconnects often would pay that on every CONNECT,
/// so a successful check is remembered as an HMAC of the password under a key that lives only in
/// this process, tied to the stored hash (a password change forgets it). Failures are never cached.
/// The hash of a login (MQTT CONNECT, the admin API) runs under the engine's <see cref="PasswordCheckGate"/>; a remembered password never does.
/// </summary>
public sealed class PasswordVerifier(PasswordCheckGate? gate = null)
{
    static readonly PasswordHasher<string> Hasher = new();
    readonly byte[] _cacheKey = RandomNumberGenerator.GetBytes(32);
    readonly ConcurrentDictionary<string, (string Hash, byte[] Mac)> _verified = new(StringComparer.Ordinal);
    readonly ConcurrentDictionary<(string User, string Hash, string Mac), Task<PasswordCheck>> _checking = new();

    public static string Hash(string password) => Hasher.HashPassword("", password);

    /// <summary>Whether a configured value looks like a hash this verifier can check (format marker 0x01 = v3).</summary>
    public static bool IsHash(string value)
    {
        Span<byte> bytes = stackalloc byte[value.Length];
        return Convert.TryFromBase64String(value, bytes, out var written) && written > 13 && bytes[0] == 0x01;
    }

    /// <summary>Checks at once, without the gate (tests).</summary>
    public bool Verify(UserAccount user, ReadOnlySpan<byte> password)
    {
        var mac = HMACSHA256.HashData(_cacheKey, password);
        return IsRemembered(user, mac) || CheckHash(user, password, mac);
    }

    /// <summary>
    /// A login's check (MQTT CONNECT, the admin API): a remembered password answers at once; a hash waits for a place at the
    /// <see cref="PasswordCheckGate"/> and is <see cref="PasswordCheck.Busy"/> when there is none.
    /// </summary>
    public async ValueTask<PasswordCheck> VerifyAsync(UserAccount user, ReadOnlyMemory<byte> password, CancellationToken cancellationToken)
    {
        var mac = HMACSHA256.HashData(_cacheKey, password.Span);
        if (IsRemembered(user, mac))
        {
            return PasswordCheck.Valid;
        }

        if (gate is null)
        {
            return CheckHash(user, password.Span, mac) ? PasswordCheck.Valid : PasswordCheck.Invalid;
        }

        // One hash per user and password at a time: the other devices of a user that connect meanwhile (a reconnect
        // storm after a restart, a network change) wait for its answer instead of queueing hashes of their own.
        var key = (user.Name, user.PasswordHash, Convert.ToBase64String(mac));
        var mine = new TaskCompletionSource<PasswordCheck>(TaskCreationOptions.RunContinuationsAsynchronously);
        var running = _checking.GetOrAdd(key, mine.Task);
        if (running != mine.Task)
        {
            return await running.WaitAsync(cancellationToken).ConfigureAwait(false);
        }

        try
        {
            var result = await GatedCheckAsync(user, password, mac, cancellationToken).ConfigureAwait(false);
            mine.SetResult(result);
            return result;
        }
        catch (Exception ex)
        {
            mine.SetException(ex); // a cancelled wait of the first caller: the others see it too, and try again
            throw;
        }
        finally
        {
            _checking.TryRemove(KeyValuePair.Create(key, mine.Task));
        }
    }

    async ValueTask<PasswordCheck> GatedCheckAsync(UserAccount user, ReadOnlyMemory<byte> password, byte[] mac, CancellationToken cancellationToken)
    {
        using var lease = await gate!.EnterAsync(cancellationToken).ConfigureAwait(false);
        if (!lease.IsAcquired)
        {
            return PasswordCheck.Busy;
        }

        // Another connection of the same user may have been checked while this one waited.
        return IsRemembered(user, mac) || CheckHash(user, password.Span, mac) ? PasswordCheck.Valid : PasswordCheck.Invalid;
    }

    bool IsRemembered(UserAccount user, byte[] mac) =>
        _verified.TryGetValue(user.Name, out var known) && known.Hash == user.PasswordHash && CryptographicOperations.FixedTimeEquals(known.Mac, mac);

    bool CheckHash(UserAccount user, ReadOnlySpan<byte> password, byte[] mac)
    {
        var ok = Hasher.VerifyHashedPassword("", user.PasswordHash, Encoding.UTF8.GetString(password)) != PasswordVerificationResult.Failed;
        if (ok)
        {
            _verified[user.Name] = (user.PasswordHash, mac);
        }

        return ok;
    }
}

/// <summary>What a login's password check found.</summary>
public enum PasswordCheck
{
    Valid,
    Invalid,

    /// <summary>Not checked: too many checks at once (<c>Broker:Limits:MaxConcurrentPasswordChecks</c>).</summary>
    Busy,
}
