using System.Net;
using System.Security.Cryptography;
using System.Security.Cryptography.X509Certificates;
using Broker.Configuration;
using Broker.IntegrationTests.Infrastructure;
using Microsoft.Extensions.Configuration;
using MQTTnet;
using System.Net.WebSockets;
using MQTTnet.Formatter;
using MQTTnet.Packets;

namespace Broker.IntegrationTests.Operations;

/// <summary>Issue #7 item 1: MQTT over TLS (and WSS) with a configured certificate, PFX or PEM.</summary>
public sealed class TlsTests : IDisposable
{
    readonly DirectoryInfo _dir = Directory.CreateTempSubdirectory("ims-tls-");
    readonly X509Certificate2 _certificate;

    public TlsTests()
    {
        // A self-signed certificate for 127.0.0.1, as docs/operations.md shows with openssl.
        using var rsa = RSA.Create(2048);
        var request = new CertificateRequest("CN=127.0.0.1", rsa, HashAlgorithmName.SHA256, RSASignaturePadding.Pkcs1);
        var names = new SubjectAlternativeNameBuilder();
        names.AddIpAddress(IPAddress.Loopback);
        names.AddDnsName("localhost");
        request.CertificateExtensions.Add(names.Build());
        request.CertificateExtensions.Add(new X509BasicConstraintsExtension(certificateAuthority: true, false, 0, critical: true));
        request.CertificateExtensions.Add(new X509KeyUsageExtension(X509KeyUsageFlags.DigitalSignature | X509KeyUsageFlags.KeyEncipherment | X509KeyUsageFlags.KeyCertSign, critical: false));
        request.CertificateExtensions.Add(new X509EnhancedKeyUsageExtension([new Oid("1.3.6.1.5.5.7.3.1")], critical: false));
        _certificate = request.CreateSelfSigned(DateTimeOffset.UtcNow.AddDays(-1), DateTimeOffset.UtcNow.AddDays(30));
        File.WriteAllBytes(PfxPath, _certificate.Export(X509ContentType.Pfx, "pfx-password"));
        File.WriteAllText(PemPath, _certificate.ExportCertificatePem());
        File.WriteAllText(KeyPath, rsa.ExportPkcs8PrivateKeyPem());
    }

    string PfxPath => Path.Combine(_dir.FullName, "broker.pfx");

    string PemPath => Path.Combine(_dir.FullName, "broker.crt");

    string KeyPath => Path.Combine(_dir.FullName, "broker.key");

    public void Dispose()
    {
        _certificate.Dispose();
        _dir.Delete(recursive: true);
    }

    [Theory]
    [InlineData(MqttProtocolVersion.V311, true)]
    [InlineData(MqttProtocolVersion.V500, false)]
    public async Task MqttOverTls_WorksWithAPfxOrPemCertificate(MqttProtocolVersion version, bool pfx)
    {
        await using var broker = await StartAsync(pfx);
        Assert.NotEqual(0, broker.MqttTlsPort);
        await using var bob = await ConnectTlsAsync(broker, "GID_IMS@@@bob-phone", "bob", version);
        await bob.SubscribeOkAsync("IMS/bob/Inbox/#");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice"); // plain TCP side

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "over tls");

        await bob.ExpectOnlyAsync("IMS/bob/Inbox/Msg/alice", "over tls");
    }

    [Fact]
    public async Task MosquittoSub_WithCafile_ReceivesOverTls()
    {
        if (!Mosquitto.Require())
        {
            return;
        }

        await using var broker = await StartAsync(pfx: true);
        await using var sub = await Mosquitto.Subscriber.StartAsync(
            "-h", "127.0.0.1", "-p", broker.MqttTlsPort.ToString(), "--cafile", PemPath,
            "-i", "GID_IMS@@@bob-tls", "-u", "bob", "-P", "bob-pass", "-t", "IMS/bob/Inbox/#", "-q", "1", "-v");
        await using var alice = await TestClient.ConnectAsync(broker.MqttPort, "GID_IMS@@@alice-phone", "alice");

        await alice.PublishAsync("IMS/bob/Inbox/Msg/alice", "secret");

        Assert.Equal("IMS/bob/Inbox/Msg/alice secret", await sub.NextMessageAsync());
    }

    [Fact]
    public async Task SecureWebSocket_SpeaksMqtt()
    {
        await using var broker = await StartAsync(pfx: true);
        var thumbprint = _certificate.Thumbprint;
        using var ws = new ClientWebSocket();
        ws.Options.AddSubProtocol("mqtt");
        ws.Options.RemoteCertificateValidationCallback = (_, certificate, _, _) => certificate?.GetCertHashString() == thumbprint;

        await ws.ConnectAsync(new Uri($"wss://127.0.0.1:{broker.HttpTlsPort}/mqtt"), CancellationToken.None);
        var formatter = new MqttPacketFormatterAdapter(MqttProtocolVersion.V311, new MqttBufferWriter(1024, 4096));
        var connect = formatter.Encode(new MqttConnectPacket { ClientId = "GID_IMS@@@bob-web", Username = "bob", Password = "bob-pass"u8.ToArray(), CleanSession = true, KeepAlivePeriod = 60 });
        await ws.SendAsync(connect.Join(), WebSocketMessageType.Binary, endOfMessage: true, CancellationToken.None);
        var buffer = new byte[64];
        var received = await ws.ReceiveAsync(buffer, new CancellationTokenSource(TestClient.Timeout).Token);

        Assert.Equal(("mqtt", WebSocketMessageType.Binary), (ws.SubProtocol, received.MessageType));
        Assert.Equal([0x20, 0x02, 0x00, 0x00], buffer[..received.Count]); // CONNACK, accepted [MQTT-3.2.2]
    }

    [Fact]
    public void UnreadableCertificate_StopsTheStartNamingTheKey()
    {
        var configuration = new ConfigurationBuilder().AddInMemoryCollection(new Dictionary<string, string?>
        {
            ["Broker:Mqtt:Certificate:Path"] = PfxPath,
            ["Broker:Mqtt:Certificate:Password"] = "wrong-password",
        }).Build();

        var ex = Assert.Throws<BrokerConfigurationException>(() => Broker.Transport.TlsSettings.Load(configuration));

        var error = Assert.Single(ex.Errors);
        Assert.StartsWith("Broker:Mqtt:Certificate:Path", error);
        Assert.DoesNotContain("wrong-password", error);
    }

    Task<TestBroker> StartAsync(bool pfx) => TestBroker.StartImsAsync(s =>
    {
        s["Broker:Mqtt:TlsPort"] = "0";
        s["Broker:Http:TlsPort"] = "0";
        if (pfx)
        {
            s["Broker:Mqtt:Certificate:Path"] = PfxPath;
            s["Broker:Mqtt:Certificate:Password"] = "pfx-password";
        }
        else
        {
            s["Broker:Mqtt:Certificate:Path"] = PemPath;
            s["Broker:Mqtt:Certificate:KeyPath"] = KeyPath;
        }
    });

    Task<TestClient> ConnectTlsAsync(TestBroker broker, string clientId, string user, MqttProtocolVersion version)
    {
        var thumbprint = _certificate.Thumbprint;
        return TestClient.ConnectAsync(broker.MqttTlsPort, clientId, user, version, configure: o =>
            o.WithTlsOptions(t => t.UseTls().WithCertificateValidationHandler(e => e.Certificate.GetCertHashString() == thumbprint)));
    }
}
