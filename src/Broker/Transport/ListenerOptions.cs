using System.Net;
using Microsoft.Extensions.Options;

namespace Broker.Transport;

/// <summary>
/// Where and how the host serves MQTT over plain TCP, from <c>Broker:Mqtt</c> (the same section as the
/// engine's protocol limits, Broker.Engine.Options.MqttProtocolOptions: one section for the user, two
/// classes because the engine never opens a socket).
/// </summary>
public sealed class ListenerOptions
{
    public const string SectionName = "Broker:Mqtt";

    /// <summary>MQTT over TCP (IANA port 1883).</summary>
    public int Port { get; set; } = 1883;

    /// <summary>Interface to bind; "*" for all, "127.0.0.1" for loopback only.</summary>
    public string Host { get; set; } = "*";

    /// <summary>The address <see cref="Host"/> names, for every listener: "*" is all IPv4 interfaces (Kestrel's IPAddress.Any).</summary>
    public IPAddress BindAddress() => Host == "*" ? IPAddress.Any : IPAddress.Parse(Host);

    /// <summary>
    /// Run each packet to completion on the socket thread that received it (read, route, write to the
    /// subscribers' sockets), as mosquitto's event loop does, instead of handing it through the thread
    /// pool at each step: Kestrel's UnsafePreferInlineScheduling plus inline socket completions. Work that
    /// may block (password hashing, JWT checks) is moved off that thread by the engine. Set false to go
    /// back to Kestrel's defaults.
    /// </summary>
    public bool InlineIo { get; set; } = true;

    /// <summary>
    /// What serves MQTT over plain TCP: "sockets" (default: the broker's own listener, the socket itself
    /// as the engine's pipe; 3.6 kB per idle connection at 19,000 against Kestrel's 6.7 kB) or "kestrel"
    /// (Kestrel's socket transport, which serves TLS and WebSocket in either case). docs/performance.md.
    /// </summary>
    public string Transport { get; set; } = "sockets";
}

/// <summary>Checks the listener's settings at start; each failure names its configuration key.</summary>
public sealed class ListenerOptionsValidator : IValidateOptions<ListenerOptions>
{
    public ValidateOptionsResult Validate(string? name, ListenerOptions o)
    {
        var errors = new List<string>();
        if (o.Port is < 0 or > 65535)
        {
            errors.Add($"Broker:Mqtt:Port must be between 0 and 65535 (was {o.Port}).");
        }

        if (o.Transport is not "kestrel" and not "sockets")
        {
            errors.Add($"Broker:Mqtt:Transport must be sockets or kestrel (was \"{o.Transport}\").");
        }

        if (o.Host != "*" && !IPAddress.TryParse(o.Host, out _))
        {
            errors.Add($"Broker:Mqtt:Host must be \"*\" or an IP address such as 127.0.0.1 (was \"{o.Host}\").");
        }

        return errors.Count == 0 ? ValidateOptionsResult.Success : ValidateOptionsResult.Fail(errors);
    }
}
