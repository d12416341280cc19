using System.Collections.Concurrent;
using System.Security.Cryptography;
using System.Text;
using Microsoft.AspNetCore.Identity;

namespace Broker.Ims.Identity;

/// <summary>
/// Passwords at rest are ASP.NET Core Identity hashes (PBKDF2-HMAC-SHA512, 100,000 iterations,
/// random salt): slow on purpose. A client that reconnects often would pay that on every CONNECT,
/// so a successful check is remembered as an HMAC of the password under a key that lives only in
/// this process, tied to the stored hash (a password change forgets it). Failures are never cached.
/// </summary>
public sealed class PasswordVerifier
{
    static readonly PasswordHasher<string> Hasher = new();
    readonly byte[] _cacheKey = RandomNumberGenerator.GetBytes(32);
    readonly ConcurrentDictionary<string, (string Hash, byte[] Mac)> _verified = new(StringComparer.Ordinal);

    public static string Hash(string password) => Hasher.HashPassword("", password);

    /// <summary>Whether a configured value looks like a hash this verifier can check (format marker 0x01 = v3).</summary>
    public static bool IsHash(string value)
    {
        Span<byte> bytes = stackalloc byte[value.Length];
        return Convert.TryFromBase64String(value, bytes, out var written) && written > 13 && bytes[0] == 0x01;
    }

    public bool Verify(UserAccount user, ReadOnlySpan<byte> password)
    {
        var mac = HMACSHA256.HashData(_cacheKey, password);
        if (_verified.TryGetValue(user.Name, out var known) && known.Hash == user.PasswordHash && CryptographicOperations.FixedTimeEquals(known.Mac, mac))
        {
            return true;
        }

        var ok = Hasher.VerifyHashedPassword("", user.PasswordHash, Encoding.UTF8.GetString(password)) != PasswordVerificationResult.Failed;
        if (ok)
        {
            _verified[user.Name] = (user.PasswordHash, mac);
        }

        return ok;
    }
}
