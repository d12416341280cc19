using System.Globalization;
using MQTTnet.Protocol;

namespace Broker.Bench;

/// <summary>Command line, parsed by hand: <c>&lt;scenario&gt; --key value ... [--flag]</c>.</summary>
internal sealed class BenchOptions
{
    public string Scenario { get; private set; } = "";
    public string Host { get; private set; } = "127.0.0.1";
    /// <summary>Local address to connect from (another loopback address is another source to the broker's limits); empty: the OS picks.</summary>
    public string From { get; private set; } = "";
    public int Port { get; private set; } = 1883;
    /// <summary>MQTT port of the receivers (subscribers, p2p receivers, parked sessions); 0: <see cref="Port"/>. Another cluster node than the publishers'.</summary>
    public int SubPort { get; private set; }
    public MqttQualityOfServiceLevel Qos { get; private set; } = MqttQualityOfServiceLevel.AtMostOnce;
    public int Clients { get; private set; } = 10;
    /// <summary>Total publish rate in msgs/s (connect: connections/s); 0 = saturation.</summary>
    public double Rate { get; private set; }
    public double Duration { get; private set; } = 10;
    public double Warmup { get; private set; } = 2;
    public int Payload { get; private set; } = 64;
    public string UserPrefix { get; private set; } = "bench";
    public int Users { get; private set; } = 10;
    public string Password { get; private set; } = "bench-pass";
    public string ClientIdPrefix { get; private set; } = "GID_IMS@@@bench-";
    public string ServiceUser { get; private set; } = "";
    public string Group { get; private set; } = "benchgrp";
    public string Parent { get; private set; } = "IMS";
    public bool Mosquitto { get; private set; }
    public bool V5 { get; private set; }
    public bool CleanSession { get; private set; }
    public int Window { get; private set; } = 64;
    /// <summary>Processes whose CPU and RSS are summed (<c>--broker-pid 12,34,56</c>: a cluster's nodes and its Redis).</summary>
    public IReadOnlyList<int> BrokerPids { get; private set; } = [];
    /// <summary>MQTT 5 session expiry of persistent sessions, seconds.</summary>
    public uint SessionExpiry { get; private set; } = 600;
    /// <summary>fill: how many QoS 1 messages to queue for the parked sessions.</summary>
    public int Messages { get; private set; } = 10_000;
    public string Label { get; private set; } = "";

    public const string Usage = """
        usage: Broker.Bench <fanin|p2p|group|connect|guess|park|fill> [options]
          --host H               broker address (default 127.0.0.1; loopback only)
          --port P               MQTT port (default 1883)
          --sub-port P           MQTT port of the receivers (subscribers, p2p receivers, parked sessions):
                                 another cluster node than the publishers' (default: --port)
          --from A               connect from this local loopback address, e.g. 127.0.0.2: another source
                                 address to the broker's per-address limits (default: the OS picks)
          --qos 0|1|2            QoS of publishes and subscriptions (default 0)
          --clients N            fanin: publishers; p2p: pairs; group: members; connect: connections;
                                 guess: connections, each CONNECTing again and again with --password,
                                 which should be wrong (a password-guessing attack, docs/reliability.md);
                                 park, fill: persistent sessions (default 10)
          --rate R               total msgs/s (connect: conns/s); omitted or 0 = saturation
          --duration S           measured seconds (default 10)
          --warmup S             seconds before measuring (default 2)
          --payload B            payload bytes, at least 24 (default 64)
          --user-prefix U        users are U0..U(k-1) (default bench); the subscriber of fanin is U-svc
          --users K              how many users the clients cycle through (default 10)
          --password PW          password of every bench user (default bench-pass)
          --client-id-prefix C   client id prefix (default GID_IMS@@@bench-)
          --service-user S       fanin subscriber's user (default <user-prefix>-svc, role service)
          --group G              group id for the group scenario (default benchgrp)
          --mosquitto            the broker is a plain MQTT broker: p2p receivers subscribe to their topic
          --v5                   MQTT 5 (default 3.1.1)
          --clean                receivers/subscribers use clean sessions (default: persistent, so the store is exercised)
          --window W             unacknowledged QoS 1/2 publishes per publisher (default 64)
          --broker-pid PID[,PID] read the broker's CPU and RSS from /proc/PID; several: their sums
          --session-expiry S     MQTT 5 session expiry of persistent sessions (default 600)
          --messages M           fill: QoS 1 messages to queue, round robin over the parked sessions (default 10000)
        park: --clients persistent sessions (client ids <prefix>park0000...), each subscribed at QoS 1 to its own
              topic (--mosquitto, i.e. plain mode: <parent>/<client id>/Inbox/#; IM mode: its user's inbox), then
              disconnected, so they stay parked. fill: --messages QoS 1 publishes of --payload bytes to them
              (--mosquitto: <parent>/<client id>/Inbox/m), all acknowledged; nobody reads them.
          --label L              free text copied into the JSON line
        """;

    public static BenchOptions Parse(string[] args)
    {
        if (args.Length > 0 && args[0] is "--help" or "-h")
        {
            throw new HelpRequestedException();
        }

        if (args.Length == 0 || args[0].StartsWith('-'))
        {
            throw new ArgumentException("missing scenario");
        }

        var o = new BenchOptions { Scenario = args[0] };
        if (o.Scenario is not ("fanin" or "p2p" or "group" or "connect" or "guess" or "park" or "fill"))
        {
            throw new ArgumentException($"unknown scenario '{o.Scenario}'");
        }

        for (var i = 1; i < args.Length; i++)
        {
            var key = args[i];
            string Value() => i + 1 < args.Length ? args[++i] : throw new ArgumentException($"{key} needs a value");
            int Int() => int.Parse(Value(), CultureInfo.InvariantCulture);
            double Dbl() => double.Parse(Value(), CultureInfo.InvariantCulture);
            switch (key)
            {
                case "--host": o.Host = Value(); break;
                case "--port": o.Port = Int(); break;
                case "--sub-port": o.SubPort = Int(); break;
                case "--from": o.From = Value(); break;
                case "--qos":
                    var q = Int();
                    o.Qos = q is >= 0 and <= 2 ? (MqttQualityOfServiceLevel)q : throw new ArgumentException("--qos must be 0, 1 or 2");
                    break;
                case "--clients": o.Clients = Int(); break;
                case "--rate": o.Rate = Dbl(); break;
                case "--duration": o.Duration = Dbl(); break;
                case "--warmup": o.Warmup = Dbl(); break;
                case "--payload": o.Payload = Int(); break;
                case "--user-prefix": o.UserPrefix = Value(); break;
                case "--users": o.Users = Int(); break;
                case "--password": o.Password = Value(); break;
                case "--client-id-prefix": o.ClientIdPrefix = Value(); break;
                case "--service-user": o.ServiceUser = Value(); break;
                case "--group": o.Group = Value(); break;
                case "--parent": o.Parent = Value(); break;
                case "--mosquitto": o.Mosquitto = true; break;
                case "--v5": o.V5 = true; break;
                case "--clean": o.CleanSession = true; break;
                case "--window": o.Window = Int(); break;
                case "--broker-pid":
                    o.BrokerPids = Value().Split(',', StringSplitOptions.RemoveEmptyEntries).Select(p => int.Parse(p, CultureInfo.InvariantCulture)).ToArray();
                    break;
                case "--session-expiry": o.SessionExpiry = uint.Parse(Value(), CultureInfo.InvariantCulture); break;
                case "--messages": o.Messages = Int(); break;
                case "--label": o.Label = Value(); break;
                default: throw new ArgumentException($"unknown option {key}");
            }
        }

        if (o.SubPort == 0)
        {
            o.SubPort = o.Port;
        }

        if (o.ServiceUser.Length == 0)
        {
            o.ServiceUser = o.UserPrefix + "-svc";
        }

        if (o.Clients < 1 || o.Users < 1 || o.Window < 1 || o.Duration <= 0 || o.Warmup < 0 || o.Rate < 0)
        {
            throw new ArgumentException("--clients, --users, --window and --duration must be positive; --warmup and --rate not negative");
        }

        if (o.Duration + o.Warmup > 600)
        {
            throw new ArgumentException("a run is bounded: --warmup + --duration at most 600 s");
        }

        o.Payload = Math.Max(o.Payload, Stamp.Size);
        return o;
    }

    public string User(int i) => UserPrefix + (i % Users).ToString(CultureInfo.InvariantCulture);

    public string ClientId(string role, int i) => ClientIdPrefix + role + i.ToString("D4", CultureInfo.InvariantCulture);
}

/// <summary><c>--help</c>: print the usage and exit 0.</summary>
internal sealed class HelpRequestedException() : Exception("help");
