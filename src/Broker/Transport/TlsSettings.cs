using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Broker.Configuration;

namespace Broker.Transport;

/// <summary>
/// TLS for MQTT (<c>Broker:Mqtt:TlsPort</c>, 8883) and HTTPS/WSS (<c>Broker:Http:TlsPort</c>, 8443), on
/// when <c>Broker:Mqtt:Certificate:Path</c> names a certificate: a PFX (with <c>:Password</c>), or a PEM
/// certificate with its key in the same file or in <c>:KeyPath</c>. Kestrel terminates TLS, so the
/// engine sees the same pipe as for plain TCP. A certificate that cannot be loaded stops the start.
/// </summary>
public sealed record TlsSettings(X509Certificate2 Certificate, int MqttPort, int HttpPort)
{
    public static TlsSettings? Load(IConfiguration configuration)
    {
        var path = configuration["Broker:Mqtt:Certificate:Path"];
        if (string.IsNullOrWhiteSpace(path))
        {
            return null;
        }

        var errors = new List<string>();
        var mqttPort = BrokerConfiguration.Port(configuration, "Broker:Mqtt:TlsPort", 8883, errors);
        var httpPort = BrokerConfiguration.Port(configuration, "Broker:Http:TlsPort", 8443, errors);
        X509Certificate2? certificate = null;
        try
        {
            certificate = Path.GetExtension(path).ToLowerInvariant() is ".pfx" or ".p12"
                ? X509CertificateLoader.LoadPkcs12FromFile(path, configuration["Broker:Mqtt:Certificate:Password"])
                : X509Certificate2.CreateFromPemFile(path, configuration["Broker:Mqtt:Certificate:KeyPath"]);
            if (!certificate.HasPrivateKey)
            {
                errors.Add($"Broker:Mqtt:Certificate:Path \"{path}\" has no private key (give it in the file or in Broker:Mqtt:Certificate:KeyPath).");
            }
        }
        catch (Exception ex) when (ex is CryptographicException or IOException or UnauthorizedAccessException or ArgumentException)
        {
            // The message names the file, never the password.
            errors.Add($"Broker:Mqtt:Certificate:Path \"{path}\" cannot be loaded: {ex.Message}");
        }

        if (errors.Count > 0)
        {
            certificate?.Dispose();
            throw new BrokerConfigurationException(errors);
        }

        return new TlsSettings(certificate!, mqttPort, httpPort);
    }
}
